"""Whether an HTTP server keeps its core busy during bench-http's storm (a developer tool, not a test).

    python -m tests.bench.httpprobe [bootstrapd|bootstrapd-nojournal|nginx|...] [--seconds N]

bench-http's throughput ratio can be worse than its CPU-per-request ratio; this says why. It runs one server of
bench-http (:class:`tests.bench.http.Server`, the same namespaces, files and wrk storm) and reports, over the storm:

- every 0.5 s: the server's CPU utilisation (utime+stime over wall time, from /proc) and its listening socket's
  accept queue (``ss -ltn`` Recv-Q against the backlog) and open descriptors (connections held);
- per thread: run time, run-queue wait (``/proc/<tid>/schedstat``: runnable but not on a CPU) and voluntary /
  involuntary context switches (a thread that sleeps with work queued shows voluntary ones and idle CPU);
- the machine's CPU split (``/proc/stat``: user, system, softirq, idle) and the appliance namespace's TCP counters
  (``nstat``: ListenOverflows/ListenDrops when the accept queue overflows).

A server with a full accept queue, no voluntary switches and a run-queue wait is CPU-bound and shares the CPUs
with wrk (and the kernel's work for both sides). Voluntary switches are sleeps: in ``epoll_wait`` (``perf record -e
sched:sched_switch -g -t <tid>``), with connections accepted whose request wrk has not written yet, wrk itself is
short of CPU; anywhere else (a futex: the GIL, a lock) the server stalls.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench import http as bench
from tests.bench import rounds

_STAT_NAMES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def threads(pids: list[int]) -> dict[str, tuple[int, ...]]:
    """tid -> (run ns, run-queue wait ns, voluntary, involuntary switches)."""
    out: dict[str, tuple[int, ...]] = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                ran, waited = rounds.schedstat(pid, tid)
                run, wait = int(ran * 1e9), int(waited * 1e9)
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except OSError:
                continue  # the thread ended
            vol = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M)
            invol = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M)
            out[tid] = (run, wait, int(vol.group(1)) if vol else 0, int(invol.group(1)) if invol else 0)
    return out


def machine() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def probe(kind: str, seconds: int, connections: int) -> None:
    from tests.lab.netns import lab

    with tempfile.TemporaryDirectory(prefix="bench-httpprobe-") as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        bench.make_tree(work / "root")
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.10/24")
        server = bench.Server(kind, ap, work)
        try:
            pids = server.pids
            samples: list[str] = []
            done = threading.Event()

            def sample() -> None:
                t0, c0 = time.monotonic(), bench.cpu_of(pids)
                while not done.wait(0.5):
                    t1, c1 = time.monotonic(), bench.cpu_of(pids)
                    listen = ap.run(["ss", "-Hltn", "sport = :80"]).stdout.split("\n", 1)[0].split()
                    fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)
                    samples.append(f"  {c1 - c0:5.2f} CPU s over {t1 - t0:4.2f} s = {(c1 - c0) / (t1 - t0):4.0%};"
                                   f" accept queue {listen[1]}/{listen[2]}; {fds} descriptors")
                    t0, c0 = t1, c1

            ap.run(["nstat", "-n"])  # counters from here
            before, stat0 = threads(pids), machine()
            sampler = threading.Thread(target=sample)
            sampler.start()
            t0, c0 = time.monotonic(), bench.cpu_of(pids)
            storm = bench.wrk(phone, work, seconds, connections)
            t1, c1 = time.monotonic(), bench.cpu_of(pids)
            after, stat1 = threads(pids), machine()
            done.set()
            sampler.join()
            print(f"{kind}: {storm['rps']:,.0f} requests/s, {1e6 * (c1 - c0) / storm['requests']:.1f} us CPU per"
                  f" request, utilisation {(c1 - c0) / (t1 - t0):.0%} over the storm ({bench.load()})")
            print("\n".join(samples))
            for tid, now in after.items():
                if tid in before:
                    run, wait, vol, invol = (b - a for a, b in zip(before[tid], now, strict=True))
                    print(f"  thread {tid}: ran {run / 1e6:.0f} ms, runnable but waiting {wait / 1e6:.0f} ms,"
                          f" {vol} voluntary / {invol} involuntary switches")
            delta = [b - a for a, b in zip(stat0, stat1, strict=True)]
            cpus = os.cpu_count() or 1
            total = max(sum(delta), 1)
            shares: dict[str, Any] = {n: f"{cpus * d / total:.2f}" for n, d in zip(_STAT_NAMES, delta, strict=True)}
            print(f"  machine (CPUs of {cpus}): {shares}")
            counters = ap.run(["nstat", "-z"]).stdout.splitlines()
            wanted = ("TcpPassiveOpens", "TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPTimeouts")
            print("  nstat:", ", ".join(" ".join(c.split()[:2]) for c in counters if c.startswith(wanted)) or "-")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("server", nargs="?", default="bootstrapd")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    probe(args.server, args.seconds, args.connections)


if __name__ == "__main__":
    main()
