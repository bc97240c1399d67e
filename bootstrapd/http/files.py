"""The provisioning tree over HTTP: GET/HEAD with validators and ranges, PUT/POST of phone uploads.

Everything about what a name means is the resolver's; this module only translates: the request into
(name, client, user), the :class:`Opened` file into headers and a body, a :class:`Refused` reason into a status.
Files are opened, streamed and stored through :class:`FileWork`: a file not in memory is read by a worker thread
while the loop serves everyone else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import functools
import mimetypes
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import BodyPartReader, web

from bootstrapd.http.ranges import Unsatisfiable, parse_ranges
from bootstrapd.provisioning.paths import Reason, Refused
from bootstrapd.provisioning.resolver import Opened, Resolver
from bootstrapd.provisioning.sendfile import SendTimeout, SocketSender, socket_of
from bootstrapd.provisioning.uploads import UploadName
from bootstrapd.provisioning.work import FileWork

STATUS = {
    Reason.NOT_FOUND: 404,
    Reason.NOT_REGULAR: 404,  # a folder, FIFO or device: nothing to download, and no reason to say which
    Reason.ABSOLUTE: 404,
    Reason.ESCAPE: 403,
    Reason.DENIED: 403,
    Reason.NOT_OWNER: 403,
    Reason.NOT_ALLOWED: 403,
    Reason.PROVISIONED: 403,
    Reason.BAD_NAME: 400,
    Reason.EMPTY: 400,
    Reason.AUTH_REQUIRED: 401,
    Reason.UPLOAD_DISABLED: 405,
    Reason.TOO_LARGE: 413,
    Reason.EXISTS: 409,
}

TYPES = {".cfg": "text/plain", ".boot": "text/plain", ".xml": "application/xml", ".rom": "application/octet-stream",
         ".bin": "application/octet-stream", ".enc": "application/octet-stream", ".log": "text/plain"}

HeaderGetter = Callable[[str], str | None]  # a request's field by name (case-insensitive), or None

READ_METHODS = ("GET", "HEAD")
WRITE_WAIT_ABOVE = 0x10000  # aiohttp's StreamWriter waits for the transport once this many bytes went unwaited
WRITE_METHODS = ("PUT", "POST")


@dataclass
class Outcome:
    """What one request came to, for its ``http.request`` event."""

    outcome: str = "served"
    bytes: int = 0
    user: str | None = None
    file_mac: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def content_type(name: str) -> str:  # the names of files that exist: once each, not per request (mimetypes is slow)
    ext = os.path.splitext(name)[1].lower()
    return TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def http_date(ts: float) -> str:
    return _http_date(int(ts))


@functools.lru_cache(maxsize=4096)
def _http_date(seconds: int) -> str:  # a tree's files share few mtimes: formatted once each, not per request
    return email.utils.formatdate(seconds, usegmt=True)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or any(ord(c) < 0x20 for c in decoded):
        return None
    return user, password


def refusal_parts(exc: Refused, uploads_on: bool) -> tuple[int, dict[str, str], str]:
    """The status, headers and text body a refusal is answered with (aiohttp's path and the fast path)."""
    status = STATUS.get(exc.reason, 403)
    headers: dict[str, str] = {}
    if status == 401:
        realm = str(exc).split(": ", 1)[-1].replace('"', "")
        headers["WWW-Authenticate"] = f'Basic realm="{realm}", charset="UTF-8"'
    if status == 405:
        headers["Allow"] = ", ".join(READ_METHODS + (WRITE_METHODS if uploads_on else ()))
    return status, headers, f"{exc.reason.value}\n"


def refusal(exc: Refused, outcome: Outcome, uploads_on: bool) -> web.Response:
    outcome.outcome = exc.reason.value
    status, headers, text = refusal_parts(exc, uploads_on)
    return web.Response(status=status, text=text, headers=headers)


def file_headers(opened: Opened) -> dict[str, str]:
    """The headers of a file's 200 (and, of them, :data:`VALIDATORS` in its 304)."""
    headers = {
        "Content-Type": content_type(opened.name),
        "Last-Modified": http_date(opened.mtime),
        "ETag": opened.etag,
        "Accept-Ranges": "bytes",
    }
    if opened.mac is not None:
        headers["Cache-Control"] = "private, no-store"  # a phone's own file holds its credentials
    return headers


VALIDATORS = ("ETag", "Last-Modified", "Cache-Control")


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    # Weak comparison (RFC 9110 13.1.2): W/ prefixes do not matter.
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags


def not_modified(header: HeaderGetter, opened: Opened) -> bool:
    """Whether the request's validators (``header(name)``: a field's value or None) say the client's copy is
    current: If-None-Match (which wins), else If-Modified-Since."""
    inm = header("If-None-Match")
    if inm is not None:
        return _etag_matches(inm, opened.etag)
    ims = header("If-Modified-Since")
    if ims is not None:
        try:
            since = email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(opened.mtime) <= since
    return False


def _if_range_ok(request: web.BaseRequest, opened: Opened) -> bool:
    value = request.headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == opened.etag  # strong comparison only
    try:
        return int(opened.mtime) == int(email.utils.parsedate_to_datetime(value).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


class FileHandler:
    def __init__(self, work: FileWork, send_timeout: float = 30.0, on_stall: Callable[[], None] | None = None) -> None:
        self.work = work
        self.on_stall = on_stall  # told when a client stopped reading a body and was closed
        self.send_timeout = send_timeout  # seconds a client may take no byte of a body before it is closed
        self.resolver = work.resolver
        self._verifying = asyncio.Semaphore(2)  # scrypt runs: bounded CPU and memory

    async def user(self, request: web.BaseRequest, name: str) -> str | None:
        """The verified user of the request, when the name lies in an [[auth]] folder and the credentials fit."""
        resolver = self.resolver()
        if not resolver.needs_auth(name):
            return None
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is None:
            return None
        auth = resolver.access.auth
        known = auth.known(*credentials)
        if known is False:
            return None
        if known is None:
            async with self._verifying:
                entry = await asyncio.get_running_loop().run_in_executor(None, auth.verify, *credentials)
        else:
            entry = auth.verify(*credentials)  # remembered: no scrypt run
        return entry.user if entry else None

    async def get(self, request: web.BaseRequest, name: str, client: str, outcome: Outcome) -> web.StreamResponse:
        resolver = self.resolver()
        outcome.user = await self.user(request, name)
        try:
            opened = await self.work.open(name, client, outcome.user)
        except Refused as exc:
            return refusal(exc, outcome, resolver.uploads is not None and resolver.uploads.enabled)
        outcome.file_mac = opened.mac
        if opened.origin != "static":
            outcome.extra["origin"] = opened.origin
        headers = file_headers(opened)
        try:
            response = self._respond(request, opened, headers, outcome)
        except BaseException:
            opened.close()
            raise
        if not isinstance(response, BodyResponse):
            opened.close()
        return response

    def _respond(self, request: web.BaseRequest, opened: Opened, headers: dict[str, str],
                 outcome: Outcome) -> web.StreamResponse:
        if not_modified(request.headers.get, opened):
            outcome.outcome = "not_modified"
            return web.Response(status=304, headers={k: v for k, v in headers.items() if k in VALIDATORS})
        ranges = None
        header = request.headers.get("Range")
        if header is not None and _if_range_ok(request, opened):
            try:
                ranges = parse_ranges(header, opened.size)
            except Unsatisfiable:
                outcome.outcome = "range_not_satisfiable"
                return web.Response(status=416, headers={"Content-Range": f"bytes */{opened.size}"})
        response = BodyResponse(opened, ranges, headers, request.method == "HEAD", self.work, self.send_timeout)
        response.on_stall = self.on_stall
        outcome.bytes = response.length if request.method == "GET" else 0
        if ranges is not None:
            outcome.outcome = "partial"
        return response

    async def put(self, request: web.BaseRequest, name: str, client: str, outcome: Outcome,
                  body_timeout: float) -> web.StreamResponse:
        resolver = self.resolver()
        uploads_on = resolver.uploads is not None and resolver.uploads.enabled
        outcome.user = await self.user(request, name)
        try:
            target = resolver.upload_name(name, client, outcome.user)
        except Refused as exc:
            return _closing(refusal(exc, outcome, uploads_on))
        assert resolver.uploads is not None
        limit = resolver.uploads.max_size
        if request.content_length is not None and request.content_length > limit:
            return _closing(refusal(Refused(Reason.TOO_LARGE, f"{request.content_length} bytes"), outcome,
                                    uploads_on))
        store = resolver.uploads
        if not store.begin():
            outcome.outcome = "busy_uploads"
            return _closing(web.Response(status=503, headers={"Retry-After": "5"}, text="busy_uploads\n"))
        try:
            return await self._receive(request, name, client, outcome, body_timeout, resolver, target)
        finally:
            store.end()

    async def _receive(self, request: web.BaseRequest, name: str, client: str, outcome: Outcome,
                       body_timeout: float, resolver: Resolver, target: UploadName) -> web.StreamResponse:
        assert resolver.uploads is not None
        uploads_on = resolver.uploads.enabled
        limit = resolver.uploads.max_size
        if request.headers.get("Expect", "").lower() == "100-continue" and request.transport is not None:
            request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout(body_timeout):
                data = await _read_body(request, limit)
        except TimeoutError:
            outcome.outcome = "body_timeout"
            return _closing(web.Response(status=408, text="body_timeout\n"))
        if data is None:
            return _closing(refusal(Refused(Reason.TOO_LARGE, "body over the cap"), outcome, uploads_on))
        existed = os.path.exists(resolver.uploads.path(target))
        try:
            await self.work.store_upload(name, data, client, outcome.user)
        except Refused as exc:
            return refusal(exc, outcome, uploads_on)
        except OSError as exc:
            outcome.outcome = "store_failed"
            return web.Response(status=507 if exc.errno == 28 else 500, text="store_failed\n")
        outcome.outcome = "stored"
        outcome.bytes = len(data)
        outcome.file_mac = target.mac
        return web.Response(status=204 if existed else 201)


def _closing(response: web.Response) -> web.Response:
    """An answer sent before the body was read: ``Connection: close``, and aiohttp discards what is left of the
    body for up to its lingering time, so the client reads the answer instead of a reset."""
    response.force_close()
    return response


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """The upload's bytes (the first file of a multipart/form-data POST), or None past ``limit``."""
    if request.method == "POST" and request.content_type == "multipart/form-data":
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                return b""
            if isinstance(part, BodyPartReader) and part.filename is not None:
                chunks = bytearray()
                while chunk := await part.read_chunk(64 << 10):
                    chunks += chunk
                    if len(chunks) > limit:
                        return None
                return bytes(chunks)
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 << 10):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class BodyResponse(web.StreamResponse):
    """An :class:`Opened` file, whole or in ranges. Bytes held in memory are written; a descriptor goes by
    ``sendfile`` from a worker thread on plain HTTP (:mod:`bootstrapd.provisioning.sendfile`), else (TLS) is read
    in chunks (page cache on the spot, the disk in a worker) and written. Every wait for the client to take bytes
    is bounded by ``send_timeout``; past it the connection is closed."""

    def __init__(self, opened: Opened, ranges: list[tuple[int, int]] | None, headers: dict[str, str],
                 head: bool, work: FileWork, send_timeout: float = 30.0) -> None:
        status = 206 if ranges is not None else 200
        super().__init__(status=status, headers=headers)
        # Bytes in memory: the head goes out with the first write, one send for a small file. A streamed file's
        # head goes at once, before its first chunk is read (perhaps from a slow disk).
        self._send_headers_immediately = opened.data is None
        self.work = work
        self.opened = opened
        self.head = head
        self.send_timeout = send_timeout
        self.on_stall: Callable[[], None] | None = None
        self._protocol: Any = None  # the connection's aiohttp protocol, once prepared
        size = opened.size
        self.segments: list[tuple[bytes, int, int]] = []  # (prefix, offset, count)
        self.trailer = b""
        if ranges is None:
            self.segments = [(b"", 0, size)]
        elif len(ranges) == 1:
            first, last = ranges[0]
            self.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            self.segments = [(b"", first, last - first + 1)]
        else:
            boundary = uuid.uuid4().hex
            part_type = headers["Content-Type"]
            self.headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
            for first, last in ranges:
                prefix = (f"\r\n--{boundary}\r\nContent-Type: {part_type}\r\n"
                          f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n").encode()
                self.segments.append((prefix, first, last - first + 1))
            self.trailer = f"\r\n--{boundary}--\r\n".encode()
        self.length = sum(len(p) + n for p, _, n in self.segments) + len(self.trailer)
        self.content_length = self.length

    async def prepare(self, request: web.BaseRequest) -> Any:
        try:
            writer = await super().prepare(request)
            if self.head or request.method == "HEAD":
                await self.write_eof()
                return writer
            self._protocol = request.protocol
            try:
                data = self.opened.data
                if data is not None:
                    view = memoryview(data)
                    for prefix, offset, count in self.segments:
                        if prefix:
                            await self._write_drained(prefix)
                        await self._write_drained(view[offset:offset + count])
                else:
                    await self._stream(request)
                if self.trailer:
                    await self._write_drained(self.trailer)
                await self._flushed(request.transport)
            except SendTimeout as exc:
                if self.on_stall is not None:
                    self.on_stall()
                if request.transport is not None:
                    request.transport.abort()  # what the client left unread is dropped, not lingered over
                raise ConnectionResetError(str(exc)) from None
            await self.write_eof()
            return writer
        finally:
            self.opened.close()

    async def _stream(self, request: web.BaseRequest) -> None:
        assert self.opened.fd is not None
        sock = socket_of(request.transport)
        if sock is None:  # TLS: the bytes have to pass through the encryption
            for prefix, offset, count in self.segments:
                if prefix:
                    await self._write_drained(prefix)
                await self.work.send(self.opened.fd, offset, count, self._write_drained)
            return
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        sender = SocketSender(cast(asyncio.Transport, request.transport), sock, self.work.readers, self.send_timeout)
        try:
            for prefix, offset, count in self.segments:
                if prefix:
                    await self._write_drained(prefix)
                await sender.send(self.opened.fd, offset, count)
        finally:
            sender.close()

    async def _write_drained(self, data: bytes | memoryview) -> None:
        writer = self._payload_writer
        if (writer is not None and writer.buffer_size + len(data) <= WRITE_WAIT_ABOVE
                and not self._protocol.writing_paused):
            await self.write(data)  # aiohttp does not wait on this one: no timer to set (the hot path)
            return
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.write(data)
                await self.drain()
        except TimeoutError:
            raise SendTimeout(f"the client took nothing for {self.send_timeout:g} s") from None

    async def _flushed(self, transport: asyncio.BaseTransport | None) -> None:
        """Until the transport holds nothing more of the body (the kernel took it), within ``send_timeout``: else
        a client that never reads would keep the connection, its close waiting for a flush that never comes."""
        if transport is None or transport.is_closing():
            return
        transport = cast(asyncio.WriteTransport, transport)  # uvloop's: not a subclass, the same methods
        if not transport.get_write_buffer_size():
            return  # the usual case: the socket took everything at once
        transport.set_write_buffer_limits(high=0)  # paused until empty: drain() now waits for exactly that
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.drain()
        except TimeoutError:
            raise SendTimeout(f"the client took nothing for {self.send_timeout:g} s") from None
        finally:
            if not transport.is_closing():
                transport.set_write_buffer_limits()
