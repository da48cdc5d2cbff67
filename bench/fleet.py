#!/usr/bin/env python3
"""Fleet-mode figures: acquisition latency against a local flock, failover time against
the TTL, idle wake-ups of a fleet supervisor; and the default build against a baseline
binary (size, launch, memory) to show that fleet mode costs it nothing.

Run through bench/fleet.sh, which builds the binaries and the `stamp` helper and finds
etcd. Prints a Markdown report on stdout.

    fleet.py FLEET_BIN DEFAULT_BIN STAMP [--base=BASE_BIN] [--quick] [--sections=a,b] [--ttls=2,5]
"""

import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

FLEET = os.path.abspath(sys.argv[1])
DEFAULT = os.path.abspath(sys.argv[2])
STAMP = os.path.abspath(sys.argv[3])
BASE = next((os.path.abspath(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--base=")), None)
QUICK = "--quick" in sys.argv
# --sections=failover,idle runs only those (default: all).
SECTIONS = next((a.split("=", 1)[1].split(",") for a in sys.argv if a.startswith("--sections=")),
                ["default", "acquisition", "failover", "idle"])
N_ACQUIRE = 30 if QUICK else 200
TTLS = next(([int(t) for t in a.split("=", 1)[1].split(",")] for a in sys.argv if a.startswith("--ttls=")),
            [2, 5] if QUICK else [2, 5, 10])
N_FAILOVER = 1 if QUICK else 3
IDLE_SECS = 20 if QUICK else 60
DEVNULL = subprocess.DEVNULL
FLOCK = shutil.which("flock")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    """n etcd members on loopback ports in a temp dir."""

    def __init__(self, n):
        self.dir = tempfile.mkdtemp(prefix="rs-etcd-")
        ports = [(free_port(), free_port()) for _ in range(n)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
        self.urls, self.procs = [], []
        for i, (c, p) in enumerate(ports):
            url = f"http://127.0.0.1:{c}"
            log = open(os.path.join(self.dir, f"m{i}.log"), "w")
            self.procs.append(subprocess.Popen(
                ["etcd", "--name", f"m{i}", "--data-dir", os.path.join(self.dir, f"m{i}"),
                 "--listen-client-urls", url, "--advertise-client-urls", url,
                 "--listen-peer-urls", f"http://127.0.0.1:{p}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"bench{os.getpid()}",
                 "--heartbeat-interval", "50", "--election-timeout", "500"],
                stdout=log, stderr=log))
            self.urls.append(url)
        deadline = time.monotonic() + 30
        while self.etcdctl(["put", "bench/ready", "1"]).returncode != 0:
            assert time.monotonic() < deadline, "etcd did not start"
            time.sleep(0.05)

    def etcdctl(self, args, urls=None):
        return subprocess.run(["etcdctl", "--endpoints", ",".join(urls or self.urls)] + args,
                              env=dict(os.environ, ETCDCTL_API="3"), capture_output=True, text=True)

    def follower(self):
        out = json.loads(self.etcdctl(["endpoint", "status", "-w", "json"]).stdout)
        for i, url in enumerate(self.urls):
            s = next(s for s in out if s["Endpoint"] == url)["Status"]
            if s["header"]["member_id"] != s["leader"]:
                return i
        raise RuntimeError("no follower")

    def close(self):
        for p in self.procs:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def stats(samples):
    samples = sorted(samples)
    q = statistics.quantiles(samples, n=20) if len(samples) >= 20 else [samples[0], samples[-1]]
    return statistics.median(samples), q[0], q[-1]


def table(title, rows, base=None):
    print(f"\n### {title}\n")
    print("| subject | median | p5 | p95 | n | vs baseline |")
    print("|---|---|---|---|---|---|")
    for subject, samples in rows:
        med, lo, hi = stats(samples)
        ratio = f"{med / base:.2f}x" if base else ""
        print(f"| {subject} | {med:.3f} ms | {lo:.3f} | {hi:.3f} | {len(samples)} | {ratio} |")


def workspace():
    d = tempfile.mkdtemp(prefix="rs-bench-")
    os.makedirs(os.path.join(d, ".ralph"))
    return d


def timed(cmds, n):
    out = {k: [] for k in cmds}
    for _ in range(n):
        for k, argv in cmds.items():
            t = time.perf_counter()
            r = subprocess.run(argv, stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)
            out[k].append((time.perf_counter() - t) * 1000)
            assert r.returncode == 0, f"{argv}: {r.returncode}"
    return out


def acquisition():
    cluster = Cluster(1)
    try:
        ws = workspace()
        url = cluster.urls[0]
        cmds = {
            "flock FILE true": [FLOCK, os.path.join(ws, "f.lock"), "true"],
            "ralph-supervise run -- true (local flock)": [FLEET, "-C", ws, "run", "--", "true"],
            "ralph-supervise run --fleet-endpoints E -- true (flock + etcd lock)":
                [FLEET, "-C", ws, "run", "--fleet-endpoints", url, "--fleet-key", "bench/acquire", "--", "true"],
        }
        res = timed(cmds, N_ACQUIRE)
        base = stats(res["flock FILE true"])[0]
        table("fleet: acquisition latency, whole run of `true` (etcd: one member on loopback)",
              list(res.items()), base)
        shutil.rmtree(ws)
    finally:
        cluster.close()


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def failover_once(ttl):
    cluster = Cluster(3)
    try:
        frozen = cluster.follower()
        others = [u for i, u in enumerate(cluster.urls) if i != frozen]
        key = f"bench/failover-{ttl}"
        a, b = workspace(), workspace()
        holder = subprocess.Popen(
            [FLEET, "-C", a, "run", "--fleet-endpoints", cluster.urls[frozen], "--fleet-ttl", f"{ttl}s",
             "--fleet-key", key, "--stop-grace", "30s", "--", STAMP, "--wait-stdin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=DEVNULL, text=True)
        assert holder.stdout.readline().strip() == "ready"
        child = children(holder.pid)[0]
        log = tempfile.TemporaryFile(mode="w+")
        waiter = subprocess.Popen(
            [FLEET, "-C", b, "run", "--fleet-endpoints", ",".join(others), "--fleet-ttl", "10s",
             "--fleet-key", key, "--on-conflict", "wait", "--", STAMP],
            stdin=DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True)
        deadline = time.monotonic() + 20
        while len(cluster.etcdctl(["get", "--prefix", f"ralph-supervise/lock/{key}/", "--keys-only"],
                                  others).stdout.split()) < 2:
            assert time.monotonic() < deadline, "the waiter did not queue"
            time.sleep(0.01)
        t0 = time.monotonic_ns()
        os.kill(cluster.procs[frozen].pid, signal.SIGSTOP)
        while alive(child):
            time.sleep(0.002)
        gone = time.monotonic_ns()
        line = waiter.stdout.readline()
        waiter.wait()
        if not line.strip():
            log.seek(0)
            print(f"bench: failover with ttl {ttl}s: the waiter did not run: {log.read()}", file=sys.stderr)
            holder.kill()
            holder.wait()
            return None
        started = int(line)
        holder.wait()
        assert holder.returncode == 69, holder.returncode
        shutil.rmtree(a)
        shutil.rmtree(b)
        return (gone - t0) / 1e6, (started - t0) / 1e6
    finally:
        cluster.close()


def failover():
    print("\n### fleet: failover (holder's etcd member frozen -> waiter's child running)\n")
    print("The holder talks to one member only, which is SIGSTOPped; the waiter talks to the two")
    print("others. \"child gone\": the holder's child is dead (stop grace min(30s, ttl/3), then")
    print("KILL); \"waiter runs\": the waiter's child has started.\n")
    print("| TTL | child gone (median ms) | waiter runs (median ms) | child gone / TTL | n |")
    print("|---|---|---|---|---|")
    for ttl in TTLS:
        samples = [s for s in (failover_once(ttl) for _ in range(N_FAILOVER)) if s]
        if not samples:
            print(f"| {ttl} s | - | - | - | 0 |")
            continue
        gone = statistics.median(s[0] for s in samples)
        runs = statistics.median(s[1] for s in samples)
        print(f"| {ttl} s | {gone:.0f} | {runs:.0f} | {gone / (ttl * 1000):.2f} | {len(samples)} |")


def switches(pid):
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        with open(status) as f:
            for line in f:
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
    return total


def idle():
    cluster = Cluster(1)
    try:
        print(f"\n### fleet: idle cost (context switches of all the supervisor's threads, {IDLE_SECS} s, sleeping child)\n")
        print("| subject | wake-ups per minute |")
        print("|---|---|")
        for name, extra in [("ralph-supervise, no fleet", []),
                            ("ralph-supervise, fleet ttl 10s", ["--fleet-endpoints", cluster.urls[0], "--fleet-ttl", "10s"]),
                            ("ralph-supervise, fleet ttl 60s", ["--fleet-endpoints", cluster.urls[0], "--fleet-ttl", "60s"])]:
            ws = workspace()
            p = subprocess.Popen([FLEET, "-C", ws, "run", "--fleet-key", "bench/idle"] + extra +
                                 ["--", STAMP, "--wait-stdin"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=DEVNULL, text=True)
            p.stdout.readline()
            time.sleep(1)
            before = switches(p.pid)
            time.sleep(IDLE_SECS)
            after = switches(p.pid)
            p.stdin.close()
            p.wait()
            print(f"| {name} | {(after - before) * 60 / IDLE_SECS:.0f} |")
            shutil.rmtree(ws)
    finally:
        cluster.close()


def peak_rss(binary):
    ws = workspace()
    p = subprocess.Popen([binary, "-C", ws, "run", "--", STAMP, "--wait-stdin"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    p.stdout.readline()
    with open(f"/proc/{p.pid}/status") as f:
        rss = next(l.split(":")[1].strip() for l in f if l.startswith("VmHWM"))
    p.stdin.close()
    p.wait()
    shutil.rmtree(ws)
    return rss


def default_build():
    subjects = [("default build (this tree)", DEFAULT), ("fleet build (this tree)", FLEET)]
    if BASE:
        subjects.insert(0, ("default build (baseline)", BASE))
    ws = workspace()
    res = timed({name: [b, "-C", ws, "run", "--", "true"] for name, b in subjects}, N_ACQUIRE)
    shutil.rmtree(ws)
    print("\n### fleet: what the feature costs the default build\n")
    print("| binary | size | launch, `run -- true` (median ms) | peak RSS (VmHWM) |")
    print("|---|---|---|---|")
    for name, b in subjects:
        print(f"| {name} | {os.path.getsize(b)} bytes | {stats(res[name])[0]:.3f} | {peak_rss(b)} |")


def main():
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"Machine: {machine}, {os.cpu_count()} cores; {version}{' (quick)' if QUICK else ''}")
    for name, section in [("default", default_build), ("acquisition", acquisition),
                          ("failover", failover), ("idle", idle)]:
        if name in SECTIONS:
            section()


if __name__ == "__main__":
    main()
