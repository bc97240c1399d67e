"""The daemon's loop: uvloop when installed, asyncio's own when forced or when uvloop is missing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bootstrapd import eventloop


async def _which() -> str:
    loop = asyncio.get_running_loop()
    # Work the daemon does on its loop: a reader, a thread waking the loop, a timer.
    done = loop.create_future()
    loop.call_later(0.01, lambda: loop.call_soon_threadsafe(done.set_result, None))
    await done
    await loop.run_in_executor(None, lambda: None)
    return eventloop.name(loop)


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    assert eventloop.run(_which()) == "uvloop"
    # The global policy is untouched: other code (pyroute2's private loops) still gets asyncio's own.
    assert eventloop.name(asyncio.new_event_loop()) == "asyncio"


def test_forced_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(eventloop.ENV, "asyncio")
    assert eventloop.loop_factory() is None
    assert eventloop.run(_which()) == "asyncio"


def test_standard_loop_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(eventloop.ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.loop_factory() is None
    assert eventloop.run(_which()) == "asyncio"
