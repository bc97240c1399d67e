"""``python -m tests.bench.profiled OUT run --config ...``: the daemon with cProfile switched on and off by signals.

SIGUSR1 starts profiling the event-loop thread, SIGUSR2 stops it and writes the statistics to OUT, so a profile
covers the measured workload only, not start-up (tests/bench/profile.py sends both). The clock is the thread's CPU
time, not the wall clock: on a shared machine a preemption would otherwise be charged to whatever function was
running (a ``sendto`` that woke the client, say). Not for production.
"""

from __future__ import annotations

import cProfile
import signal
import sys
import time
from types import FrameType

from bootstrapd.cli import main


def run() -> int:
    out = sys.argv.pop(1)
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
