#!/usr/bin/env python3
"""Writes link/hot-functions.txt: the functions of ralph-supervise that its runs call, in
the order they are first called, which build.rs places together ahead of the rest of
the code (a run then keeps about 450 kB of code resident instead of 1.4 MB; see
BENCHMARKS.md, "Optimisations, before and after").

    sudo bench/hot.py

Needs root, tracefs (/sys/kernel/tracing), cargo, nm and readelf. It builds the release
binary with its symbols, sets a uprobe on the entry of every function (a real run, not
an emulation: the spawn's child side and the cgroup paths are seen as they run), runs
the workloads below, and removes the probes (the kernel takes a few minutes for that).
Names are written without the hashes that change with the compiler, the dependencies'
versions or the build's flags, so the list stays good until the run path's code
changes; regenerate it when BENCHMARKS.md's resident code grows.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import wchan  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "link", "hot-functions.txt")
TRACE = "/sys/kernel/tracing"
GROUP = "ralph_supervise_hot"
TARGET = os.environ.get("RALPH_SUPERVISE_HOT_DIR", "/var/tmp/ralph-supervise-hot")


def build():
    env = dict(os.environ, CARGO_PROFILE_RELEASE_STRIP="false", CARGO_TARGET_DIR=TARGET)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, env=env, check=True)
    return os.path.join(TARGET, "release", "ralph-supervise")


def functions(binary):
    """(file offset, symbols) of every function in the executable segment: all the names
    at an address (identical functions merged into one have several, and the section
    is named after one of them)."""
    text = None
    for line in subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            text = (int(f[1], 16), int(f[2], 16), int(f[4], 16))  # offset, vaddr, size
    offset, vaddr, size = text
    found = {}
    for line in subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True,
                               text=True, check=True).stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tT" and int(f[1], 16) > 0:
            at = int(f[0], 16)
            if vaddr <= at < vaddr + size:
                found.setdefault(at - vaddr + offset, []).append(f[3])
    return sorted(found.items())


def write(path, text, append=False):
    fd = os.open(path, os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def settle(ws, pattern, what):
    """Waits (10 s at most) until `pattern` is in the workspace's metadata."""
    lock = os.path.join(ws, ".ralph", "loop.lock")
    deadline = time.monotonic() + 10
    while True:
        try:
            with open(lock) as f:
                if pattern in f.read():
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"hot.py: {what} never showed in {lock}")
        time.sleep(0.01)


def blocked(pid):
    deadline = time.monotonic() + 10
    while not any(w in wchan(pid) for w in ("lock", "poll")):
        if time.monotonic() > deadline:
            sys.exit("hot.py: the waiter never blocked")
        time.sleep(0.005)


def workloads(binary):
    """The runs whose code is placed ahead: the launch as bench.py measures it, a failing
    command, a restart under a policy file, a git repository, the conflict policies
    (fail, a timed-out wait, a hand-off, a worktree), a forwarded stop, the lock
    hand-over, a runtime limit, and a process tree instead of a cgroup."""
    q = subprocess.DEVNULL
    run = lambda ws, *args, **kw: subprocess.run([binary, "-q", "-C", ws, "run", *args],
                                                  stdout=q, stderr=q, **kw)
    plain = tempfile.mkdtemp(prefix="rs-hot-")
    # In the workspace, as from a shell there, and with -C, as bench.py and services do;
    # as a process tree too (the containment where no cgroup can be made).
    subprocess.run([binary, "run", "--", "true"], cwd=plain, stdout=q, stderr=q)
    run(plain, "--", "true")
    run(plain, "--containment", "tree", "--", "sh", "-c", "sleep 0.1 & exit 3")
    run(plain, "--", "sh", "-c", "exit 3")
    run(plain, "--max-runtime", "100ms", "--", "sleep", "5")
    os.makedirs(os.path.join(plain, ".ralph"), exist_ok=True)
    with open(os.path.join(plain, ".ralph", "supervise.toml"), "w") as f:
        f.write('[stop]\ngrace = "5s"\n\n[restart]\npolicy = "on-failure"\nmax = 1\n'
                'backoff_initial = "10ms"\n')
    run(plain, "--", "sh", "-c", "exit 1")
    os.remove(os.path.join(plain, ".ralph", "supervise.toml"))
    run(plain, "--handover", "--", "flock", os.path.join(plain, ".ralph", "loop.lock"), "true")

    repo = tempfile.mkdtemp(prefix="rs-hot-repo-")
    git = lambda *args: subprocess.run(["git", "-C", repo, *args], stdout=q, stderr=q, check=True)
    git("init", "-q")
    git("-c", "user.name=hot", "-c", "user.email=hot@localhost", "commit", "-q",
        "--allow-empty", "-m", "start")
    subprocess.run([binary, "run", "--", "true"], cwd=repo, stdout=q, stderr=q)
    for ws in (plain, repo):
        holder = subprocess.Popen([binary, "-q", "-C", ws, "run", "--", "sleep", "60"])
        settle(ws, f'"supervisor_pid":{holder.pid},', "the holder")
        if ws == repo:
            run(ws, "--on-conflict", "worktree", "--", "true")
            holder.terminate()
            holder.wait()
            continue
        run(ws, "--on-conflict", "fail", "--", "true")
        run(ws, "--on-conflict", "wait", "--wait-timeout", "50ms", "--", "true")
        waiter = subprocess.Popen([binary, "-q", "-C", ws, "run", "--on-conflict", "wait", "--",
                                   "true"], stdout=q, stderr=q)
        blocked(waiter.pid)
        holder.terminate()  # forwarded to `sleep`, then the hand-off to the waiter
        holder.wait()
        waiter.wait()
    shutil.rmtree(plain)
    shutil.rmtree(repo)


