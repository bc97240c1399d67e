"""``python -m tests.bench.profiled OUT run --config ...``: the daemon with cProfile switched on and off by signals.

SIGUSR1 starts profiling the event-loop thread, SIGUSR2 stops it and writes the statistics to OUT, so a profile
covers the measured workload only, not start-up (tests/bench/profile.py sends both). The clock is the thread's CPU
time, not the wall clock: on a shared machine a preemption would otherwise be charged to whatever function was
running (a ``sendto`` that woke the client, say). OUT ``-``: no profiler. ``--uvloop`` before OUT: the daemon on
uvloop's event loop (to measure that candidate alone). Not for production.
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType
from typing import Any

from bootstrapd.cli import main


def run() -> int:
    if sys.argv[1] == "--uvloop":
        import asyncio

        import uvloop

        sys.argv.pop(1)
        # Only the daemon's own loop: a global uvloop policy would also give pyroute2's private loops (in executor
        # threads) uvloop, which cannot open netlink datagram endpoints.
        def run_on_uvloop(main: Any, *, debug: bool | None = None) -> Any:
            with asyncio.Runner(debug=debug, loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)

        asyncio.run = run_on_uvloop
    out = sys.argv.pop(1)
    if out == "-":
        sys.argv[0] = "bootstrapd"
        return main()
    profiler = cProfile.Profile(time.thread_time)

    def start(_sig: int, _frame: FrameType | None) -> None:
        profiler.enable()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv[0] = "bootstrapd"
    code = main()
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(run())
