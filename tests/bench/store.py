"""CPU per lease of the SQLite lease store, each thread's, and its GIL hand-overs (a developer tool, issue #11).

    python -m tests.bench.store [--count N] [--rate R] [--busy US] [--loop uvloop|asyncio] [--repeat K]
    python -m tests.bench.store --batch B [--count N]   # the writer's work alone, on this thread (for callgrind)

- ``loop`` (the default): a running event loop calls :meth:`LeaseStore.commit_then` for ``--rate`` leases a second
  (new addresses, a client identifier, as perfdhcp's exchanges make them), one lease per reply as the DHCPv4 adapter
  does; the lease writer thread group-commits them into a database in a temporary folder on ``--dir``'s file system
  (a real disk: tmpfs would make the fsync free). So that the loop holds the interpreter lock as the daemon's does,
  each lease also costs the loop ``--busy`` iterations of an empty Python loop (5,000: ~50 us) between two
  GIL-releasing system calls (a datagram sent and received on a socket pair, as a DHCP exchange has its
  ``recvfrom`` and ``sendto``). Printed per lease:
  each thread's CPU (``/proc/self/task/*/schedstat``: run time in ns, not the 10 ms ticks of ``stat``), its context
  switches (``status``: voluntary and not; each one is a thread giving up the CPU, mostly for the GIL or a futex),
  the leases per commit and the commit times (median, 90th percentile, worst: a WAL checkpoint runs inside one).
  The loop's figure includes the ``--busy`` work and the socket calls: compare it A/B, at the same settings.
- ``--batch B``: ``LeaseStore._write`` of batches of B leases on the calling thread: no loop, no thread, no GIL
  contention; instruction counts under valgrind (two ``--count`` values, the difference per lease) do not move with
  the machine's load. ``--through``: the whole path instead, on a running loop with the writer thread: B
  ``commit_then`` calls, then a wait until all B replies are released (the queue, the writer's take, ``_settle``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from bootstrapd.eventloop import loop_factory
from bootstrapd.leases.store import Lease4, LeaseStore
from bootstrapd.leases.waiter import Callbacks

FIRST = int(IPv4Address("10.80.0.0"))


def leases(count: int, start: int = 0) -> list[Lease4]:
    expires = time.time() + 3600
    return [Lease4(IPv4Address(FIRST + n), (0x021500000000 + n).to_bytes(6, "big"),
                   b"\x01" + (0x021500000000 + n).to_bytes(6, "big"), expires) for n in range(start, start + count)]


def as_the_daemon() -> None:
    """The daemon's collector settings (daemon.py): what exists at start-up frozen, collections rarer. With the
    defaults a full collection over the leases built here would be a large share of the figures."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def task_stats(tid: int) -> tuple[int, int, int]:
    """(ns of CPU, voluntary context switches, involuntary ones) of one thread of this process so far."""
    with open(f"/proc/self/task/{tid}/schedstat") as f:
        ns = int(f.read().split()[0])
    switches = {}
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.endswith("ctxt_switches", 0, line.find(":")):
                switches[line.split(":")[0]] = int(line.split()[1])
    return ns, switches["voluntary_ctxt_switches"], switches["nonvoluntary_ctxt_switches"]


def spin(iterations: int) -> None:
    """A fixed amount of work, not a time: a spin to a deadline would take less CPU whenever the writer held the GIL
    meanwhile, and the loop's CPU would then fall with every hand-over instead of showing its cost."""
    for _ in range(iterations):
        pass


