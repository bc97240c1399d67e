"""An HTTP/1.x request head (request line and header fields, RFC 9112 2-5) from bytes, for the fast path. Pure.

:func:`parse_head` takes the bytes of one head up to and including its empty line and returns a :class:`Head`, or
raises :class:`BadHead` (the one error type) for anything it does not take: it is strict where aiohttp's parser
(llhttp) is strict, and stricter elsewhere, because a head this parser refuses is not answered here but handed to
aiohttp, which answers it (400 for a bad request line, an over-long field, obs-fold, and so on). So refusing is
always safe; accepting a head that aiohttp would refuse is not, and is avoided:

- request line ``METHOD SP origin-form-target SP HTTP/1.0|HTTP/1.1`` (one space each; a target of visible ASCII);
- field lines ``name ":" OWS value OWS`` with a token name and a value of visible ASCII, spaces and tabs (no
  obs-fold, no control characters, no bytes above 0x7E: anything else goes to aiohttp);
- no line longer than ``max_line`` bytes (aiohttp's ``max_line_size``/``max_field_size``: it answers 400);
- HTTP/1.1 must carry exactly one Host field (aiohttp answers 400 without one).

:func:`format_head` is the inverse, for the round-trip tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINE = 8190
MAX_FIELDS = 100

# RFC 9110 5.6.2 token characters.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") (/[!-~]*) HTTP/1\.([01])")
_FIELDS = re.compile(rb"(?:" + _TOKEN + rb":[\t -~]*\r\n)*\r\n")


class BadHead(ValueError):
    """A request head the fast path does not take (aiohttp then answers it)."""


@dataclass(slots=True)
class Head:
    method: str
    target: str  # the raw request target, e.g. ``/a/b.cfg?x=1``
    minor: int  # HTTP/1.<minor>: 0 or 1
    fields: tuple[tuple[str, str], ...]  # (name as sent, value), in order
    index: dict[str, str] = field(default_factory=dict, compare=False, repr=False)  # lower-case name -> 1st value

    def __post_init__(self) -> None:
        if not self.index:
            for key, value in reversed(self.fields):
                self.index[key.lower()] = value

    def get(self, name: str) -> str | None:
        """The first field of that name (case-insensitive), as aiohttp's ``headers.get`` gives it."""
        return self.index.get(name.lower())

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the answer (RFC 9112 9.3): HTTP/1.1 unless ``Connection:
        close``; HTTP/1.0 only with ``Connection: keep-alive``."""
        connection = self.index.get("connection")
        if connection is None:
            return self.minor == 1
        connection = connection.lower()
        if connection == "close":
            return False
        if connection == "keep-alive":
            return True
        tokens = {t.strip().lower() for t in connection.split(",")}
        if self.minor == 1:
            return "close" not in tokens
        return "keep-alive" in tokens and "close" not in tokens


_TAKEN = (b"GET ", b"HEAD ")


def may_take(data: bytes | bytearray) -> bool:
    """Whether the start of a head (perhaps not all of it yet) could be one the fast path answers: GET or HEAD.
    Anything else (another method, a TLS hello on the plain port, an HTTP/2 preface) goes to aiohttp at once
    rather than waiting for an empty line that may never come."""
    start = bytes(data[:5])
    return start.startswith(_TAKEN) or any(m.startswith(start) for m in _TAKEN)


def head_end(data: bytes | bytearray) -> int:
    """The index just past the head's empty line in ``data``, or -1 while it has not all arrived."""
    end = data.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_head(data: bytes | bytearray, max_line: int = MAX_LINE) -> Head:
    """The :class:`Head` of ``data`` (one head, ending in its empty line); raises :class:`BadHead`."""
    if not isinstance(data, bytes):
        data = bytes(data)
    line_end = data.find(b"\r\n")
    if line_end < 0 or not data.endswith(b"\r\n\r\n"):
        raise BadHead("the head does not end in an empty line")
    if line_end > max_line:
        raise BadHead("a line longer than the limit")
    match = _REQUEST_LINE.fullmatch(data, 0, line_end)
    if match is None:
        raise BadHead("not a request line this path takes")
    if _FIELDS.fullmatch(data, line_end + 2) is None:  # every field line at once, in one pass of the C matcher
        raise BadHead("not a header field this path takes")
    lines = data[line_end + 2:-4].decode("ascii").split("\r\n") if len(data) > line_end + 4 else []
    if len(lines) > MAX_FIELDS:
        raise BadHead("too many header fields")
    if lines and max(map(len, lines)) > max_line:
        raise BadHead("a line longer than the limit")
    fields = []
    index: dict[str, str] = {}
    hosts = 0
    for line in lines:
        key, _, value = line.partition(":")
        value = value.strip(" \t")
        fields.append((key, value))
        lower = key.lower()
        if lower not in index:
            index[lower] = value
        elif lower == "host":
            hosts += 1
    minor = 1 if match.group(3) == b"1" else 0
    if minor and (hosts or "host" not in index):
        raise BadHead("HTTP/1.1 without exactly one Host field")
    return Head(match.group(1).decode("ascii"), match.group(2).decode("ascii"), minor, tuple(fields), index)


def format_head(head: Head) -> bytes:
    lines = [f"{head.method} {head.target} HTTP/1.{head.minor}"]
    lines += [f"{key}: {value}" for key, value in head.fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
