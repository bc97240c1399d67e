"""Where the daemon's lock-sharing threads run: the event loop and its writer threads together on one CPU.

The event loop, the lease store's writer and the journal's writer take turns on one interpreter lock: they never run
Python at the same time. Left to the scheduler they are spread over the CPUs, and every hand-over of the lock between
them (several per group commit) is a wake-up of another CPU, which on a virtual machine is an inter-processor
interrupt to a virtual CPU that had gone idle; the CPU they leave half-used is the one a second program (a relay, a
packet capture, the benchmark's client) wanted. Measured (README, "The event loop's CPU"): DHCPv4 at 11,000 DORA/s,
72 -> 57 us of CPU per exchange, and 8-19% of the exchanges lost -> 0.7-2.5%.

``server.cpu``: ``"auto"`` (the default) pins those threads to the CPU the daemon's main thread runs on when it
starts; a number pins them to that CPU; ``"off"`` leaves every thread to the scheduler. Threads that work outside
the lock (the file readers, the default executor) and the worker processes (TFTP transfer workers, the capture
recorder) keep the whole CPU set the daemon was started with: they call :func:`release` when they start, and the
set travels to worker processes in :data:`ENV`.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("bootstrapd")

AUTO = "auto"
OFF = "off"
Setting = int | str  # a CPU number, AUTO or OFF
# The daemon's CPU set before pinning, e.g. "0,1": what its worker processes take back (they inherit the pin).
ENV = "BOOTSTRAPD_CPUS"


def parse(value: object) -> Setting:
    """``server.cpu`` from the configuration file (a ValueError names what is wrong)."""
    if isinstance(value, bool):
        raise ValueError("must be \"auto\", \"off\" or a CPU number, not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be \"auto\", \"off\" or a CPU number (0 or more), not {value}")
        return value
    if value in (AUTO, OFF):
        return str(value)
    raise ValueError(f"must be \"auto\", \"off\" or a CPU number, not {value!r}")


def current() -> int | None:
    """The CPU the calling thread last ran on (field 39 of /proc/thread-self/stat), None if unknown."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            stat = f.read()
        # The command name (field 2) may hold spaces and parentheses: the fields after it follow its last ')'.
        return int(stat[stat.rindex(b")") + 2:].split()[36])
    except (OSError, ValueError, IndexError):
        return None


def choose(setting: Setting, allowed: set[int], running_on: int | None) -> int | None:
    """The CPU to pin to, or None (not pinned: ``off``, a single allowed CPU, or the current one unknown).
    Raises ValueError when a configured CPU is not one this process may use."""
    if isinstance(setting, int) and setting not in allowed:
        raise ValueError(f"server.cpu = {setting}: not one of the CPUs this process may use ({format_set(allowed)})")
    if setting == OFF or len(allowed) <= 1:
        return None
    if isinstance(setting, int):
        return setting
    if running_on in allowed:
        return running_on
    return min(allowed) if running_on is None else None


def format_set(cpus: set[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def pin(setting: Setting) -> int | None:
    """Pin the calling thread (the daemon's main thread, before it starts any other) per ``setting``; threads it
    starts from now on inherit the pin. Returns the CPU, or None when nothing was pinned."""
    allowed = os.sched_getaffinity(0)
    cpu = choose(setting, allowed, current())
    if cpu is None:
        return None
    os.environ[ENV] = format_set(allowed)
    os.sched_setaffinity(0, {cpu})
    return cpu


def release() -> None:
    """In a thread or worker process that does not share the loop's lock: take back the daemon's whole CPU set."""
    value = os.environ.get(ENV)
    if not value:
        return
    try:
        os.sched_setaffinity(0, {int(cpu) for cpu in value.split(",")})
    except (OSError, ValueError) as exc:  # a CPU gone offline since the start: stay where we are
        log.debug("cannot take back CPUs %s: %s", value, exc)
