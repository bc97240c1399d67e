"""A small SIP message parser and builder following the RFC 3261 rules PnP phones exercise.

Why our own: PnP needs a few headers of one request and one response, but from many vendors, and older responders
broke on exactly the details kept here: header names are case-insensitive and have compact forms (``v f t i m l c e
k s o``), several Via values may share one header line or repeat it, whitespace may surround ``:`` ``;`` ``=`` and
``,``, and a header may be folded onto continuation lines. Header text is decoded with ``surrogateescape`` so bytes
that are not UTF-8 (a Latin-1 User-Agent, say) survive an echo unchanged instead of failing the whole message.

Everything the wire can get wrong ends as :class:`SipError`, the only exception this module raises on bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bootstrapd.errors import ProtocolError


class SipError(ProtocolError):
    """A datagram that is not an acceptable SIP message."""


MAX_HEADERS = 256

COMPACT = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
    "c": "content-type", "e": "content-encoding", "k": "supported", "s": "subject", "o": "event",
}

# How we spell the headers we write (and the usual spelling of those we echo).
CANONICAL = {
    "via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq", "contact": "Contact",
    "content-length": "Content-Length", "content-type": "Content-Type", "content-encoding": "Content-Encoding",
    "supported": "Supported", "subject": "Subject", "event": "Event", "max-forwards": "Max-Forwards",
    "expires": "Expires", "user-agent": "User-Agent", "allow": "Allow", "accept": "Accept", "server": "Server",
    "subscription-state": "Subscription-State", "www-authenticate": "WWW-Authenticate",
}

_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_REQUEST_LINE = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+) +(\S+) +SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 +(\d{3})(?: (.*))?$")
_HEADER_LINE = re.compile(r"([A-Za-z0-9.!%*_+`'~-]+)[ \t]*:(.*)", re.DOTALL)
_HEADER_ALL = re.compile(r"^([A-Za-z0-9.!%*_+`'~-]+)[ \t]*:([^\r\n]*)\r?$", re.MULTILINE)
_URI_BAD = re.compile(r"[\x00-\x20\x7f\s<>\"]")
_COMMA_ITEMS = re.compile(r"(?:<[^>]*>?|[^,<])+")
_SENT_PROTOCOL = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9.!%*_+`'~-]+)\s*(.*)$", re.IGNORECASE | re.DOTALL)


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms expanded."""
    low = name.lower()
    return COMPACT.get(low, low)


def canonical(name: str) -> str:
    key = header_key(name)
    return CANONICAL.get(key, "-".join(part.capitalize() for part in key.split("-")))


def split_commas(value: str) -> list[str]:
    """Split a header value on commas that are not inside quotes or angle brackets (several Via values)."""
    if '"' not in value:
        if "<" not in value:
            return [p for p in (part.strip() for part in value.split(",")) if p]
        return [p for p in (part.strip() for part in _COMMA_ITEMS.findall(value)) if p]
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    angle = False
    escape = False
    for ch in value:
        if escape:
            current.append(ch)
            escape = False
            continue
        if quoted and ch == "\\":
            escape = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            angle = True
        elif not quoted and ch == ">":
            angle = False
        elif ch == "," and not quoted and not angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if quoted:
        raise SipError("unterminated quoted string")
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def split_params(text: str) -> tuple[str, dict[str, str | None]]:
    """``value ; a = 1 ; b ; c="x;y"`` -> (``value``, {a: 1, b: None, c: x;y}); names are lower-cased."""
    if '"' in text:
        pieces = _split_quoted(text)
    else:
        pieces = text.split(";")
    params: dict[str, str | None] = {}
    for piece in pieces[1:]:
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        if eq:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = re.sub(r"\\(.)", r"\1", value[1:-1]) if "\\" in value else value[1:-1]
            params[name] = value
        else:
            params[name] = None
    return pieces[0].strip(), params


def _split_quoted(text: str) -> list[str]:
    """Split on semicolons outside double quotes."""
    if "\\" not in text:
        # Without escapes, the quote characters alternate: even segments are outside quotes.
        segments = text.split('"')
        if len(segments) % 2 == 0:
            raise SipError("unterminated quoted string")
        fast = [""]
        for i, segment in enumerate(segments):
            if i % 2:
                fast[-1] += '"' + segment + '"'
            else:
                first, *rest = segment.split(";")
                fast[-1] += first
                fast.extend(rest)
        return fast
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    escape = False
    for ch in text:
        if escape:
            current.append(ch)
            escape = False
            continue
        if quoted and ch == "\\":
            escape = True
            current.append(ch)
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise SipError("unterminated quoted string")
    pieces.append("".join(current))
    return pieces


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


