"""The phone's HTTP/1.1 client, sans I/O: the request a Yealink sends, and a reader for the server's response.

A simulated phone needs GET and PUT with a few headers over one kept-alive connection, thousands at once: a general
client (aiohttp) cost the simulator twice the server's CPU in the boot storm, so the phone speaks the little HTTP it
needs itself. The adapter (:mod:`bootstrapd.sim.transport`) owns the sockets and the timeouts.

- :func:`encode_request`: request line, ``Host``, the phone's ``User-Agent``, ``Accept``, preemptive basic
  ``Authorization`` when the phone has credentials, ``Content-Length`` for a body. The target is percent-encoded
  where it is not already, and nothing taken from a URL can put a line break or a control character into the head.
- :class:`ResponseReader`: fed the bytes as they arrive, returns the :class:`Response` once it is complete. Framing
  per RFC 9112 section 6.3: no body for 1xx (skipped: interim), 204, 304 and HEAD; ``Transfer-Encoding: chunked``;
  ``Content-Length`` (differing values are an error); else the body runs to the end of the connection. The head is
  capped at :data:`MAX_HEAD`, the body at ``max_body``. Anything malformed raises :class:`HttpError`, and nothing else.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from urllib.parse import quote

MAX_HEAD = 64 << 10  # status line and headers
MAX_BODY = 64 << 20  # what a configuration client ever needs (as for TFTP)
_SAFE = "/%:@!$&'()*+,;=-._~?"  # what stays as it is in a request target (RFC 3986 pchar, '/', '?')
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_STATUS = re.compile(rb"^HTTP/1\.([01]) ([0-9]{3})(?: (.*))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class HttpError(Exception):
    """A response this client cannot read (or a request it will not send)."""


def _clean(text: str, what: str) -> str:
    if _CONTROL.search(text):
        raise HttpError(f"{what} has a control character or a line break")
    return text


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def encode_request(method: str, target: str, host: str, headers: list[tuple[str, str]],
                   body: bytes | None = None) -> bytes:
    """The request's bytes; raises :class:`HttpError` for a value that would break the head."""
    target = quote(_clean(target or "/", "the request target"), safe=_SAFE)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {_clean(host, 'the host')}"]
    for name, value in headers:
        lines.append(f"{name}: {_clean(value, name)}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    return head + body if body else head


@dataclass
class Response:
    status: int
    reason: str  # printable only: it is shown in reports
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    keep_alive: bool  # the connection may carry the next request


@dataclass
class ResponseReader:
    """Reads one response off a connection (make a new one per request)."""

    head_request: bool = False
    max_body: int = MAX_BODY
    _buffer: bytearray = field(default_factory=bytearray)
    _response: Response | None = None  # the head is read; the body is being read
    _mode: str = ""  # "length", "chunked", "close"
    _left: int = 0  # length mode: bytes still to come; chunked: of the current chunk
    _chunk_state: str = "size"  # size, data, data-end, trailer
    _body: bytearray = field(default_factory=bytearray)
    done: bool = False

    def feed(self, data: bytes) -> Response | None:
        if self.done:
            return None  # bytes after the response: never asked for (no pipelining), ignored
        self._buffer += data
        while self._response is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise HttpError(f"response head over {MAX_HEAD} bytes")
                return None
            if end > MAX_HEAD:
                raise HttpError(f"response head over {MAX_HEAD} bytes")
            head = bytes(self._buffer[:end])
            del self._buffer[:end + 4]
            self._head(head)
        return self._read_body()

    def eof(self) -> Response:
        """The server closed the connection: the response if that ends it, else :class:`HttpError`."""
        if self._response is not None and self._mode == "close" and not self.done:
            self._body += self._buffer
            self._buffer.clear()
            if len(self._body) > self.max_body:
                raise HttpError(f"body over {self.max_body} bytes")
            return self._finish()
        raise HttpError("the connection closed before the response was complete")

    # -- the head -------------------------------------------------------------------------------------------------

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        match = _STATUS.match(lines[0])
        if match is None:
            raise HttpError("not an HTTP/1.x status line")
        minor, status = int(match.group(1)), int(match.group(2))
        reason = (match.group(3) or b"").decode("latin-1")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.match(name):
                raise HttpError("malformed header line")
            key = name.decode("ascii").lower()
            text = value.strip(b" \t").decode("latin-1")
            if _CONTROL.search(text.replace("\t", " ")):
                raise HttpError(f"control character in header {key}")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if 100 <= status < 200:
            return  # interim (100 Continue, 103 Early Hints): the final response follows
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = ("close" not in tokens) if minor == 1 else ("keep-alive" in tokens)
        printable = "".join(c if c.isprintable() else "?" for c in reason)[:100]
        self._response = Response(status, printable, headers, b"", keep_alive)
        if self.head_request or status in (204, 304):
            self._mode, self._left = "length", 0
            return
        codings = [c.strip().lower() for c in headers.get("transfer-encoding", "").split(",") if c.strip()]
        if codings:
            if codings[-1] != "chunked":
                raise HttpError(f"transfer coding {codings[-1]!r} is not chunked")
            if codings != ["chunked"]:
                raise HttpError(f"transfer codings {codings} (only chunked is read)")
            self._mode = "chunked"
            return
        if "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit() or not next(iter(values)).isascii():
                raise HttpError("bad Content-Length")
            self._left = int(next(iter(values)))
            if self._left > self.max_body:
                raise HttpError(f"body over {self.max_body} bytes")
            self._mode = "length"
            return
        self._mode = "close"
        self._response.keep_alive = False

    # -- the body -------------------------------------------------------------------------------------------------

    def _read_body(self) -> Response | None:
        if self._mode == "length":
            take = min(self._left, len(self._buffer))
            self._body += self._buffer[:take]
            del self._buffer[:take]
            self._left -= take
            return self._finish() if self._left == 0 else None
        if self._mode == "close":
            if len(self._body) + len(self._buffer) > self.max_body:
                raise HttpError(f"body over {self.max_body} bytes")
            self._body += self._buffer
            self._buffer.clear()
            return None
        return self._read_chunks()

    def _read_chunks(self) -> Response | None:
        while True:
            if self._chunk_state == "data":
                take = min(self._left, len(self._buffer))
                self._body += self._buffer[:take]
                del self._buffer[:take]
                self._left -= take
                if self._left:
                    return None
                self._chunk_state = "data-end"
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise HttpError("chunk line too long")
                return None
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 2]
            if self._chunk_state == "data-end":
                if line:
                    raise HttpError("chunk data longer than its size")
                self._chunk_state = "size"
            elif self._chunk_state == "size":
                size = line.split(b";", 1)[0].strip(b" \t")
                if not size or len(size) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size):
                    raise HttpError("bad chunk size")
                self._left = int(size, 16)
                if len(self._body) + self._left > self.max_body:
                    raise HttpError(f"body over {self.max_body} bytes")
                self._chunk_state = "trailer" if self._left == 0 else "data"
            elif not line:  # the empty line after the trailers
                return self._finish()

    def _finish(self) -> Response:
        assert self._response is not None
        self.done = True
        self._response.body = bytes(self._body)
        return self._response
