"""The daemon's loop: `bootstrapd run` picks uvloop when installed (``auto``, its default); asyncio's own on request."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bootstrapd import eventloop


async def _which() -> str:
    loop = asyncio.get_running_loop()
    # Work the daemon does on its loop: a timer, a thread waking the loop, the default executor.
    done = loop.create_future()
    loop.call_later(0.01, lambda: loop.call_soon_threadsafe(done.set_result, None))
    await done
    await loop.run_in_executor(None, lambda: None)
    return eventloop.name(loop)


def test_the_standard_loop_by_default() -> None:
    assert eventloop.loop_factory() is None
    assert eventloop.run(_which()) == "asyncio"


@pytest.mark.parametrize("choice", ["uvloop", "auto"])
def test_uvloop_when_asked_for(choice: str) -> None:
    # uvloop is a development dependency: installed wherever the tests run.
    assert eventloop.run(_which(), eventloop.loop_factory(choice)) == "uvloop"
    # The global policy is untouched: other code (pyroute2's private loops) still gets asyncio's own.
    assert eventloop.name(asyncio.new_event_loop()) == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.loop_factory("auto") is None
    assert eventloop.run(_which(), eventloop.loop_factory("auto")) == "asyncio"
    with pytest.raises(ImportError):
        eventloop.loop_factory("uvloop")


def test_the_daemon_runs_on_uvloop_by_default() -> None:
    # `bootstrapd run` without --event-loop: uvloop when installed (it is a dependency), asyncio's own otherwise.
    from bootstrapd.cli import build_parser

    args = build_parser().parse_args(["run", "--config", "/etc/bootstrapd/bootstrapd.toml"])
    assert args.event_loop == "auto"
    assert eventloop.run(_which(), eventloop.loop_factory(args.event_loop)) == "uvloop"
