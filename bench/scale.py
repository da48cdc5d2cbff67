#!/usr/bin/env python3
"""Scale figures of ralph-supervise (issue 18, point 4): how each cost grows with n.

Run through `bench/run.sh --only=scale` (also part of the full run), which builds the
release binary and the `stamp` helper. Prints Markdown on stdout. Installs nothing;
strace, where installed, gives the registry's write counts.

    scale.py BINARY STAMP [--quick]

1. n concurrent worktree loops in one git repository (the primary held by a supervised
   loop, so every launch becomes a worktree loop): the time from launching all until
   all their children run (each child writes a ready file), `list --json` with the n
   live, and what one more launch does to `.ralph/loops.json` with n live (strace).
2. n waiters (`run --on-conflict wait`) on one workspace: the time from the holder's
   child exiting to the last waiter's child starting, and the context switches it took.
3. `status` with n other flocks in `/proc/locks` (a helper holds them on n temp files),
   the lock held by a supervised loop (the file names it) and by flock(1) (it names
   nobody).
"""

import fcntl
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.abspath(sys.argv[1])
STAMP = os.path.abspath(sys.argv[2])
QUICK = "--quick" in sys.argv
DEVNULL = subprocess.DEVNULL
STRACE = shutil.which("strace")
FLOCK = shutil.which("flock")

