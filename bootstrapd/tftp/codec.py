"""TFTP wire format (RFC 1350, option extension RFC 2347): RRQ/WRQ/DATA/ACK/ERROR/OACK.

Decoding raises only :class:`TftpError` (a :class:`~bootstrapd.errors.ProtocolError`). Option *values* are kept as
text here; whether a value is acceptable is the transfer's business (a bad value means "ignore the option", never an
error), so a request with ``blksize=abc`` still decodes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from bootstrapd.errors import ProtocolError

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

# RFC 1350 / 2347 error codes.
ERR_UNDEFINED = 0
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_DISK_FULL = 3
ERR_ILLEGAL = 4
ERR_UNKNOWN_TID = 5
ERR_EXISTS = 6
ERR_NO_USER = 7
ERR_OPTION = 8

MODES = ("octet", "netascii")
_HEAD = struct.Struct("!HH")


class TftpError(ProtocolError):
    """A datagram that is not valid TFTP."""


@dataclass(frozen=True)
class Request:
    opcode: int  # RRQ or WRQ
    filename: str
    mode: str  # lower case: "octet", "netascii" (or "mail", refused later)
    options: dict[str, str] = field(default_factory=dict)  # lower-case names, first occurrence wins


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class OAck:
    options: dict[str, str]


Packet = Request | Data | Ack | Error | OAck


def _strings(body: bytes) -> list[bytes]:
    if not body.endswith(b"\0"):
        raise TftpError("strings not NUL-terminated")
    return body[:-1].split(b"\0")


def _text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TftpError(f"{what} is not UTF-8") from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise TftpError(f"{what} contains control characters")
    return text


def _options(parts: list[bytes]) -> dict[str, str]:
    # A dangling name without a value, or undecodable names/values, are ignored rather than fatal (RFC 2347 says
    # unknown options are ignored; we extend that to malformed ones).
    options: dict[str, str] = {}
    for i in range(0, len(parts) - 1, 2):
        try:
            name = parts[i].decode("ascii").lower()
            value = parts[i + 1].decode("ascii")
        except UnicodeDecodeError:
            continue
        if name and name not in options:
            options[name] = value
    return options


def decode(data: bytes) -> Packet:
    if len(data) < 4:
        raise TftpError(f"datagram of {len(data)} bytes")
    opcode, number = _HEAD.unpack_from(data)
    if opcode in (RRQ, WRQ):
        parts = _strings(data[2:])
        if len(parts) < 2:
            raise TftpError("request without file name and mode")
        filename = _text(parts[0], "file name")
        if not filename:
            raise TftpError("empty file name")
        try:
            mode = parts[1].decode("ascii").lower()
        except UnicodeDecodeError:
            raise TftpError("mode is not ASCII") from None
        return Request(opcode, filename, mode, _options(parts[2:]))
    if opcode == DATA:
        return Data(number, bytes(data[4:]))
    if opcode == ACK:
        return Ack(number)  # trailing bytes (some clients pad) are ignored
    if opcode == ERROR:
        raw = data[4:].split(b"\0", 1)[0]
        return Error(number, raw.decode("utf-8", "replace"))
    if opcode == OACK:
        return OAck(_options(_strings(data[2:])))
    raise TftpError(f"unknown opcode {opcode}")


def _encode_options(options: dict[str, str]) -> bytes:
    return b"".join(k.encode("ascii") + b"\0" + v.encode("ascii") + b"\0" for k, v in options.items())


def encode_request(opcode: int, filename: str, mode: str = "octet", options: dict[str, str] | None = None) -> bytes:
    return (struct.pack("!H", opcode) + filename.encode("utf-8") + b"\0" + mode.encode("ascii") + b"\0"
            + _encode_options(options or {}))


def encode_data(block: int, payload: bytes | memoryview) -> bytes:
    return _HEAD.pack(DATA, block & 0xFFFF) + payload


def encode_ack(block: int) -> bytes:
    return _HEAD.pack(ACK, block & 0xFFFF)


def encode_error(code: int, message: str) -> bytes:
    return _HEAD.pack(ERROR, code) + message.encode("utf-8", "replace") + b"\0"


def encode_oack(options: dict[str, str]) -> bytes:
    return struct.pack("!H", OACK) + _encode_options(options)


def encode(packet: Packet) -> bytes:
    if isinstance(packet, Request):
        return encode_request(packet.opcode, packet.filename, packet.mode, packet.options)
    if isinstance(packet, Data):
        return encode_data(packet.block, packet.payload)
    if isinstance(packet, Ack):
        return encode_ack(packet.block)
    if isinstance(packet, Error):
        return encode_error(packet.code, packet.message)
    return encode_oack(packet.options)
