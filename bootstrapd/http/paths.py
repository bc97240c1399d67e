"""The request target of an HTTP request -> the name the resolver gets. Pure; raises :class:`BadPath`.

The raw target is decoded here, strictly, instead of trusting a framework's lenient decoding: invalid
percent-encoding, bytes that are not UTF-8, ``%00`` and other control characters, and an encoded ``/`` or ``\\``
(``%2f``, ``%5c``: a name that would mean one thing to us and another to a proxy) are refused; the query string is
dropped. ``%2e%2e`` decodes to ``..`` and the resolver refuses it as an escape.
"""

from __future__ import annotations

MAX_TARGET = 8192
_HEX = frozenset("0123456789abcdefABCDEF")


class BadPath(ValueError):
    """A request target that names no file of the tree."""


def decode_path(target: str) -> str:
    """The decoded path of an origin-form request target (``/a/b.cfg?x=1`` -> ``/a/b.cfg``)."""
    if len(target) > MAX_TARGET:
        raise BadPath("request target too long")
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise BadPath("not an origin-form target")
    if "%" not in path and path.isascii() and path.isprintable():
        return path  # the common case: nothing to decode, nothing to refuse here
    out = bytearray()
    i = 0
    raw = path.encode("utf-8", "surrogateescape")
    while i < len(raw):
        byte = raw[i]
        if byte == 0x25:  # '%'
            pair = raw[i + 1:i + 3].decode("latin-1")
            if len(pair) != 2 or not set(pair) <= _HEX:
                raise BadPath("invalid percent-encoding")
            value = int(pair, 16)
            if value in (0x2F, 0x5C):
                raise BadPath("encoded '/' or '\\' in path")
            out.append(value)
            i += 3
        else:
            out.append(byte)
            i += 1
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("path is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise BadPath("control character in path")
    return text
