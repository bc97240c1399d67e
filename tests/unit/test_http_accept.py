"""The acceptor's inline answer when the fast path itself fails (a bug of ours, not a hostile client).

A real listening socket on loopback and a real client; only the fast server behind the acceptor is a stand-in whose
``answer`` raises, since no real resolver is supposed to.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import SimpleNamespace

import pytest

from bootstrapd.events import Events
from bootstrapd.http.accept import Acceptor
from bootstrapd.http.head import Head
from bootstrapd.http.limits import Admission
from bootstrapd.http.settings import HttpSettings


class Broken:
    """What the acceptor needs of a FastServer, with an ``answer`` that raises."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        events = Events()
        settings = HttpSettings()
        self.service = SimpleNamespace(events=events, settings=settings, admission=Admission(events, settings))
        self.calls = 0

    def answer(self, head: Head, client: str) -> bytes | None:
        self.calls += 1
        raise KeyError("a bug in the resolver")


async def _ask(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)  # until the server's FIN
    writer.close()
    return data


def test_a_failing_answer_gets_a_500_and_releases_its_admission(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fast = Broken(loop)
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]
        acceptor = Acceptor(fast)  # type: ignore[arg-type]  # the stand-in has what Acceptor uses
        acceptor.listen(listener)
        try:
            request = b"GET /y000000000000.cfg HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            first = await _ask(port, request)
            second = await _ask(port, request)  # the acceptor goes on accepting after the failure
        finally:
            acceptor.close()
        for data in (first, second):
            assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), data
            assert b"Connection: close\r\n" in data
        assert fast.calls == 2
        admission = fast.service.admission
        assert admission.total == 0 and admission.per_client == {}
        assert fast.service.events.counters["http.internal_error"] == 2

    with caplog.at_level(logging.ERROR, logger="bootstrapd.http"):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.name == "bootstrapd.http" and r.levelno == logging.ERROR]
    assert len(errors) == 1, "rate limited: one message per 30 s"
    assert errors[0].exc_info is not None and "a bug in the resolver" in caplog.text
