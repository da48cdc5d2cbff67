#!/usr/bin/env python3
"""Side-by-side benchmarks of ralph-supervise against flock(1) (and tini where installed).

Run through bench/run.sh, which builds the release binary and the `stamp` helper.
Prints a Markdown report on stdout. Installs nothing.

    bench.py BINARY STAMP [--quick] [--only=containment]
"""

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import wchan  # noqa: E402

BIN = os.path.abspath(sys.argv[1])
STAMP = os.path.abspath(sys.argv[2])
# Optional: the same binary built statically (bench/run.sh builds it).
STATIC = next((os.path.abspath(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--static=")), None)
QUICK = "--quick" in sys.argv
# `--only=containment`: just the containment figures (a cgroup needs root).
ONLY = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), None)
N_LAUNCH = 50 if QUICK else 300
N_HANDOFF = 10 if QUICK else 40
N_SIGNAL = 10 if QUICK else 40
TINI = shutil.which("tini")
FLOCK = shutil.which("flock")
DEVNULL = subprocess.DEVNULL
rows = []  # (section, subject, median_ms, p5, p95, n, ratio-note)


def stats(samples):
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=20) if len(samples) >= 20 else [samples[0], samples[-1]]
    return statistics.median(samples), q[0], q[-1]


def record(section, subject, samples, unit="ms", base=None):
    med, lo, hi = stats(samples)
    ratio = f"{med / base:.2f}x" if base else ""
    rows.append((section, subject, med, lo, hi, len(samples), unit, ratio))
    return med


def workspace():
    d = tempfile.mkdtemp(prefix="rs-bench-")
    os.makedirs(os.path.join(d, ".ralph"))
    open(os.path.join(d, ".ralph", "loop.lock"), "a").close()
    return d


def timed_runs(cmds, n, gap=0.0):
    """Runs each command n times, interleaved, returning wall times in ms; `gap`
    seconds of pause before each run (a launch on its own, not one of a rapid series)."""
    out = {k: [] for k in cmds}
    for _ in range(n):
        for k, argv in cmds.items():
            if gap:
                time.sleep(gap)
            t = time.perf_counter()
            subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
            out[k].append((time.perf_counter() - t) * 1000)
    return out


