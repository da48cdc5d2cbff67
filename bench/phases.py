#!/usr/bin/env python3
"""A launch taken apart, from kernel tracepoints: for `run -- true` (in a cgroup and as a
process tree) and for `flock FILE true`, the median time from the program's exec to its
clone of the child, from the clone to the child's exec, and from the child's exit to the
program's own exit; launches interleaved.

    bench/phases.py BINARY [--n=100]

Needs root and perf (`perf record` of sched_process_exec/exit and the clone system calls;
no hardware counters). The tracepoints cost a little on every traced system call, so
compare the subjects with each other, not with bench.py's wall-clock figures.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

BIN = os.path.abspath(sys.argv[1])
N = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--n=")), 100)
TRUE = shutil.which("true")
FLOCK = shutil.which("flock")
EVENTS = "sched:sched_process_exec,sched:sched_process_exit," \
         "syscalls:sys_enter_clone3,syscalls:sys_enter_clone"


def main():
    ws = tempfile.mkdtemp(prefix="rs-phases-")
    subprocess.run(["git", "init", "-q", ws], check=True)
    subprocess.run([BIN, "-C", ws, "run", "--", TRUE], check=True)  # a used workspace
    subjects = {
        "ralph-supervise run -- true (cgroup)": f"{BIN} -C {ws} run -- {TRUE}",
        "ralph-supervise run --containment tree -- true": f"{BIN} -C {ws} run --containment tree -- {TRUE}",
        "flock FILE true": f"{FLOCK} {ws}/other.lock {TRUE}",
    }
    script = os.path.join(ws, "loop.sh")
    with open(script, "w") as f:
        f.write(f"for i in $(seq {N}); do\n" + "\n".join(subjects.values()) + "\ndone\n")
    data = os.path.join(ws, "perf.data")
    subprocess.run(["perf", "record", "-q", "-e", EVENTS, "-o", data, "--", "sh", script],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time,event,trace"],
                         capture_output=True, text=True, check=True).stdout
    events = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):(.*)", line)
        if m:
            events.append((m[1], int(m[2]), float(m[3]) * 1000, m[4], m[5]))
    names = list(subjects)
    phases = {name: {"exec -> clone": [], "clone -> child's exec": [],
                     "child's exit -> exit": [], "total": []} for name in names}
    launches = 0
    for i, (_, pid, t, event, trace) in enumerate(events):
        # A subject's own exec: an exec from the loop's shell that is not seq or true.
        if event != "sched:sched_process_exec" or any(
                f"filename={p}" in trace for p in ("/usr/bin/seq", TRUE, "/usr/bin/sh")):
            continue
        name = names[launches % len(names)]
        launches += 1
        clone = child_exec = child_exit = end = None
        for comm, p, t2, e2, tr2 in events[i + 1:]:
            if p == pid and e2.startswith("syscalls:sys_enter_clone") and clone is None:
                clone = t2
            elif p != pid and e2 == "sched:sched_process_exec" and child_exec is None:
                child_exec = t2
            elif p != pid and e2 == "sched:sched_process_exit" and comm == "true" and child_exit is None:
                child_exit = t2
            elif p == pid and e2 == "sched:sched_process_exit":
                end = t2
                break
        if None in (clone, child_exec, child_exit, end):
            continue
        for phase, ms in zip(phases[name], (clone - t, child_exec - clone, end - child_exit, end - t)):
            phases[name][phase].append(ms)
    print(f"| subject | {' | '.join(phases[names[0]])} | n |")
    print("|---|" + "---|" * (len(phases[names[0]]) + 1))
    for name in names:
        cells = [f"{statistics.median(v):.3f} ms" if v else "-" for v in phases[name].values()]
        print(f"| {name} | {' | '.join(cells)} | {len(phases[name]['total'])} |")
    shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
