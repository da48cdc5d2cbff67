"""Process helpers the benchmark scripts share (nothing is read from the command line
on import, so any of them can use it)."""

import os
import subprocess
import time


def wchan(pid):
    """Where in the kernel `pid` sleeps ("" once it is gone)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def handoff(flock, stamp, binary, ws):
    """One hand-off in workspace `ws`: a holder whose `stamp` child waits on its stdin,
    a waiter blocked in the kernel on the same lock, then the holder's child let go.
    `binary` None: flock(1) holds and `flock -w` waits. Returns the holder, the waiter
    and the two stamps (ns, CLOCK_MONOTONIC): the holder's child's exit, the waiter's
    child's start."""
    lock = os.path.join(ws, ".ralph", "loop.lock")
    holder = subprocess.Popen([flock, lock, stamp, "--wait-stdin"] if binary is None else
                              [binary, "-C", ws, "run", "--", stamp, "--wait-stdin"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    waiter = subprocess.Popen([flock, "-w", "60", lock, stamp] if binary is None else
                              [binary, "-q", "-C", ws, "run", "--on-conflict", "wait", "--", stamp],
                              stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    # Blocked in flock(2) (flock -w; ralph-supervise since its wait wakes once) or in
    # poll(2) (ralph-supervise before that: a helper thread in flock(2)).
    while not any(w in wchan(waiter.pid) for w in ("lock", "poll")):
        assert time.monotonic() < deadline, "the waiter never blocked"
        time.sleep(0.001)
    time.sleep(0.005)
    holder.stdin.close()
    exited = int(holder.stdout.readline())
    started = int(waiter.stdout.readline())
    holder.wait()
    waiter.wait()
    return holder, waiter, exited, started
