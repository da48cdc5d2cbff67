#!/usr/bin/env python3
"""The hand-off's timeline, from kernel tracepoints: where the time goes between the
holder's child exiting and the waiter's child running, for flock(1) (`flock FILE` holds,
`flock -w` waits) and for each ralph-supervise binary given, hand-offs interleaved.

    bench/timeline.py STAMP [BINARY...] [--n=20]

Needs root and perf (`perf record -k mono -a` with sched and syscall tracepoints; no
hardware counters are used). Each hand-off is in a workspace a loop has run in. Times
are CLOCK_MONOTONIC, the clock `stamp` prints, so the tracepoints line up with it.
Prints one Markdown table per subject: the median (and p10/p90) of each milestone,
in ms after the holder's child stamped its exit.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procs  # noqa: E402

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
STAMP = os.path.abspath(ARGS[0])
BINS = [os.path.abspath(b) for b in ARGS[1:]]
N = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--n=")), 20)
# `--profile`: CPU-clock samples too (20 kHz), attributed to the holder's stretch from
# reaping its child to LOCK_UN and the waiter's from its flock returning to its fork;
# prints the functions they were in (a build with symbols says more than a stripped one).
PROFILE = "--profile" in sys.argv
FLOCK = shutil.which("flock")
PERF = shutil.which("perf")
DEVNULL = subprocess.DEVNULL
EVENTS = [
    "sched:sched_process_exit", "sched:sched_process_exec", "sched:sched_wakeup",
    "syscalls:sys_enter_exit_group", "syscalls:sys_enter_flock", "syscalls:sys_exit_flock",
    "syscalls:sys_exit_poll", "syscalls:sys_exit_ppoll", "syscalls:sys_exit_wait4",
    "syscalls:sys_enter_clone3", "syscalls:sys_enter_clone", "syscalls:sys_enter_ftruncate",
    "syscalls:sys_enter_write",
]


def workspace(binary):
    d = tempfile.mkdtemp(prefix="rs-timeline-")
    os.makedirs(os.path.join(d, ".ralph"))
    open(os.path.join(d, ".ralph", "loop.lock"), "a").close()
    if binary:
        subprocess.run([binary, "-q", "-C", d, "run", "--", "true"], check=True, stdout=DEVNULL)
    return d


def handoff(binary):
    """One hand-off; returns the pids and the two stamps."""
    ws = workspace(binary)
    holder, waiter, exited, started = procs.handoff(FLOCK, STAMP, binary, ws)
    shutil.rmtree(ws)
    return {"holder": holder.pid, "waiter": waiter.pid, "exited": exited, "started": started}


LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+(\d+)\.(\d+):\s+(\S+):\s?(.*)$")


def events(data):
    out = subprocess.run([PERF, "script", "-i", data, "--ns", "-F", "comm,pid,tid,cpu,time,event,trace,ip,sym"],
                         stdout=subprocess.PIPE, stderr=DEVNULL, text=True).stdout
    evs = []
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            comm, pid, tid, cpu, s, ns, ev, rest = m.groups()
            evs.append((int(s) * 10**9 + int(ns.ljust(9, "0")[:9]), int(pid), int(tid), ev.rstrip(":"), rest, comm,
                        int(cpu)))
    evs.sort()
    return evs


def first(evs, t0, pred, until=None):
    for e in evs:
        if e[0] >= t0 and (until is None or e[0] <= until) and pred(e):
            return e[0]
    return None


def milestones(evs, h):
    """Each milestone's time after the exit stamp (ms), or None where it did not occur."""
    t0, t1 = h["exited"], h["started"]
    window = [e for e in evs if t0 - 10**6 <= e[0] <= t1 + 10**6]
    hp, wp = h["holder"], h["waiter"]
    # The holder's child: the process that exits first after the stamp, neither H nor W.
    child_exit = next((e for e in window if e[0] >= t0 and e[3] == "syscalls:sys_enter_exit_group"
                       and e[1] not in (hp, wp)), None)
    cpid = child_exit[1] if child_exit else -1
    m = {}
    m["child exit_group"] = first(window, t0, lambda e: e[1] == cpid and e[3] == "syscalls:sys_enter_exit_group")
    m["child gone (sched_process_exit)"] = first(window, t0, lambda e: e[1] == cpid and e[3] == "sched:sched_process_exit")
    m["holder woken (sched_wakeup)"] = first(window, t0, lambda e: e[3] == "sched:sched_wakeup" and f"pid={hp} " in e[4] + " ")
    m["holder back from poll / wait4"] = first(window, t0, lambda e: e[1] == hp and e[3] in (
        "syscalls:sys_exit_poll", "syscalls:sys_exit_ppoll", "syscalls:sys_exit_wait4"))
    m["holder reaped its child (wait4)"] = first(window, t0, lambda e: e[1] == hp and e[3] == "syscalls:sys_exit_wait4")
    m["holder's history flock"] = first(window, t0, lambda e: e[1] == hp and e[3] == "syscalls:sys_enter_flock"
                                        and "0x00000002" in e[4])
    m["holder's history write"] = first(window, t0, lambda e: e[1] == hp and e[3] == "syscalls:sys_enter_write")
    m["holder truncates the metadata"] = first(window, t0, lambda e: e[1] == hp and e[3] == "syscalls:sys_enter_ftruncate")
    m["holder LOCK_UN (or exit_group)"] = first(window, t0, lambda e: e[1] == hp and (
        (e[3] == "syscalls:sys_enter_flock" and "0x00000008" in e[4]) or e[3] == "syscalls:sys_enter_exit_group"))
    flock_back = next((e for e in window if e[0] >= t0 and e[1] == wp and e[3] == "syscalls:sys_exit_flock"), None)
    ftid = flock_back[2] if flock_back else -1
    m["waiter woken (sched_wakeup)"] = first(window, t0, lambda e: e[3] == "sched:sched_wakeup" and f"pid={ftid} " in e[4] + " ")
    m["waiter's flock returns"] = flock_back[0] if flock_back else None
    unlock = next((e for e in window if e[0] >= t0 and e[1] == hp and (
        (e[3] == "syscalls:sys_enter_flock" and "0x00000008" in e[4]) or e[3] == "syscalls:sys_enter_exit_group")), None)
    woke = next((e for e in window if e[0] >= t0 and e[3] == "sched:sched_wakeup" and f"pid={ftid} " in e[4] + " "), None)
    if unlock and woke:
        target = re.search(r"target_cpu=(\d+)", woke[4])
        h["same_cpu"] = bool(target) and int(target.group(1)) == unlock[6]
    m["waiter's main thread back (poll)"] = first(window, t0, lambda e: e[1] == wp and e[2] == wp and e[3] in (
        "syscalls:sys_exit_poll", "syscalls:sys_exit_ppoll"))
    m["waiter forks (clone3/clone)"] = first(window, t0, lambda e: e[1] == wp and e[3] in (
        "syscalls:sys_enter_clone3", "syscalls:sys_enter_clone"))
    m["waiter's child exec"] = first(window, t0, lambda e: e[3] == "sched:sched_process_exec" and "stamp" in e[4]
                                     and e[1] not in (hp, wp, cpid))
    m["waiter's child stamps"] = t1
    return {k: (None if v is None else (v - t0) / 1e6) for k, v in m.items()}