def _host_port(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipError(f"bad host {text!r}")
        host, rest = text[: end + 1], text[end + 1:].strip()
    else:
        host, _, rest = text.partition(":")
        host = host.strip()
        rest = (":" + rest) if _ else ""
    if not host:
        raise SipError("empty host")
    if not rest:
        return host, None
    if not rest.startswith(":"):
        raise SipError(f"bad host {text!r}")
    digits = rest[1:].strip()
    if not digits.isascii() or not digits.isdigit() or not 0 < int(digits) < 65536:
        raise SipError(f"bad port {digits!r}")
    return host, int(digits)


def parse_via(value: str) -> Via:
    match = _SENT_PROTOCOL.match(value.strip())
    if not match:
        raise SipError(f"bad Via {value[:60]!r}")
    sent_by, params = split_params(match.group(2))
    host, port = _host_port(sent_by)
    return Via(match.group(1).upper(), host, port, params)


def format_via(via: Via) -> str:
    text = f"SIP/2.0/{via.transport} {via.host}" + (f":{via.port}" if via.port is not None else "")
    for name, value in via.params.items():
        text += f";{name}" if value is None else f";{name}={value}"
    return text


@dataclass(frozen=True)
class NameAddr:
    """A From/To/Contact value: the URI and the header parameters (``tag`` …)."""

    uri: str
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parse_name_addr(value: str) -> NameAddr:
    value = value.strip()
    if "<" in value:
        start = value.find("<")
        end = value.find(">", start)
        if end < 0:
            raise SipError("unterminated <URI>")
        uri = value[start + 1: end].strip()
        _, params = split_params(value[end + 1:])
    else:
        # addr-spec form: URI parameters and header parameters cannot be told apart; RFC 3261 20.10 says they
        # are header parameters.
        uri, params = split_params(value)
    if not uri or ":" not in uri:
        raise SipError(f"bad URI {uri[:60]!r}")
    return NameAddr(uri, params)


@dataclass(frozen=True)
class SipUri:
    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None]


def parse_uri(text: str) -> SipUri:
    text = text.strip()
    if _URI_BAD.search(text):
        raise SipError("whitespace or control character in URI")
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise SipError(f"not a SIP URI: {text[:60]!r}")
    rest = rest.split("?", 1)[0]
    user: str | None = None
    if "@" in rest:
        # Kept whole: "user:password" in theory, but phones write "MAC:001565..." here.
        user, _, rest = rest.rpartition("@")
    hostport, params = split_params(rest)
    host, port = _host_port(hostport)
    return SipUri(scheme.lower(), user, host, port, params)


@dataclass
class SipMessage:
    """A parsed or to-be-built request (``method`` set) or response (``status`` set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # (name as written, value)
    body: bytes = b""
    # Lookup index over ``headers``, built on first use: set headers before reading any (parse() does).
    _index: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def _headers_by_key(self) -> dict[str, list[str]]:
        # Built once per message on first lookup: a PnP exchange looks up a dozen headers of each message.
        index = self._index
        if index is None:
            index = {}
            for have, value in self.headers:
                index.setdefault(header_key(have), []).append(value)
            self._index = index
        return index

    def get(self, name: str) -> str | None:
        values = self._headers_by_key().get(header_key(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, repeated lines and comma-separated values alike (for Via, Contact …)."""
        out: list[str] = []
        for value in self._headers_by_key().get(header_key(name), ()):
            out.extend(split_commas(value))
        return out

    def lines(self, name: str) -> list[str]:
        """Every header line of a name as written (comma-joined values kept together)."""
        return list(self._headers_by_key().get(header_key(name), ()))

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None or not value.strip():
            raise SipError(f"missing {canonical(name)}")
        return value

    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.get_all("via")]

    def cseq(self) -> tuple[int, str]:
        number, _, method = self.require("cseq").strip().partition(" ")
        method = method.strip()
        if not number.isascii() or not number.isdigit() or len(number) > 10 or not _TOKEN.match(method or "-"):
            raise SipError("bad CSeq")
        if not method:
            raise SipError("bad CSeq")
        return int(number), method.upper()

    def encode(self) -> bytes:
        """The wire form; Content-Length is always written (and any given one replaced)."""
        if self.method is not None:
            first = f"{self.method} {self.uri} SIP/2.0"
        else:
            first = f"SIP/2.0 {self.status} {self.reason}"
        out = [first]
        for name, value in self.headers:
            if len(name) in (1, 14) and header_key(name) == "content-length":
                continue
            out.append(f"{name}: {value}")
        out.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(out) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    index = data.find(b"\r\n\r\n")
    if index >= 0:
        return data[:index], data[index + 4:]
    index = data.find(b"\n\n")  # bare LF line ends: tolerated, some embedded stacks send them
    if index >= 0:
        return data[:index], data[index + 2:]
    return data, b""