async def drive(store: LeaseStore, batch: list[Lease4], rate: float, busy: int) -> None:
    """Commit every lease of ``batch`` at ``rate`` a second; return once every reply has been released."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    left = len(batch)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram = bytes(300)

    def send() -> None:
        nonlocal left
        left -= 1
        if left == 0:
            finished.set_result(None)

    def failed(error: BaseException) -> None:
        if not finished.done():
            finished.set_exception(error)

    waiter = Callbacks(send, failed)

    started = time.perf_counter()
    queued = 0
    while queued < len(batch):
        due = min(len(batch), int((time.perf_counter() - started) * rate) + 1)
        while queued < due:
            a.send(datagram)
            b.recv(512)
            spin(busy)
            store.commit_then([batch[queued]], waiter, None)
            queued += 1
        await asyncio.sleep(0.0005)
    await finished
    a.close()
    b.close()


def run_loop(args: argparse.Namespace, factory: Callable[[], asyncio.AbstractEventLoop] | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        store = LeaseStore(Path(tmp) / "leases.sqlite3")
        for pragma in args.pragma:
            store.conn.execute(f"PRAGMA {pragma}")
        times: list[float] = []
        write = store._write

        def timed(items: list[object]) -> None:  # the commit times, as the writer sees them
            started = time.perf_counter()
            try:
                write(items)  # type: ignore[arg-type]
            finally:
                times.append(time.perf_counter() - started)

        store._write = timed  # type: ignore[method-assign,assignment]
        warm, batch = leases(500, args.count), leases(args.count)
        as_the_daemon()

        Stats = tuple[int, int, int]

        async def main() -> tuple[Stats, Stats, Stats, Stats, int]:
            store.start(asyncio.get_running_loop())
            await drive(store, warm, args.rate, args.busy)
            times.clear()
            assert store._thread is not None and store._thread.native_id is not None
            writer, main_tid = store._thread.native_id, threading.get_native_id()
            commits = store.commits
            w0, m0 = task_stats(writer), task_stats(main_tid)
            await drive(store, batch, args.rate, args.busy)
            w1, m1 = task_stats(writer), task_stats(main_tid)
            return w0, w1, m0, m1, store.commits - commits

        with asyncio.Runner(loop_factory=factory) as runner:
            w0, w1, m0, m1, commits = runner.run(main())
            runner.run(store.shutdown())
    n = args.count
    ms = sorted(t * 1e3 for t in times)
    return {"loop_us": (m1[0] - m0[0]) / 1e3 / n, "writer_us": (w1[0] - w0[0]) / 1e3 / n,
            "loop_cs": (m1[1] - m0[1]) / n, "writer_cs": (w1[1] - w0[1]) / n, "per_commit": n / commits,
            "loop_ics": (m1[2] - m0[2]) / n, "writer_ics": (w1[2] - w0[2]) / n,
            "slow": sum(t > 0.010 for t in times) / len(times),
            "p50_ms": statistics.median(ms), "p90_ms": ms[int(len(ms) * 0.9)], "max_ms": ms[-1]}


def run_batches(args: argparse.Namespace) -> float:
    """CPU seconds per lease of the writer's work alone, in batches of ``args.batch``."""
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        store = LeaseStore(Path(tmp) / "leases.sqlite3")
        # As many leases built whatever --count, so that the difference of two counts under valgrind is the writes'.
        batch = leases(max(args.count, 20_000))[:args.count]
        store._write(leases(args.batch, len(batch)))  # type: ignore[arg-type]
        as_the_daemon()
        started = time.thread_time()
        for first in range(0, len(batch), args.batch):
            store._write(batch[first:first + args.batch])  # type: ignore[arg-type]
        spent = time.thread_time() - started
        store.close()
    return float(spent / args.count)


def run_through(args: argparse.Namespace) -> float:
    """CPU seconds per lease of the whole process, ``commit_then`` to the release, ``args.batch`` leases at a time."""
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        store = LeaseStore(Path(tmp) / "leases.sqlite3", window=0)
        batch = leases(max(args.count, 20_000))[:args.count]

        async def commit(chunk: list[Lease4]) -> None:
            done = asyncio.get_running_loop().create_future()
            left = len(chunk)

            def send() -> None:
                nonlocal left
                left -= 1
                if left == 0:
                    done.set_result(None)

            waiter = Callbacks(send, done.set_exception)
            for lease in chunk:
                store.commit_then([lease], waiter, None)
            await done

        async def main() -> float:
            as_the_daemon()
            store.start(asyncio.get_running_loop())
            await commit(leases(args.batch, len(batch)))  # warm-up: the statements prepared, the file grown
            started = time.process_time()
            for first in range(0, len(batch), args.batch):
                await commit(batch[first:first + args.batch])
            spent = time.process_time() - started
            await store.shutdown()
            return spent

        return float(asyncio.run(main()) / args.count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40_000)
    parser.add_argument("--rate", type=float, default=10_000, help="leases per second (one per DHCPv4 exchange)")
    parser.add_argument("--busy", type=int, default=5000,
                        help="iterations of an empty Python loop on the event loop per lease (5,000: ~50 us)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--batch", type=int, default=0, help="only the writer's work, in batches of this size")
    parser.add_argument("--pragma", action="append", default=[],
                        help="run PRAGMA this on the writer's connection first (wal_autocheckpoint=10000, say)")
    parser.add_argument("--through", action="store_true", help="with --batch: commit_then to the release")
    parser.add_argument("--dir", default=os.environ.get("BENCH_STORE_DIR", "/var/tmp"))
    args = parser.parse_args()
    for _ in range(args.repeat):
        if args.batch and args.through:
            print(f"commit_then to release, batches of {args.batch}: {run_through(args) * 1e6:.2f} us per lease")
            continue
        if args.batch:
            print(f"writer alone, batches of {args.batch}: {run_batches(args) * 1e6:.2f} us per lease")
            continue
        r = run_loop(args, loop_factory(args.loop))
        print(f"{args.loop} {args.rate:.0f}/s busy {args.busy}: loop {r['loop_us']:.1f} us "
              f"{r['loop_cs']:.2f}+{r['loop_ics']:.2f} cs, writer {r['writer_us']:.1f} us {r['writer_cs']:.2f}+"
              f"{r['writer_ics']:.2f} cs per lease; "
              f"{r['per_commit']:.0f} leases/commit, commit {r['p50_ms']:.2f}/{r['p90_ms']:.2f}/"
              f"{r['max_ms']:.2f} ms (p50/p90/max), {r['slow']:.1%} over 10 ms; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
