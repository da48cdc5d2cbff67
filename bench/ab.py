#!/usr/bin/env python3
"""Before/after pairs for an optimisation, robust to a busy machine: two builds of
ralph-supervise run alternately (and flock(1) beside them), medians of wall time, plus
counts that do not depend on load: instructions and page faults (`perf stat`, when
installed) and system calls (`strace -f -c`, when installed).

    bench/ab.py OLD_BINARY NEW_BINARY STAMP [--quick] [--only=handoff] [--n-handoff=N]

Prints a Markdown table. The figures of BENCHMARKS.md's "Optimisations, before and
after" were taken with it.
"""

import os
import shutil
import statistics
import subprocess
import sys
import time

# bench.py's workspace and interleaved runs (it reads its own arguments on import: OLD
# NEW STAMP satisfy it, and neither helper uses them).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import timed_runs, workspace  # noqa: E402
import procs  # noqa: E402

OLD, NEW, STAMP = (os.path.abspath(a) for a in sys.argv[1:4])
QUICK = "--quick" in sys.argv
# `--only=handoff`: just the hand-off pairs.
ONLY = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), None)
N = 50 if QUICK else 300
N_SPACED = 20 if QUICK else 100
N_HANDOFF = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--n-handoff=")),
                 10 if QUICK else 40)
FLOCK = shutil.which("flock")
DEVNULL = subprocess.DEVNULL


def alternate(cmds, n, gap=0.0):
    return {k: statistics.median(v) for k, v in timed_runs(cmds, n, gap).items()}


def perf_counts(argv, runs=30):
    perf = shutil.which("perf")
    if not perf:
        return None
    out = subprocess.run([perf, "stat", "-x,", "-r", str(runs), "-e", "instructions,page-faults", *argv],
                         stdin=DEVNULL, stdout=DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    counts = {}
    for line in out.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            counts[f[2].split(":")[0]] = float(f[0])
    return counts.get("instructions"), counts.get("page-faults")


def syscalls(argv):
    strace = shutil.which("strace")
    if not strace:
        return None
    out = subprocess.run([strace, "-f", "-c", "-o", "/dev/stderr", *argv], stdin=DEVNULL,
                         stdout=DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    total = [l for l in out.splitlines() if l.rstrip().endswith("total")]
    return int(total[-1].split()[-3]) if total else None


def handoff_once(binary, ws):
    """`binary` None: flock(1) holds and `flock -w` waits."""
    _, _, exited, started = procs.handoff(FLOCK, STAMP, binary, ws)
    return (started - exited) / 1e6


def add_perf(rows, what, perf):
    """Rows for what `perf stat` could count (a VM without a PMU counts no instructions)."""
    if None in perf.values():
        return
    for i, name in enumerate(["instructions", "page faults"]):
        if None not in (v[i] for v in perf.values()):
            rows.append((f"{what}: {name} (perf stat, mean of 30)", {k: int(v[i]) for k, v in perf.items()}))


def main():
    ws = workspace()
    lock = os.path.join(ws, ".ralph", "loop.lock")
    rows = []
    if ONLY == "handoff":
        rows.append(handoff_rows())
        shutil.rmtree(ws)
        print_rows(rows)
        return
    launch = {"flock": [FLOCK, lock, "true"], "old": [OLD, "-C", ws, "run", "--", "true"],
              "new": [NEW, "-C", ws, "run", "--", "true"]}
    m = alternate(launch, N)
    rows.append(("launch `run -- true`, rapid series (median ms)", m))
    m = alternate(launch, N_SPACED, gap=0.05)
    rows.append(("launch, 50 ms apart (median ms)", m))
    holder = subprocess.Popen([FLOCK, lock, STAMP, "--wait-stdin"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    holder.stdout.readline()
    conflict = {"flock": [FLOCK, "-n", lock, "true"],
                "old": [OLD, "-C", ws, "run", "--on-conflict", "fail", "--", "true"],
                "new": [NEW, "-C", ws, "run", "--on-conflict", "fail", "--", "true"]}
    m = alternate(conflict, N)
    rows.append(("conflict `--on-conflict fail` (median ms)", m))
    counts = {k: syscalls(v) for k, v in conflict.items()}
    if None not in counts.values():
        rows.append(("conflict: system calls (strace -f -c)", counts))
    perf = {k: perf_counts(v) for k, v in conflict.items()}
    holder.stdin.close()
    holder.wait()
    add_perf(rows, "conflict", perf)
    counts = {k: syscalls(v) for k, v in launch.items()}
    if None not in counts.values():
        rows.append(("launch: system calls, child included (strace -f -c)", counts))
    perf = {k: perf_counts(v) for k, v in launch.items()}
    add_perf(rows, "launch, child included", perf)
    rows.append(handoff_rows())
    shutil.rmtree(ws)
    print_rows(rows)


def handoff_rows():
    ho = {"flock": [], "old": [], "new": []}
    for _ in range(N_HANDOFF):
        for k, b in (("flock", None), ("old", OLD), ("new", NEW)):
            # A workspace a loop has run in (see bench.py's used_workspace).
            d = workspace()
            subprocess.run([b or NEW, "-q", "-C", d, "run", "--", "true"], check=True, stdout=DEVNULL)
            ho[k].append(handoff_once(b, d))
            shutil.rmtree(d)
    return (f"hand-off, holder's child exits -> waiter's child runs (median of {N_HANDOFF} ms)",
            {k: statistics.median(v) for k, v in ho.items()})


def print_rows(rows):
    print("| measure | flock(1) | before | after |")
    print("|---|---|---|---|")
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else f"{v:,}")
    for name, m in rows:
        print(f"| {name} | {fmt(m.get('flock'))} | {fmt(m['old'])} | {fmt(m['new'])} |")


if __name__ == "__main__":
    main()
