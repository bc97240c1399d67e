"""The daemon's event loop: uvloop when installed (``run --event-loop auto``, the default; uvloop is a dependency),
asyncio's own otherwise or on request (``run --event-loop asyncio``).

Measured (README, "Where the time goes" and the HTTP benchmark): on uvloop a lock-step TFTP block takes 4% fewer
instructions, a DHCPv4 exchange at a low rate 12% fewer, and with the HTTP fast path a boot-storm request about 30%
less CPU than on the standard loop (1.5x the requests/s). Everything the daemon does works on both loops
(tests/lab/test_eventloop.py runs every service on both); the rest of the suite runs the default.

Only the daemon's own loop is ever uvloop, never the global policy: pyroute2 runs private asyncio loops in executor
threads for its netlink sockets, and uvloop cannot open a netlink datagram endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES = ("asyncio", "uvloop", "auto")
Factory = Callable[[], asyncio.AbstractEventLoop]


def loop_factory(choice: str = "asyncio") -> Factory | None:
    """The loop constructor for ``choice``; None: asyncio's own. Raises ImportError for ``uvloop`` without uvloop
    (``auto`` then falls back to asyncio's own)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "auto":
            return None
        raise
    factory: Factory = uvloop.new_event_loop
    return factory


def name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: for the start-up log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], factory: Factory | None = None) -> T:
    """``asyncio.run(main)`` on the loop ``factory`` makes (asyncio's own when None)."""
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