def profile(evs, subjects, runs):
    """Where the CPU-clock samples of two stretches fell, by function."""
    import collections
    for name, binary in subjects:
        if binary is None:
            continue
        stretches = {"holder: reaped -> LOCK_UN": collections.Counter(),
                     "waiter: flock returns -> fork": collections.Counter()}
        for h in runs[name]:
            t0, t1 = h["exited"], h["started"]
            window = [e for e in evs if t0 <= e[0] <= t1 + 10**6]
            hp, wp = h["holder"], h["waiter"]
            reaped = next((e[0] for e in window if e[1] == hp and e[3] == "syscalls:sys_exit_wait4"), None)
            unlock = next((e[0] for e in window if e[1] == hp and e[3] == "syscalls:sys_enter_flock"
                           and "0x00000008" in e[4]), None)
            back = next((e[0] for e in window if e[1] == wp and e[3] == "syscalls:sys_exit_flock"), None)
            fork = next((e[0] for e in window if e[1] == wp and e[3] in (
                "syscalls:sys_enter_clone3", "syscalls:sys_enter_clone")), None)
            for label, pid, a, b in (("holder: reaped -> LOCK_UN", hp, reaped, unlock),
                                     ("waiter: flock returns -> fork", wp, back, fork)):
                if a and b:
                    for e in window:
                        # The thread that waited (or reaped) only: not the watcher.
                        if a <= e[0] <= b and e[2] == pid and e[3] == "cpu-clock":
                            stretches[label][e[4].split()[-1] if e[4] else "?"] += 1
        for label, c in stretches.items():
            total = sum(c.values())
            print(f"\n{name}, {label}: {total} samples at 20 kHz over {len(runs[name])} hand-offs")
            for sym, k in c.most_common(25):
                print(f"  {k:5d} {100 * k / max(total, 1):5.1f} %  {sym}")


def main():
    if os.geteuid() != 0 or not PERF:
        sys.exit("timeline.py needs root and perf")
    subjects = [("flock -w", None)] + [(b, b) for b in BINS]
    data = tempfile.mktemp(prefix="rs-timeline-", suffix=".data")
    events_wanted = EVENTS + (["cpu-clock"] if PROFILE else [])
    perf = subprocess.Popen([PERF, "record", "-q", "-k", "mono", "-a", "-o", data] +
                            (["-F", "20000"] if PROFILE else []) +
                            sum((["-e", e] for e in events_wanted), []), stdout=DEVNULL, stderr=DEVNULL)
    time.sleep(1.5)
    runs = {name: [] for name, _ in subjects}
    for _ in range(N):
        for name, binary in subjects:
            runs[name].append(handoff(binary))
    time.sleep(0.2)
    perf.send_signal(signal.SIGINT)
    perf.wait()
    evs = events(data)
    os.unlink(data)
    if PROFILE:
        profile(evs, subjects, runs)
    for name, _ in subjects:
        ms = [milestones(evs, h) for h in runs[name]]
        print(f"\n{name} (n={len(ms)}; ms after the holder's child stamped its exit)\n")
        print("| milestone | median | p10 | p90 |")
        print("|---|---|---|---|")
        for k in ms[0]:
            v = sorted(x[k] for x in ms if x[k] is not None)
            if not v:
                continue
            q = statistics.quantiles(v, n=10) if len(v) >= 10 else [v[0], v[-1]]
            print(f"| {k} | {statistics.median(v):.3f} | {q[0]:.3f} | {q[-1]:.3f} |")
        same = [h for h in runs[name] if h.get("same_cpu")]
        print(f"\nThe waiter woken on the CPU the holder let go on: {len(same)} of {len(runs[name])}")
        for label, group in (("same CPU", same), ("other CPU", [h for h in runs[name] if not h.get("same_cpu")])):
            gaps = [x["waiter's flock returns"] - x["holder LOCK_UN (or exit_group)"] for x in
                    (milestones(evs, h) for h in group) if None not in (x["waiter's flock returns"], x["holder LOCK_UN (or exit_group)"])]
            if gaps:
                print(f"- {label}: holder lets go -> waiter's flock returns, median {statistics.median(gaps):.3f} ms (n={len(gaps)})")


if __name__ == "__main__":
    main()
