"""The fast path of the HTTP adapter: the common request answered without aiohttp's per-connection machinery.

A boot storm is thousands of phones each opening a connection, asking for one small file and closing. aiohttp
spends most of its CPU per request on what surrounds the answer (a RequestHandler with its start() task and
timers, the parser, a request and a response object, the writer), so every plain-HTTP connection first gets a
:class:`FastConnection`, a small ``asyncio.Protocol``. It reads the request head itself (:mod:`bootstrapd.http.head`)
and answers, on the spot, a request it can answer completely:

- GET or HEAD, HTTP/1.0 or 1.1, no body (no Content-Length, Transfer-Encoding or Expect), no Range or If-Range,
  no Upgrade; a path that decodes (:func:`bootstrapd.http.paths.decode_path`), names no registered route (status
  page, API, ``/metrics``) and lies in no ``[[auth]]`` folder;
- a file the resolver opens without waiting (:meth:`bootstrapd.provisioning.work.FileWork.open_nowait`: the hot
  cache or the page cache) and holds in memory, of at most :data:`FAST_MAX` bytes; or a refusal of the resolver.

The answer is the one aiohttp's path gives (the same resolver call, the same headers, ETag, Last-Modified, 304,
refusal statuses from :mod:`bootstrapd.http.files`, the per-client request rate: 429) and ends in the same
``http.request`` event (:mod:`bootstrapd.http.event`). Keep-alive and ``Connection: close`` are honoured, and
pipelined heads are answered in order.

Anything else is handed to aiohttp on the same connection, with the bytes read so far: a
:class:`bootstrapd.http.limits.GuardedHandler` is made for the transport and becomes its protocol. That covers
PUT/POST, ranges, auth, routes, large or cold files, and every head this parser does not take (aiohttp then
answers 400 to what is malformed, as before). HTTPS connections go to aiohttp from the start.

The plain-HTTP listeners are read by :mod:`bootstrapd.http.accept`, which answers with :meth:`FastServer.answer`
a request complete at accept that asks to close, without a transport, and gives every other connection one with a
:class:`FastConnection` fed what it read.

Limits: the connection is admitted (:class:`bootstrapd.http.limits.Admission`) when it is accepted (or made, for a
listener of ``loop.create_server``), exactly once whichever path answers it. Deadlines (the head within
``head_timeout`` of its first byte, ``keepalive_timeout`` idle, ``send_timeout`` for an answer the client does not
take) are checked by one periodic sweep over the fast connections (:class:`FastServer`), not by a timer per
connection.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

from bootstrapd.http.event import emit_request
from bootstrapd.http.files import VALIDATORS, Outcome, file_headers, not_modified, refusal_parts
from bootstrapd.http.head import BadHead, Head, head_end, may_take, parse_head
from bootstrapd.http.limits import REFUSALS, GuardedServer, client_key, peer_host
from bootstrapd.http.paths import BadPath, decode_path
from bootstrapd.provisioning.paths import Refused
from bootstrapd.provisioning.resolver import Opened

if TYPE_CHECKING:
    from bootstrapd.http.adapter import HttpService

FAST_MAX = 0x10000  # larger files go to aiohttp's path, which bounds every wait for the client (send_timeout)
HEAD_LIMIT = 0x10000  # a head not complete within this many bytes goes to aiohttp (which refuses long lines)
SWEEP = 1.0  # seconds between sweeps at most (shorter when a timeout is short)
SERVER = "bootstrapd"
BLOCKS = 4096  # files whose rendered header lines are remembered

# A field's presence sends the request to aiohttp's path: a body, a range, a protocol switch.
HAND_OVER = frozenset(("content-length", "transfer-encoding", "expect", "range", "if-range", "upgrade"))

_REASONS = {s.value: s.phrase for s in HTTPStatus}


class FastServer:
    """The protocol factory of the plain-HTTP listeners: a :class:`FastConnection` per connection, the sweep over
    them, and aiohttp's server (``web``) for the connections handed over."""

    def __init__(self, service: HttpService, web: GuardedServer) -> None:
        self.service = service
        self.web = web
        self.loop = asyncio.get_running_loop()
        self.connections: set[FastConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._date_second = -1
        self._date = ""
        self._blocks: dict[tuple[str, str, float, bool, int], tuple[str, str]] = {}
        self.closed = False

    def __call__(self) -> FastConnection:
        return FastConnection(self)

    # -- deadlines ---------------------------------------------------------------------------------------------

    def track(self, conn: FastConnection) -> None:
        self.connections.add(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._interval(), self._sweep)

    def untrack(self, conn: FastConnection) -> None:
        self.connections.discard(conn)

    def _interval(self) -> float:
        settings = self.service.settings
        return min(SWEEP, settings.head_timeout / 4, settings.keepalive_timeout / 4, settings.send_timeout / 4)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.expired(now)
        if self.connections:
            self._sweeper = self.loop.call_later(self._interval(), self._sweep)

    def close(self) -> None:
        """Close every connection still on the fast path (stopping); aiohttp's own are shut down by aiohttp."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.connections):
            conn.close()

    # -- answers -----------------------------------------------------------------------------------------------

    def date(self) -> str:
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = email.utils.formatdate(now, usegmt=True)
        return self._date

    def answer(self, head: Head, client: str) -> bytes | None:
        """The whole answer to ``head`` (and its ``http.request`` event), or None when aiohttp must answer it."""
        if head.method not in ("GET", "HEAD"):
            return None
        if not HAND_OVER.isdisjoint(head.index):
            return None
        try:
            path = decode_path(head.target)
        except BadPath:
            return None
        service = self.service
        if service.ctx.http_routes and service.ctx.http_routes.match(path) is not None:
            return None
        name = path.lstrip("/")
        if not name:
            return None
        work = service.files.work
        resolver = work.resolver()
        if resolver.needs_auth(name):
            return None
        started = self.loop.time()
        outcome = Outcome()
        try:
            opened = work.open_nowait(name, client, None)
        except Refused as exc:
            if not self._rate_ok(client, started):
                return self._rate_limited(head, client, outcome, started)
            outcome.outcome = exc.reason.value
            status, headers, text = refusal_parts(exc, resolver.uploads is not None and resolver.uploads.enabled)
            body = text.encode()
            headers["Content-Type"] = "text/plain; charset=utf-8"
            return self._finish(head, client, outcome, started, status, _block(headers, len(body)), body)
        if opened is None:
            return None  # on the disk: aiohttp's path reads it in a worker
        try:
            data = opened.data
            if data is None or opened.size > FAST_MAX:
                return None
            if not self._rate_ok(client, started):
                return self._rate_limited(head, client, outcome, started)
            outcome.file_mac = opened.mac
            if opened.origin != "static":
                outcome.extra["origin"] = opened.origin
            full, validators = self._file_blocks(opened)
            if not_modified(head.get, opened):
                outcome.outcome = "not_modified"
                return self._finish(head, client, outcome, started, 304, validators, None)
            outcome.bytes = len(data) if head.method == "GET" else 0
            return self._finish(head, client, outcome, started, 200, full, data)
        finally:
            opened.close()

    def _rate_ok(self, client: str, now: float) -> bool:
        service = self.service
        return service.settings.rate_limit <= 0 or service.rate.allow(client_key(client), now)

    def _rate_limited(self, head: Head, client: str, outcome: Outcome, started: float) -> bytes:
        outcome.outcome = "rate_limited"
        return self._finish(head, client, outcome, started, 429, _RATE_LIMITED, b"rate_limited\n")

    def _file_blocks(self, opened: Opened) -> tuple[str, str]:
        """The header lines of a file's 200 and of its 304 (:func:`bootstrapd.http.files.file_headers`), rendered
        once per version of the file rather than per request."""
        key = (opened.name, opened.etag, opened.mtime, opened.mac is not None, opened.size)
        blocks = self._blocks.get(key)
        if blocks is None:
            headers = file_headers(opened)
            blocks = (_block(headers, opened.size), _block({k: v for k, v in headers.items() if k in VALIDATORS}))
            if len(self._blocks) >= BLOCKS:
                self._blocks.clear()
            self._blocks[key] = blocks
        return blocks

    def _finish(self, head: Head, client: str, outcome: Outcome, started: float, status: int, block: str,
                body: bytes | None) -> bytes:
        """The answer's bytes, as aiohttp would write them: the status line, ``block`` (the header lines with
        Content-Length, except on a 304, and Server), Date, and Connection where the version's default does not
        hold; the body unless the method is HEAD."""
        keep_alive = head.keep_alive
        connection = ("" if keep_alive else "Connection: close\r\n") if head.minor else \
            ("Connection: keep-alive\r\n" if keep_alive else "")
        text = f"HTTP/1.{head.minor} {status} {_REASONS[status]}\r\n{block}Date: {self.date()}\r\n{connection}\r\n"
        out = text.encode("latin-1")
        if body is not None and head.method == "GET":
            out += body
        emit_request(self.service.events, client, head.method, head.target, status, outcome,
                     self.loop.time() - started, False, head.index.get("user-agent"))
        return out


def _block(headers: dict[str, str], length: int | None = None) -> str:
    lines = [f"{key}: {value}\r\n" for key, value in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}\r\n")
    lines.append(f"Server: {SERVER}\r\n")
    return "".join(lines)


_RATE_LIMITED = _block({"Retry-After": "1", "Content-Type": "text/plain; charset=utf-8"}, len(b"rate_limited\n"))


class FastConnection(asyncio.Protocol):
    """One plain-HTTP connection until it is closed or handed to aiohttp."""

    def __init__(self, server: FastServer, host: str | None = None, pending: bytes = b"", *,
                 hand_over: bool = False, rest: bytes = b"") -> None:
        """A connection of a listener's (``host`` None: admitted when made), or one the acceptor
        (:mod:`bootstrapd.http.accept`) admitted for ``host`` and began: ``pending``, the bytes it read (to serve,
        or with ``hand_over`` to give to aiohttp at once), or ``rest``, the part of its answer the socket did not
        take (sent, then the connection closes)."""
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.admitted = host is not None
        self.host = host or ""
        self.pending = pending
        self.hand_over = hand_over
        self.rest = rest
        self.made = False
        self.buffer = b""
        self.deadline = 0.0  # loop time: the sweep acts on the connection from then on
        self.head_started: float | None = None  # loop time of the first byte of a head not complete yet
        self.refused = False
        self.handed = False
        self.closing = False
        self.paused = False  # the transport's write buffer is full: read no more requests until it drains
        self.unsent = 0  # bytes the transport held at the last look (send_timeout: progress or not)
        self.idle_since = 0.0  # loop time of the last answer (keepalive_timeout)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports: not subclasses, same methods
        server = self.server
        if not self.admitted:
            self.host = peer_host(transport)
            refused = server.service.admission.admit(self.host)
            if refused is not None:
                self.refused = True
                self.transport.write(REFUSALS[refused])
                self.transport.close()
                return
        self.idle_since = server.loop.time()
        self.deadline = self.idle_since + server.service.settings.keepalive_timeout
        server.track(self)
        if self.rest:
            self.transport.write(self.rest)
            self.rest = b""
            self.closing = True
            self.transport.close()
            self._watch_send()
        elif self.hand_over:
            self._hand_over(self.pending)
        elif self.pending:
            pending, self.pending = self.pending, b""
            self.data_received(pending)
        if server.closed and not self.handed:
            self.close()  # made after the service began to stop

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.refused or self.handed:
            return
        self.server.untrack(self)
        self.server.service.admission.release(self.host)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.refused or self.handed or self.closing:
            return
        self.buffer = self.buffer + data if self.buffer else data
        if not self.paused:
            self._serve()

    def _serve(self) -> None:
        server = self.server
        settings = server.service.settings
        buf = self.buffer
        transport = self.transport
        assert transport is not None
        while buf:
            end = head_end(buf)
            if end < 0:
                if len(buf) > HEAD_LIMIT or not may_take(buf):
                    self._hand_over(buf)
                    return
                if self.head_started is None:
                    self.head_started = server.loop.time()
                    self.deadline = self.head_started + settings.head_timeout
                self.buffer = buf
                return
            try:
                head = parse_head(buf[:end], settings.max_header_size)
            except BadHead:
                self._hand_over(buf)
                return
            answer = server.answer(head, self.host)
            if answer is None:
                self._hand_over(buf)
                return
            transport.write(answer)
            buf = buf[end:]
            self.head_started = None
            if not head.keep_alive:
                self.buffer = b""
                self.closing = True
                transport.close()
                self._watch_send()
                return
            if self.paused:
                self.buffer = buf
                self._watch_send()
                return
        self.buffer = b""
        self.idle_since = server.loop.time()
        self.deadline = self.idle_since + settings.keepalive_timeout
        self._watch_send()

    def _watch_send(self) -> None:
        """An answer the socket did not take at once: the client must take bytes of it within send_timeout."""
        assert self.transport is not None
        unsent = self.transport.get_write_buffer_size()
        if unsent:
            self.unsent = unsent
            self.deadline = self.server.loop.time() + self.server.service.settings.send_timeout

    def _hand_over(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        self.handed = True
        self.server.untrack(self)
        self.server.service.events.count("http.handed_over")
        handler = self.server.web()
        handler.adopt(transport, self.host, self.head_started)
        transport.set_protocol(handler)
        handler.data_received(data)

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None and not self.closing:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is None or self.closing or self.handed:
            return
        self.transport.resume_reading()
        if self.buffer:
            self._serve()

    def expired(self, now: float) -> None:
        """The sweep found the deadline passed: a head not complete in time, an idle keep-alive connection, or an
        answer not taken (unless the client took some of it since the last look: a new deadline)."""
        transport = self.transport
        if transport is None:
            return
        events = self.server.service.events
        settings = self.server.service.settings
        unsent = transport.get_write_buffer_size()
        if unsent:
            if not self.unsent or unsent < self.unsent:  # first seen, or the client took some: its time anew
                self.unsent = unsent
                self.deadline = now + settings.send_timeout
                return
            events.count("http.send_timeout")
            transport.abort()
            return
        self.unsent = 0
        if self.closing:
            return  # flushed and closing: connection_lost follows
        if self.head_started is not None:
            events.count("http.head_timeout")
        elif now < self.idle_since + settings.keepalive_timeout:
            self.deadline = self.idle_since + settings.keepalive_timeout  # the answer was taken: idle from here
            return
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