LOOPS = [5, 10, 20] if QUICK else [25, 50, 100, 200]
WAITERS = [2, 4, 8] if QUICK else [4, 8, 16, 32]
LOCKS = [0, 100, 1000] if QUICK else [0, 1000, 5000, 10000]
LIST_RUNS = 3 if QUICK else 9
CHAIN_RUNS = 2 if QUICK else 5
STATUS_RUNS = 5 if QUICK else 21
GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def wait_for(what, ok, deadline_s=300, procs=()):
    """Polls `ok()` until true (1 ms apart); fails when a process in `procs` has exited
    or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not ok():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: pid {p.pid} exited with {p.returncode} first")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {deadline_s} s")
        time.sleep(0.001)


def stop_all(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def make_repo():
    repo = tempfile.mkdtemp(prefix="rs-scale-repo-")
    git = lambda *a: subprocess.run(["git", "-C", repo, *a], check=True, env=GIT_ENV,
                                    stdout=DEVNULL, stderr=DEVNULL)
    git("init", "-q", "-b", "main")
    for i in range(20):
        with open(os.path.join(repo, f"f{i}.txt"), "w") as f:
            f.write(f"{i}\n")
    git("add", "-A")
    git("commit", "-q", "-m", "20 files")
    return repo


def loop_argv(repo, ready):
    """A loop whose child marks `ready` and then sleeps until stopped."""
    return [BIN, "-q", "-C", repo, "run", "--on-conflict", "worktree", "--",
            "sh", "-c", ': > "$0"; exec sleep 3600', ready]


def strace_launch(repo, ready_dir):
    """One more worktree launch under strace, stopped once its child runs: how it edits
    `.ralph/loops.json` (exclusive flocks = edits, shared = reads, bytes written) and
    how many system calls the supervisor itself made (git's not counted)."""
    if not STRACE:
        return None
    out = os.path.join(ready_dir, "strace.out")
    ready = os.path.join(ready_dir, "traced")
    p = subprocess.Popen([STRACE, "-f", "-y", "-qq", "-o", out, *loop_argv(repo, ready)],
                         stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, env=GIT_ENV)
    wait_for("traced launch", lambda: os.path.exists(ready), procs=[p])
    launched = parse_strace(out)
    # The supervisor (strace's first tracee), not strace, gets the stop signal.
    with open(out) as f:
        supervisor = int(f.readline().split()[0])
    os.kill(supervisor, signal.SIGTERM)
    p.wait(timeout=60)
    whole = parse_strace(out)
    return launched, whole


def strace_calls(path):
    """(pid, name, the rest of the line) of each system call in strace -f's output."""
    with open(path) as f:
        for line in f:
            m = re.match(r"(\d+)\s+(\w+)\((.*)", line)
            if m:
                yield m.groups()


def parse_strace(path):
    edits = reads = written = 0
    calls = 0
    first_pid = None
    for pid, name, rest in strace_calls(path):
        if first_pid is None:
            first_pid = pid
        if pid == first_pid:
            calls += 1
        if "loops.json>" not in rest:
            continue
        if name == "flock" and "LOCK_EX" in rest:
            edits += 1
        elif name == "flock" and "LOCK_SH" in rest:
            reads += 1
        elif name in ("pwrite64", "write"):
            r = re.search(r"= (\d+)\s*$", rest)
            written += int(r.group(1)) if r else 0
    return {"edits": edits, "reads": reads, "bytes": written, "calls": calls}


def worktree_loops(n):
    repo = make_repo()
    ready_dir = tempfile.mkdtemp(prefix="rs-scale-ready-")
    procs = []
    try:
        primary = subprocess.Popen(loop_argv(repo, os.path.join(ready_dir, "primary")),
                                   stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, env=GIT_ENV)
        procs.append(primary)
        wait_for("primary", lambda: os.path.exists(os.path.join(ready_dir, "primary")), procs=procs)
        ready = lambda: sum(1 for e in os.listdir(ready_dir) if e.startswith("r")) >= n
        t = time.perf_counter()
        for i in range(n):
            procs.append(subprocess.Popen(loop_argv(repo, os.path.join(ready_dir, f"r{i}")),
                                          stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL,
                                          env=GIT_ENV))
        spawned = time.perf_counter() - t
        wait_for(f"{n} worktree loops", ready, procs=procs)
        all_run = time.perf_counter() - t
        lists = []
        for _ in range(LIST_RUNS):
            t = time.perf_counter()
            out = subprocess.run([BIN, "-q", "-C", repo, "list", "--json"], check=True,
                                 stdin=DEVNULL, stdout=subprocess.PIPE, text=True).stdout
            lists.append((time.perf_counter() - t) * 1000)
        running = out.count('"running": true')
        if running != n + 1:
            raise RuntimeError(f"list --json showed {running} running loops, not {n + 1}")
        traced = strace_launch(repo, ready_dir)
        with open(os.path.join(repo, ".ralph", "loops.json"), "rb") as f:
            registry_bytes = len(f.read().rstrip())
        return {"n": n, "all_run_s": all_run, "spawn_s": spawned, "list_ms": median(lists),
                "list_p95": max(lists), "registry_bytes": registry_bytes, "traced": traced}
    finally:
        stop_all(procs)
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(ready_dir, ignore_errors=True)


def blocked_waiters(lock):
    """How many processes `/proc/locks` lists as blocked on `lock` (the kernel's word)."""
    st = os.stat(lock)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return sum(1 for l in f if " -> FLOCK " in l and l.split()[-3] == ident)


def children_switches():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_nvcsw + r.ru_nivcsw


def waiter_chain(n):
    ws = tempfile.mkdtemp(prefix="rs-scale-ws-")
    os.makedirs(os.path.join(ws, ".ralph"))
    lock = os.path.join(ws, ".ralph", "loop.lock")
    procs = []
    try:
        # A workspace a loop has run in, as bench.py's hand-off: in a fresh one the
        # holder's release first creates .ralph/supervise/, on the first hand-off's path.
        subprocess.run([BIN, "-q", "-C", ws, "run", "--", "true"], check=True, stdout=DEVNULL)
        before = children_switches()
        holder = subprocess.Popen([BIN, "-q", "-C", ws, "run", "--", STAMP, "--wait-stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(holder)
        assert holder.stdout.readline().strip() == "ready"
        waiters = [subprocess.Popen([BIN, "-q", "-C", ws, "run", "--on-conflict", "wait", "--", STAMP],
                                    stdin=DEVNULL, stdout=subprocess.PIPE, text=True)
                   for _ in range(n)]
        procs += waiters
        wait_for(f"{n} waiters blocked in flock", lambda: blocked_waiters(lock) >= n, procs=procs)
        holder.stdin.close()
        exited = int(holder.stdout.readline())
        starts = sorted(int(w.stdout.readline()) for w in waiters)
        for p in procs:
            p.wait()
        switches = children_switches() - before
        gaps = [b - a for a, b in zip([exited] + starts[:-1], starts)]
        return (starts[-1] - exited) / 1e6, median(gaps) / 1e6, switches
    finally:
        stop_all(procs)
        shutil.rmtree(ws, ignore_errors=True)


LOCK_HELPER = r"""
import fcntl, os, resource, sys
n, d = int(sys.argv[1]), sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if hard != resource.RLIM_INFINITY and hard < n + 64:
    n = hard - 64  # as many as the hard limit allows: the table's line count shows it
if soft < n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, hard))
fds = []
for i in range(n):
    fd = os.open(os.path.join(d, str(i)), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fds.append(fd)
print("ready", flush=True)
sys.stdin.read()
"""


def status_with_locks(k):
    """`status` medians with `k` other flocks in /proc/locks: (file names the holder,
    file names nobody), in ms; also the /proc/locks size and what status read of it."""
    ws = tempfile.mkdtemp(prefix="rs-scale-ws-")
    files = tempfile.mkdtemp(prefix="rs-scale-locks-")
    os.makedirs(os.path.join(ws, ".ralph"))
    lock = os.path.join(ws, ".ralph", "loop.lock")
    open(lock, "a").close()
    procs = []
    try:
        helper = subprocess.Popen([sys.executable, "-c", LOCK_HELPER, str(k), files],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(helper)
        assert helper.stdout.readline().strip() == "ready"
        with open("/proc/locks") as f:
            entries = sum(1 for _ in f)
        result = {"k": k, "entries": entries}
        status = [BIN, "-q", "-C", ws, "status"]
        for case in ("named", "nobody"):
            if case == "named":
                holder = subprocess.Popen([BIN, "-q", "-C", ws, "run", "--", STAMP, "--wait-stdin"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            else:
                holder = subprocess.Popen([FLOCK, lock, STAMP, "--wait-stdin"],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert holder.stdout.readline().strip() == "ready"
            times = []
            for _ in range(STATUS_RUNS):
                t = time.perf_counter()
                rc = subprocess.run(status, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL).returncode
                times.append((time.perf_counter() - t) * 1000)
                if rc != 0:
                    raise RuntimeError(f"status exited {rc} with the lock held ({case})")
            result[case] = median(times)
            if STRACE:
                result[case + "_calls"] = strace_count(status)
            holder.stdin.close()
            holder.wait()
        return result
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait()
        shutil.rmtree(ws, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)


def strace_count(argv):
    """System calls of one run of `argv`: total, reads of /proc/locks, and stats of
    other processes' descriptors (the /proc/*/fd scan)."""
    out = tempfile.mktemp(prefix="rs-scale-strace-")
    subprocess.run([STRACE, "-f", "-qq", "-o", out, *argv], stdin=DEVNULL, stdout=DEVNULL,
                   stderr=DEVNULL)
    total = locks = fd_stats = 0
    locks_fd = None
    for _, name, rest in strace_calls(out):
        total += 1
        if name == "openat" and '"/proc/locks"' in rest:
            r = re.search(r"= (\d+)", rest)
            locks_fd = r.group(1) if r else None
        elif name == "read" and locks_fd is not None and rest.startswith(f"{locks_fd},"):
            locks += 1
        elif name == "close" and locks_fd is not None and rest.startswith(f"{locks_fd})"):
            locks_fd = None
        elif name in ("statx", "newfstatat", "stat") and re.search(r'"/proc/\d+/fd/\d+"', rest):
            fd_stats += 1
    os.unlink(out)
    return {"total": total, "locks_reads": locks, "fd_stats": fd_stats}


def growth(pairs):
    """Describes y(n) from the smallest to the largest n: the ratio of y against the
    ratio of n, and the exponent b of y ~ n^b fitted on the end points."""
    import math
    (n0, y0), (n1, y1) = pairs[0], pairs[-1]
    if y0 <= 0 or y1 <= 0:
        return "n/a"
    b = math.log(y1 / y0) / math.log(n1 / n0)
    return f"x{y1 / y0:.1f} for n x{n1 / n0:.0f} (~n^{b:.2f})"


def main():
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    print("\n## Scale (issue 18)\n")
    print(f"Machine: {machine}, {os.cpu_count()} cores; load average at start "
          f"{os.getloadavg()[0]:.2f}{' (quick)' if QUICK else ''}")

    rows = [worktree_loops(n) for n in LOOPS]
    print("\n### n concurrent worktree loops in one repository\n")
    print("| n | launch all -> all children run | per loop | `list --json`, n+1 live (median) | "
          "loops.json size | one more launch: registry edits / reads / bytes written | "
          "its supervisor's system calls | same, to its exit |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["traced"]
        edits = (f"{t[1]['edits']} / {t[1]['reads']} / {t[1]['bytes']:,}" if t else "no strace")
        calls = f"{t[0]['calls']:,}" if t else ""
        calls_all = f"{t[1]['calls']:,}" if t else ""
        print(f"| {r['n']} | {r['all_run_s'] * 1000:.0f} ms | {r['all_run_s'] * 1000 / r['n']:.1f} ms | "
              f"{r['list_ms']:.1f} ms | {r['registry_bytes']:,} B | {edits} | {calls} | {calls_all} |")
    print(f"\nGrowth, n {LOOPS[0]} -> {LOOPS[-1]}: all run {growth([(r['n'], r['all_run_s']) for r in rows])}; "
          f"`list --json` {growth([(r['n'], r['list_ms']) for r in rows])}"
          + (f"; bytes written per launch {growth([(r['n'], r['traced'][1]['bytes']) for r in rows])}"
             f"; supervisor system calls per launch {growth([(r['n'], r['traced'][0]['calls']) for r in rows])}"
             if STRACE else "") + ".")

    chains = []
    for n in WAITERS:
        runs = [waiter_chain(n) for _ in range(CHAIN_RUNS)]
        chains.append((n, median([r[0] for r in runs]), median([r[1] for r in runs]),
                       median([r[2] for r in runs])))
    print("\n### n waiters on one workspace: holder's child exits -> last waiter's child starts\n")
    print("| n | chain (median) | per hand-off | median gap between two children | "
          "context switches, whole run (all processes) | per waiter |")
    print("|---|---|---|---|---|---|")
    for n, chain, gap, sw in chains:
        print(f"| {n} | {chain:.2f} ms | {chain / n:.2f} ms | {gap:.2f} ms | {sw:.0f} | {sw / n:.1f} |")
    print(f"\nGrowth, n {WAITERS[0]} -> {WAITERS[-1]}: chain {growth([(c[0], c[1]) for c in chains])}; "
          f"context switches {growth([(c[0], c[3]) for c in chains])}.")

    res = [status_with_locks(k) for k in LOCKS]
    print("\n### `status` with k other flocks in /proc/locks\n")
    print("| k | /proc/locks lines | file names the holder (supervised loop) | names nobody (flock(1)) | "
          "system calls: named / nobody | /proc/locks reads | /proc/*/fd stats (nobody) |")
    print("|---|---|---|---|---|---|---|")
    for r in res:
        if STRACE:
            a, b = r["named_calls"], r["nobody_calls"]
            sc = f"{a['total']:,} / {b['total']:,} | {a['locks_reads']} / {b['locks_reads']} | {b['fd_stats']:,}"
        else:
            sc = "| |"
        print(f"| {r['k']:,} | {r['entries']:,} | {r['named']:.2f} ms | {r['nobody']:.2f} ms | {sc} |")
    big = [(r["entries"], r["named"]) for r in res if r["k"] > 0]
    nob = [(r["entries"], r["nobody"]) for r in res if r["k"] > 0]
    print(f"\nGrowth, k {LOCKS[1]:,} -> {LOCKS[-1]:,}: named {growth(big)}; nobody {growth(nob)}.")


if __name__ == "__main__":
    main()