def pattern(symbol):
    """The name without what changes between builds: LTO's `.<n>` suffixes, the legacy
    mangling's hash (`17h<16 hex digits>E`) and v0's crate disambiguators (`Cs<id>_`)."""
    symbol = re.sub(r"(\.llvm)?\.\d+$", "", symbol)
    symbol = re.sub(r"17h[0-9a-f]{16}E$", "17h*E", symbol)
    return re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", symbol)


def remove_probes():
    """Disables and removes this script's probes, and only them (left behind by a run
    cut short too)."""
    group = os.path.join(TRACE, "events", GROUP)
    if os.path.exists(group):
        print("hot.py: removing the probes (a few minutes)", file=sys.stderr)
        write(os.path.join(group, "enable"), "0")
        names = [e for e in os.listdir(group) if os.path.isdir(os.path.join(group, e))]
        add(os.path.join(TRACE, "uprobe_events"), [f"-:{GROUP}/{e}\n" for e in names])


def add(path, lines):
    """Appends `lines` in writes tracefs takes whole (it parses at most a page a time)."""
    chunk = ""
    for line in lines:
        if len(chunk) + len(line) > 3000:
            write(path, chunk, append=True)
            chunk = ""
        chunk += line
    if chunk:
        write(path, chunk, append=True)


def setting(name):
    """A tracefs setting as it can be written back: a buffer never used yet reads
    `7 (expanded: 1408)`, the size it takes once used being the second number."""
    text = open(os.path.join(TRACE, name)).read().strip()
    m = re.search(r"\(expanded: (\d+)\)", text)
    return m.group(1) if m else text.split()[0]


def main():
    if os.geteuid() != 0 or not os.path.isdir(os.path.join(TRACE, "events")):
        sys.exit(f"hot.py: needs root and tracefs at {TRACE}")
    # A TERM, like Ctrl-C, still removes the probes on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("hot.py: terminated"))
    remove_probes()
    binary = os.path.abspath(build())
    funcs = functions(binary)
    events = os.path.join(TRACE, "uprobe_events")
    print(f"hot.py: {len(funcs)} functions; setting their probes", file=sys.stderr)
    settings = {name: setting(name) for name in ("tracing_on", "buffer_size_kb")}
    try:
        add(events, [f"p:{GROUP}/f{i} {binary}:{offset:#x}\n" for i, (offset, _) in enumerate(funcs)])
        write(os.path.join(TRACE, "trace"), "")
        write(os.path.join(TRACE, "buffer_size_kb"), "65536")
        write(os.path.join(TRACE, "events", GROUP, "enable"), "1")
        write(os.path.join(TRACE, "tracing_on"), "1")
        workloads(binary)
    finally:
        write(os.path.join(TRACE, "tracing_on"), "0")
        with open(os.path.join(TRACE, "trace")) as f:
            trace = f.read()
        remove_probes()
        for name, value in settings.items():
            write(os.path.join(TRACE, name), value)
    order, seen = [], set()
    for m in re.finditer(rf"{GROUP}/f(\d+)|\bf(\d+): \(", trace):
        i = int(m.group(1) or m.group(2))
        for name in map(pattern, funcs[i][1]):
            if name not in seen:
                seen.add(name)
                order.append(name)
    if "LOST" in trace or len(order) < 100:
        sys.exit(f"hot.py: the trace lost events or saw too few calls ({len(order)})")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write("# The functions ralph-supervise's runs call, in the order they are first called,\n"
                "# their hashes left out: build.rs places them ahead of the rest of the code.\n"
                "# Written by bench/hot.py; do not edit by hand.\n")
        f.writelines(name + "\n" for name in order)
    print(f"hot.py: {len(order)} names written to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
