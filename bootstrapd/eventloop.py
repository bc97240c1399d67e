"""The daemon's event loop: uvloop when it is installed, else asyncio's own.

uvloop runs the same asyncio code with a loop written in C (libuv): measured here (callgrind, medians of three
runs), 12% fewer instructions per DHCPv4 exchange at a low rate and 4% fewer per lock-step TFTP block (README,
"Where the time goes"). Everything the daemon does works on both loops; ``BOOTSTRAPD_EVENT_LOOP=asyncio`` in the
environment forces asyncio's own (to rule the loop out when debugging), and a missing uvloop falls back to it.

Only the daemon's own loop is uvloop, never the global policy: pyroute2 runs private asyncio loops in executor
threads for its netlink sockets, and uvloop cannot open a netlink datagram endpoint.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "BOOTSTRAPD_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default (forced by the environment, or no uvloop)."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: for the start-up log line."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` chooses."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