def hold_with_flock(lock):
    p = subprocess.Popen([FLOCK, lock, STAMP, "--wait-stdin"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    return p


def launch():
    ws = workspace()
    lock = os.path.join(ws, ".ralph", "loop.lock")
    cmds = {
        "true": ["true"],
        "flock FILE true": [FLOCK, lock, "true"],
        "ralph-supervise run -- true": [BIN, "-C", ws, "run", "--", "true"],
    }
    if STATIC:
        cmds["ralph-supervise (static build) run -- true"] = [STATIC, "-C", ws, "run", "--", "true"]
    if TINI:
        cmds["tini -s -- true"] = [TINI, "-s", "--", "true"]
    res = timed_runs(cmds, N_LAUNCH)
    base = statistics.median(res["flock FILE true"])
    for k, v in res.items():
        record("launch overhead", k, v, base=base)


N_SPACED = 20 if QUICK else 100
GAP = 0.05


def launch_spaced():
    """The launch again, each run 50 ms after the one before: a launch on its own, as a
    user starts a loop. Moving a process into a cgroup (a write to `cgroup.procs`) waits
    for an RCU grace period unless another move happened moments before, so a rapid
    series of launches hides what a single one pays."""
    ws = workspace()
    lock = os.path.join(ws, ".ralph", "loop.lock")
    cmds = {
        "flock FILE true": [FLOCK, lock, "true"],
        "ralph-supervise run -- true": [BIN, "-C", ws, "run", "--", "true"],
        "ralph-supervise run --containment tree -- true": [BIN, "-C", ws, "run", "--containment", "tree", "--", "true"],
    }
    res = timed_runs(cmds, N_SPACED, gap=GAP)
    base = statistics.median(res["flock FILE true"])
    for k, v in res.items():
        record("launch, one at a time (50 ms apart)", k, v, base=base)


def strace_parts(argv, n):
    """Kernel time of the system calls on the lock file (the metadata: its writes and the
    truncation at release) and on `.ralph/supervise/` (the history record: open, lock,
    append, close), by `strace -T -y` of the supervisor alone (not its child), median per
    run in ms over n runs. Only time in the kernel: the JSON is built in user space in
    microseconds. None without strace."""
    strace = shutil.which("strace")
    if not strace:
        return None
    meta, hist = [], []
    for _ in range(n):
        out = subprocess.run([strace, "-T", "-y", "-o", "/dev/stderr", *argv], stdin=DEVNULL,
                             stdout=DEVNULL, stderr=subprocess.PIPE, text=True).stderr
        m = h = 0.0
        for line in out.splitlines():
            if not line.endswith(">") or "<" not in line:
                continue
            try:
                secs = float(line[line.rindex("<") + 1:-1])
            except ValueError:
                continue
            call = line.split("(", 1)[0]
            if "/supervise" in line or "runs.jsonl" in line:
                h += secs
            elif "loop.lock>" in line and call in ("pwrite64", "fallocate", "ftruncate", "newfstatat"):
                m += secs
        meta.append(m * 1000)
        hist.append(h * 1000)
    return meta, hist


def parts():
    """What each part of a launch costs, so that each can be judged (issue 18 point 5):
    the cgroup (made, the child started in it, removed) against the process tree, in a
    rapid series and one at a time; the hand-over filter for a ralph child (its
    answerer and filter) against none; and the kernel time of the metadata and history
    writes."""
    ws = workspace()
    sec = "parts of a launch (`run -- true`)"
    if cgroup_writable():
        for label, gap, n in [("rapid series", 0.0, N_LAUNCH), ("50 ms apart", GAP, N_SPACED)]:
            cmds = {
                f"--containment tree ({label})": [BIN, "-C", ws, "run", "--containment", "tree", "--", "true"],
                f"--containment cgroup ({label})": [BIN, "-C", ws, "run", "--containment", "cgroup", "--", "true"],
            }
            res = timed_runs(cmds, n, gap=gap)
            base = record(sec, f"--containment tree ({label})", res[f"--containment tree ({label})"])
            record(sec, f"--containment cgroup ({label})", res[f"--containment cgroup ({label})"], base=base)
    cmds = {
        "--handover never": [BIN, "-C", ws, "run", "--handover=never", "--", "true"],
        "--handover always": [BIN, "-C", ws, "run", "--handover", "--", "true"],
    }
    res = timed_runs(cmds, N_LAUNCH)
    base = record(sec, "--handover never", res["--handover never"])
    record(sec, "--handover always (answerer and filter)", res["--handover always"], base=base)
    split = strace_parts([BIN, "-C", ws, "run", "--", "true"], N_SPACED)
    if split:
        record(sec, "metadata: kernel time on the lock file (strace -T)", split[0])
        record(sec, "history: kernel time on .ralph/supervise/ (strace -T)", split[1])
    shutil.rmtree(ws)


def conflict():
    ws = workspace()
    lock = os.path.join(ws, ".ralph", "loop.lock")
    holder = hold_with_flock(lock)
    cmds = {
        "flock -n FILE true": [FLOCK, "-n", lock, "true"],
        "ralph-supervise run --on-conflict fail": [BIN, "-C", ws, "run", "--on-conflict", "fail", "--", "true"],
    }
    res = timed_runs(cmds, N_LAUNCH)
    holder.stdin.close()
    holder.wait()
    base = statistics.median(res["flock -n FILE true"])
    for k, v in res.items():
        record("conflict path (lock held)", k, v, base=base)


def wait_blocked(pid, word):
    deadline = time.monotonic() + 10
    while word not in wchan(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"pid {pid} never blocked in {word}: {wchan(pid)!r}")
        time.sleep(0.001)
    # Blocked in the kernel (ralph-supervise's main thread in flock(2), as flock -w's).
    time.sleep(0.005)


def used_workspace():
    """A workspace a loop has run in before (its `.ralph/supervise/runs.jsonl` exists), as
    a workspace is at a hand-off. In a fresh one the holder's release also creates that
    directory and file: 0.5-0.7 ms on ext4 (a mkdir and a create), paid once."""
    ws = workspace()
    subprocess.run([BIN, "-q", "-C", ws, "run", "--", "true"], check=True, stdout=DEVNULL)
    return ws


def handoff_once(kind):
    ws = used_workspace()
    lock = os.path.join(ws, ".ralph", "loop.lock")
    if kind == "flock":
        holder = hold_with_flock(lock)
        waiter = subprocess.Popen([FLOCK, "-w", "60", lock, STAMP], stdout=subprocess.PIPE, text=True)
        wait_blocked(waiter.pid, "lock")
    else:
        holder = subprocess.Popen([BIN, "-C", ws, "run", "--", STAMP, "--wait-stdin"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "ready"
        waiter = subprocess.Popen([BIN, "-q", "-C", ws, "run", "--on-conflict", "wait", "--", STAMP],
                                  stdout=subprocess.PIPE, text=True)
        wait_blocked(waiter.pid, "lock")
    holder.stdin.close()
    exited = int(holder.stdout.readline())
    started = int(waiter.stdout.readline())
    holder.wait()
    waiter.wait()
    shutil.rmtree(ws)
    return (started - exited) / 1e6


def handoff():
    res = {"flock -w": [], "ralph-supervise --on-conflict wait": []}
    for _ in range(N_HANDOFF):
        res["flock -w"].append(handoff_once("flock"))
        res["ralph-supervise --on-conflict wait"].append(handoff_once("ralph"))
    base = statistics.median(res["flock -w"])
    for k, v in res.items():
        record("hand-off: holder's child exits -> waiter's child starts", k, v, base=base)


def wait_timeout():
    """Error of --wait-timeout: a timed-out wait's run time minus the same process's
    run time when it fails at once (the process's own start-up and exit), minus 200 ms.
    The holder is a supervised loop, so its metadata names it (a holder without metadata
    costs one read of /proc/locks, an RCU grace period of 4-15 ms, on both paths)."""
    ws = workspace()
    holder = subprocess.Popen([BIN, "-q", "-C", ws, "run", "--", STAMP, "--wait-stdin"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    cmds = {
        "wait": [BIN, "-q", "-C", ws, "run", "--on-conflict", "wait", "--wait-timeout", "200ms", "--", "true"],
        "fail": [BIN, "-q", "-C", ws, "run", "--on-conflict", "fail", "--", "true"],
    }
    res = timed_runs(cmds, N_HANDOFF)
    holder.stdin.close()
    holder.wait()
    fail = statistics.median(res["fail"])
    record("wait timeout error (--wait-timeout 200ms, start-up and exit subtracted)", "ralph-supervise",
           [t - fail - 200 for t in res["wait"]])


def signal_latency_once(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.002)  # let the supervisor settle into poll(2)
    sent = time.monotonic_ns()
    os.kill(p.pid, signal.SIGTERM)
    got = int(p.stdout.readline())
    p.wait()
    return (got - sent) / 1e6


def signal_latency():
    ws = workspace()
    cmds = {
        "direct (no supervisor)": [STAMP, "--on-term"],
        "ralph-supervise": [BIN, "-C", ws, "run", "--", STAMP, "--on-term"],
    }
    if TINI:
        cmds["tini"] = [TINI, "-s", "--", STAMP, "--on-term"]
    res = {k: [] for k in cmds}
    for _ in range(N_SIGNAL):
        for k, argv in cmds.items():
            res[k].append(signal_latency_once(argv))
    base = statistics.median(res["tini"]) if TINI else None
    for k, v in res.items():
        record("signal forwarding: TERM to supervisor -> child's handler", k, v, base=base)


def worktree_launch():
    """A worktree launch on a repo of 5,000 small files (the primary held by flock(1))
    against plain `git worktree add` on the same repo."""
    n = 3 if QUICK else 9
    repo = tempfile.mkdtemp(prefix="rs-bench-repo-")
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.com")
    git = lambda *a: subprocess.run(["git", "-C", repo, *a], check=True, env=env,
                                    stdout=DEVNULL, stderr=DEVNULL)
    git("init", "-q", "-b", "main")
    for d in range(50):
        os.makedirs(os.path.join(repo, f"d{d}"))
        for f in range(100):
            with open(os.path.join(repo, f"d{d}", f"f{f}.txt"), "w") as fh:
                fh.write(f"{d} {f}\n")
    git("add", "-A")
    git("commit", "-q", "-m", "5000 files")
    os.makedirs(os.path.join(repo, ".ralph"), exist_ok=True)
    holder = hold_with_flock(os.path.join(repo, ".ralph", "loop.lock"))
    res = {"git worktree add": [], "ralph-supervise run (worktree launch) -- true": []}
    for i in range(n):
        t = time.perf_counter()
        git("worktree", "add", "-q", "-b", f"plain-{i}", os.path.join(repo, ".plain", f"w{i}"), "HEAD")
        res["git worktree add"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        subprocess.run([BIN, "-q", "-C", repo, "run", "--on-conflict", "worktree", "--", "true"],
                       check=True, env=env, stdout=DEVNULL, stderr=DEVNULL)
        res["ralph-supervise run (worktree launch) -- true"].append((time.perf_counter() - t) * 1000)
    holder.stdin.close()
    holder.wait()
    shutil.rmtree(repo)
    base = statistics.median(res["git worktree add"])
    for k, v in res.items():
        record("worktree launch, repo of 5,000 files", k, v, base=base)


def stop_latency():
    """`ralph-supervise stop` against a cooperative child (exits on TERM): the whole
    command, from start to its report that the lock is released."""
    res = []
    for _ in range(N_SIGNAL):
        ws = workspace()
        p = subprocess.Popen([BIN, "-q", "-C", ws, "run", "--", STAMP, "--on-term"],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.002)  # let the supervisor record the child's pid
        t = time.perf_counter()
        subprocess.run([BIN, "-q", "-C", ws, "stop"], check=True, stdout=DEVNULL)
        res.append((time.perf_counter() - t) * 1000)
        p.wait()
        shutil.rmtree(ws)
    record("stop latency: `ralph-supervise stop`, cooperative child", "ralph-supervise stop", res)


def cgroup_writable():
    """Whether ralph-supervise can make a cgroup here (it says so in the metadata)."""
    ws = workspace()
    p = subprocess.Popen([BIN, "-q", "-C", ws, "run", "--", STAMP, "--wait-stdin"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    time.sleep(0.05)
    with open(os.path.join(ws, ".ralph", "loop.lock")) as f:
        text = f.read()
    p.stdin.close()
    p.wait()
    shutil.rmtree(ws)
    return '"containment":"cgroup"' in text


N_FAN = 5 if QUICK else 20
FAN_OUT = 200


def containment_drain():
    """The child starts 200 `setsid sleep`s (each its own session) and exits: the time
    from its last line to `run` returning, when nothing of it is left."""
    script = f"i=0; while [ $i -lt {FAN_OUT} ]; do setsid sleep 600 & i=$((i+1)); done; echo ready"
    modes = ["tree"] + (["cgroup"] if cgroup_writable() else [])
    for mode in modes:
        res = []
        for _ in range(N_FAN):
            ws = workspace()
            p = subprocess.Popen([BIN, "-q", "-C", ws, "run", "--containment", mode, "--",
                                  "sh", "-c", script], stdout=subprocess.PIPE, text=True)
            assert p.stdout.readline().strip() == "ready"
            t = time.perf_counter()
            p.wait()
            res.append((time.perf_counter() - t) * 1000)
            shutil.rmtree(ws)
        record(f"containment: child exit -> nothing left, {FAN_OUT} descendants in new sessions",
               f"--containment {mode}", res)


def containment_setup():
    """`run -- true` in each mode: the cgroup's cost per run (made, the child placed in
    it before exec, removed), over the tree mode's."""
    if not cgroup_writable():
        return
    ws = workspace()
    cmds = {
        "--containment tree": [BIN, "-C", ws, "run", "--containment", "tree", "--", "true"],
        "--containment cgroup": [BIN, "-C", ws, "run", "--containment", "cgroup", "--", "true"],
    }
    times = timed_runs(cmds, N_LAUNCH)
    base = record("containment: set-up cost per run (`run -- true`)", "--containment tree",
                  times["--containment tree"])
    record("containment: set-up cost per run (`run -- true`)", "--containment cgroup",
           times["--containment cgroup"], base=base)
    shutil.rmtree(ws)


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return {l.split(":")[0]: l.split(":")[1].strip() for l in f if ":" in l}


def resident_code(pid, binary):
    """kB of the binary's code resident in `pid` (its executable mapping's Rss)."""
    mapping, kb = None, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 6:
                mapping = (fields[1], fields[5])
            elif fields[0] == "Rss:" and mapping == ("r-xp", binary):
                kb += int(fields[1])
    return kb


def idle_and_rss():
    ws = workspace()
    secs = 2 if QUICK else 10
    p = subprocess.Popen([BIN, "-C", ws, "run", "--", "sleep", str(secs)])
    time.sleep(0.2)
    s0 = proc_status(p.pid)
    before = int(s0["voluntary_ctxt_switches"]) + int(s0["nonvoluntary_ctxt_switches"])
    time.sleep(secs - 0.5)
    s1 = proc_status(p.pid)
    after = int(s1["voluntary_ctxt_switches"]) + int(s1["nonvoluntary_ctxt_switches"])
    p.wait()
    idle = [("ralph-supervise", after - before, f"over {secs - 0.7:.1f} s of a sleeping child")]
    if TINI:
        t = subprocess.Popen([TINI, "-s", "--", "sleep", str(secs)])
        time.sleep(0.2)
        a = proc_status(t.pid)
        b0 = int(a["voluntary_ctxt_switches"]) + int(a["nonvoluntary_ctxt_switches"])
        time.sleep(secs - 0.5)
        a = proc_status(t.pid)
        b1 = int(a["voluntary_ctxt_switches"]) + int(a["nonvoluntary_ctxt_switches"])
        t.wait()
        idle.append(("tini", b1 - b0, ""))
    rss = []
    for name, argv in [("ralph-supervise", [BIN, "-C", ws, "run", "--", STAMP, "--wait-stdin"])] + \
                      ([("ralph-supervise (static build)", [STATIC, "-C", ws, "run", "--", STAMP, "--wait-stdin"])] if STATIC else []) + [
                       ("flock", [FLOCK, os.path.join(ws, "other.lock"), STAMP, "--wait-stdin"])] + \
                      ([("tini", [TINI, "-s", "--", STAMP, "--wait-stdin"])] if TINI else []):
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        p.stdout.readline()
        code = f"{resident_code(p.pid, os.path.realpath(argv[0]))} kB" if argv[0] in (BIN, STATIC) else ""
        rss.append((name, proc_status(p.pid)["VmHWM"], code))
        p.stdin.close()
        p.wait()
    return idle, rss


def handover():
    """The lock hand-over's costs: the spawn (answerer, filter), one trapped flock on an
    unrelated file, and a cargo build whose own flocks all go through the answerer."""
    ws = workspace()
    cmds = {
        "run -- true": [BIN, "-C", ws, "run", "--handover=never", "--", "true"],
        "run --handover -- true": [BIN, "-C", ws, "run", "--handover", "--", "true"],
    }
    res = timed_runs(cmds, N_LAUNCH)
    base = statistics.median(res["run -- true"])
    for k, v in res.items():
        record("hand-over: spawn cost", k, v, base=base)

    other = os.path.join(ws, "other.lock")
    per_call = {}
    for name, flag in [("without the filter", "--handover=never"), ("trapped, let through", "--handover")]:
        out = subprocess.run([BIN, "-C", ws, "run", flag, "--", STAMP, "--flock", "2000", other],
                             stdin=DEVNULL, stdout=subprocess.PIPE, text=True, check=True).stdout
        per_call[name] = [int(x) / 1000 for x in out.split()]
    base = statistics.median(per_call["without the filter"])
    for k, v in per_call.items():
        record("hand-over: one flock(2) on an unrelated file", k, v, unit="µs", base=base)

    cargo = shutil.which("cargo")
    crate = tempfile.mkdtemp(prefix="rs-bench-crate-")
    subprocess.run([cargo, "init", "-q", "--name", "tiny", crate], check=True)
    with open(os.path.join(crate, "src", "main.rs"), "w") as f:
        f.write("".join(f"fn f{i}(x: u64) -> u64 {{ x.wrapping_mul({i} + 1) }}\n" for i in range(200)))
        f.write("fn main() {" + "".join(f" println!(\"{{}}\", f{i}({i}));" for i in range(200)) + " }\n")
    builds = {"cargo build (no filter)": "--handover=never", "cargo build (filter, every flock trapped)": "--handover"}
    res = {k: [] for k in builds}
    for n in range(3 if QUICK else 20):
        # Alternate the order, so that neither build always follows the other.
        for k, flag in (list(builds.items()) if n % 2 == 0 else list(builds.items())[::-1]):
            subprocess.run([cargo, "clean", "-q"], cwd=crate, check=True)
            t = time.perf_counter()
            subprocess.run([BIN, "-C", crate, "run", flag, "--", cargo, "build", "--offline", "-q"],
                           stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL, check=True)
            res[k].append((time.perf_counter() - t) * 1000)
    base = statistics.median(res["cargo build (no filter)"])
    for k, v in res.items():
        record("hand-over: cargo build --offline of a small crate in a supervised loop", k, v, base=base)


def print_rows():
    section = None
    for sec, subject, med, lo, hi, n, unit, ratio in rows:
        if sec != section:
            print(f"\n### {sec}\n")
            print("| subject | median | p5 | p95 | n | vs baseline |")
            print("|---|---|---|---|---|---|")
            section = sec
        print(f"| {subject} | {med:.3f} {unit} | {lo:.3f} | {hi:.3f} | {n} | {ratio} |")


def main():
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    print(f"Machine: {machine}, {os.cpu_count()} cores, {cpu}")
    if ONLY == "containment":
        containment_setup()
        containment_drain()
        print_rows()
        return
    launch()
    launch_spaced()
    parts()
    conflict()
    handoff()
    wait_timeout()
    signal_latency()
    stop_latency()
    worktree_launch()
    handover()
    containment_setup()
    containment_drain()
    idle, rss = idle_and_rss()
    size = os.path.getsize(BIN)

    print(f"flock(1): {FLOCK}; tini: {TINI or 'not installed'}; runs: {N_LAUNCH} launches, "
          f"{N_HANDOFF} hand-offs, {N_SIGNAL} signals{' (quick)' if QUICK else ''}")
    print_rows()
    print("\n### idle cost: context switches of the supervising process\n")
    print("| subject | context switches | note |")
    print("|---|---|---|")
    for name, n, note in idle:
        print(f"| {name} | {n} | {note} |")
    print("\n### memory and size\n")
    print("| subject | peak RSS (VmHWM) | its code resident |")
    print("|---|---|---|")
    for name, v, code in rss:
        print(f"| {name} | {v} | {code} |")
    print(f"\nBinary size: {size} bytes ({size / 1024 / 1024:.2f} MiB), release profile, stripped.")
    if STATIC:
        ssize = os.path.getsize(STATIC)
        print(f"Static build: {ssize} bytes ({ssize / 1024 / 1024:.2f} MiB).")


if __name__ == "__main__":
    main()