def _headers(rest: str) -> list[tuple[str, str]]:
    if not rest:
        return []
    if "\n " not in rest and "\n\t" not in rest and rest[0] not in " \t":
        # Fast path, one regex over the whole section: every line must be a "name: value" line, else the line-by-line
        # loop below decides (and names the bad line).
        pairs = _HEADER_ALL.findall(rest)
        if len(pairs) == rest.count("\n") + 1:
            if len(pairs) > MAX_HEADERS:
                raise SipError("too many headers")
            return [(name, value.strip()) for name, value in pairs]
    headers: list[tuple[str, str]] = []
    header_line = _HEADER_LINE.match
    for line in re.split(r"\r?\n", rest):
        if "\r" in line:
            raise SipError("bare CR in header section")  # echoed back, it would split a header line
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipError("continuation line before any header")
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        match = header_line(line)
        if match is None:
            if not line.strip():
                continue
            raise SipError(f"bad header line {line[:60]!r}")
        headers.append((match.group(1), match.group(2).strip()))
    if len(headers) > MAX_HEADERS:
        raise SipError("too many headers")
    return headers


def parse(data: bytes) -> SipMessage:
    """Parse one datagram; raises :class:`SipError` (and nothing else) on anything malformed."""
    if not data or not data.strip():
        raise SipError("empty datagram")
    head_bytes, body = _split_head(data.lstrip(b"\r\n"))
    if b"\0" in head_bytes:
        raise SipError("NUL in header section")
    head = head_bytes.decode("utf-8", "surrogateescape")
    first, _, rest = head.partition("\n")
    first = first.strip()
    message = SipMessage()
    request = _REQUEST_LINE.match(first)
    if request:
        message.method = request.group(1).upper()
        message.uri = request.group(2)
    else:
        status = _STATUS_LINE.match(first)
        if not status:
            raise SipError(f"not a SIP start line: {first[:60]!r}")
        message.status = int(status.group(1))
        if message.status < 100:
            raise SipError("bad status code")
        message.reason = (status.group(2) or "").strip()
    message.headers = _headers(rest)
    length = message.get("content-length")
    if length is not None:
        length = length.strip()
        if not length.isascii() or not length.isdigit() or len(length) > 9:
            raise SipError("bad Content-Length")
        if int(length) > len(body):
            raise SipError("body shorter than Content-Length")  # RFC 3261 18.3: discard over UDP
        body = body[: int(length)]
    message.body = body
    return message


def request(method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"") -> SipMessage:
    return SipMessage(method=method, uri=uri, headers=list(headers), body=body)


def response_to(req: SipMessage, status: int, reason: str, *, to_tag: str | None = None,
                vias: list[str] | None = None, extra: list[tuple[str, str]] | None = None) -> SipMessage:
    """A response echoing the request's Via(s), From, To (plus ``to_tag`` if it has none), Call-ID and CSeq."""
    headers: list[tuple[str, str]] = []
    for value in vias if vias is not None else req.lines("via"):
        headers.append(("Via", value))
    headers.append(("From", req.require("from")))
    to = req.require("to")
    if to_tag is not None and parse_name_addr(to).tag is None:
        to = f"{to};tag={to_tag}"
    headers.append(("To", to))
    headers.append(("Call-ID", req.require("call-id")))
    headers.append(("CSeq", req.require("cseq")))
    headers.extend(extra or [])
    return SipMessage(status=status, reason=reason, headers=headers)
