"""Limits against slow or hostile HTTP clients, at the connection level, around aiohttp's request handler.

- Connections overall (``max_connections``: 503) and per client address (``max_connections_per_client``: 429) are
  counted as they are accepted; a connection over a limit gets its status line and is closed before anything of
  its request is read.
- A request head must arrive within ``head_timeout`` of its first byte (a client dribbling one byte a second is
  closed); an idle keep-alive connection is closed after ``keepalive_timeout`` (aiohttp's own timer, which also
  covers a connection that never sends anything).
- Header lines are capped by aiohttp's parser (``max_header_size``: 400 above it).

The fast path (:mod:`bootstrapd.http.fast`) applies the same admission and deadlines to the connections it answers
itself, and hands the others to a :class:`GuardedHandler` (:meth:`GuardedHandler.adopt`).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bootstrapd.events import Events
from bootstrapd.http.settings import HttpSettings

REFUSALS = {
    503: b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n",
    429: b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n",
}


def peer_host(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not peer:
        return ""
    host = str(peer[0])
    return host[7:] if host.startswith("::ffff:") else host


def client_key(host: str) -> bytes:
    """The per-client request rate's key of an address."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).packed
    except ValueError:
        return host.encode()


class Admission:
    """Connection counts, overall and per client address."""

    def __init__(self, events: Events, settings: HttpSettings) -> None:
        self.events = events
        self.settings = settings
        self.total = 0
        # A plain dict, not a Counter: both are on the path of every connection, and Counter's deletion is Python.
        self.per_client: dict[str, int] = {}

    def admit(self, host: str) -> int | None:
        """None when the connection may proceed (and is counted), else the status to refuse it with."""
        settings = self.settings
        if self.total >= settings.max_connections:
            self.events.count("http.refused_busy")
            return 503
        held = self.per_client.get(host, 0)
        if held >= settings.max_connections_per_client:
            self.events.count("http.refused_client_connections")
            return 429
        self.total += 1
        self.per_client[host] = held + 1
        return None

    def release(self, host: str) -> None:
        self.total -= 1
        held = self.per_client.pop(host, 0) - 1
        if held > 0:
            self.per_client[host] = held


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol with admission and a request-head deadline."""

    admission: Admission
    head_timeout: float

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.host = peer_host(transport)
        self._refused = self.admission.admit(self.host)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_request = False
        if self._refused is not None:
            assert isinstance(transport, asyncio.Transport)
            transport.write(REFUSALS[self._refused])
            transport.close()
            return
        super().connection_made(transport)

    def adopt(self, transport: asyncio.BaseTransport, host: str, head_started: float | None) -> None:
        """Take over a connection the fast path (:mod:`bootstrapd.http.fast`) admitted and began to read: no second
        admission (this handler releases it when the connection ends), and a head begun there keeps its deadline
        (``head_started``: the loop time of its first byte)."""
        self.host = host
        self._refused = None
        self._head_timer = None
        self._in_request = False
        super().connection_made(transport)
        if head_started is not None:
            self._head_timer = asyncio.get_running_loop().call_at(head_started + self.head_timeout,
                                                                  self._head_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused is not None:
            return
        self._cancel_head_timer()
        self.admission.release(self.host)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return
        if data and not self._in_request and self._head_timer is None:
            self._head_timer = asyncio.get_running_loop().call_later(self.head_timeout, self._head_expired)
        super().data_received(data)

    def request_started(self) -> None:
        self._in_request = True
        self._cancel_head_timer()

    def request_finished(self) -> None:
        self._in_request = False

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._in_request:
            return
        self.admission.events.count("http.head_timeout")
        self.force_close()
        if self.transport is not None:
            self.transport.close()


class GuardedServer(web.Server):
    """The protocol factory: every connection gets a :class:`GuardedHandler`."""

    def __init__(self, handler: Any, admission: Admission, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.admission = admission
        self.head_timeout = head_timeout

    def __call__(self) -> GuardedHandler:
        handler = GuardedHandler(self, loop=self._loop, **self._kwargs)
        handler.admission = self.admission
        handler.head_timeout = self.head_timeout
        return handler
