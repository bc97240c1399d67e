"""DHCPv6 wire format (RFC 8415): client/server messages, nested relay messages, and the options bootstrapd uses.

Options are kept as ``(code, bytes)`` pairs in wire order; typed helpers decode and encode the few the server reads
or writes. :func:`parse` checks the whole structure eagerly (every option length, every DUID, IA_NA contents, the
relay chain), so anything malformed is rejected in one place with :class:`Dhcp6Error`, and the server core never
meets a half-valid message.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from bootstrapd.errors import ProtocolError


class Dhcp6Error(ProtocolError):
    """A DHCPv6 datagram that cannot be accepted."""


# Message types (RFC 8415 7.3)
SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
RECONFIGURE = 10
INFORMATION_REQUEST = 11
RELAY_FORW = 12
RELAY_REPL = 13

MESSAGE_NAMES = {
    SOLICIT: "solicit", ADVERTISE: "advertise", REQUEST: "request", CONFIRM: "confirm", RENEW: "renew",
    REBIND: "rebind", REPLY: "reply", RELEASE: "release", DECLINE: "decline", RECONFIGURE: "reconfigure",
    INFORMATION_REQUEST: "information-request", RELAY_FORW: "relay-forw", RELAY_REPL: "relay-reply",
}

# Option codes
OPT_CLIENTID = 1
OPT_SERVERID = 2
OPT_IA_NA = 3
OPT_IA_TA = 4
OPT_IAADDR = 5
OPT_ORO = 6
OPT_PREFERENCE = 7
OPT_ELAPSED_TIME = 8
OPT_RELAY_MSG = 9
OPT_UNICAST = 12
OPT_STATUS_CODE = 13
OPT_RAPID_COMMIT = 14
OPT_USER_CLASS = 15
OPT_VENDOR_CLASS = 16
OPT_VENDOR_OPTS = 17
OPT_INTERFACE_ID = 18
OPT_DNS_SERVERS = 23
OPT_DOMAIN_LIST = 24
OPT_IA_PD = 25
OPT_INFORMATION_REFRESH_TIME = 32
OPT_BOOTFILE_URL = 59
OPT_CLIENT_LINKLAYER_ADDR = 79

# Status codes (RFC 8415 21.13)
SUCCESS = 0
UNSPEC_FAIL = 1
NO_ADDRS_AVAIL = 2
NO_BINDING = 3
NOT_ON_LINK = 4
USE_MULTICAST = 5
NO_PREFIX_AVAIL = 6

MAX_DUID = 130  # RFC 8415 11.1: a 2-byte type code plus at most 128 bytes
# IA options one client message may carry. RFC 8415 sets no limit; phones send one. Each costs an allocation attempt
# and ~40 bytes of reply: 4,000 IAs in a 64 KB datagram cost a thousand normal exchanges of CPU.
MAX_IAS = 16
# Addresses inside one IA: a phone sends at most one; each is echoed in a Renew/Rebind reply (with lifetimes 0 when
# not ours), so without a bound one 64 KB Renew would be echoed back whole.
MAX_IA_ADDRESSES = 8
MAX_RELAY_DEPTH = 32  # Relay-forw wrappers around one client message; RFC 8415 allows hop counts up to 32

Option = tuple[int, bytes]

_U16 = struct.Struct("!H")
_HEAD = struct.Struct("!HH")
_IA = struct.Struct("!III")
_IAADDR = struct.Struct("!16sII")
_TYPE_XID = struct.Struct("!I")  # a message's first four bytes: the type, then the 24-bit transaction id
# The usual IA_NA value in a reply: IAID, T1, T2 and one IAADDR option (code, length 24, address, lifetimes) inside.
_IA_ONE = struct.Struct("!IIIHH16sII")
_IAADDR_HEAD = _HEAD.pack(OPT_IAADDR, _IAADDR.size)
_LITTLE = sys.byteorder == "little"
assert array("H").itemsize == 2 and _IA.size == 12 and _IA_ONE.size == 40  # as decode_oro and IaNa.decode take


@dataclass(slots=True)
class Message:
    """A client/server message: type, 24-bit transaction id, options in order.

    :func:`parse` also keeps what it decoded to check the options (the IAs, the option request, the vendor class,
    the client and server IDs), so the server reads each nested option list once and walks the options once; a
    message built by hand has them empty. They are not compared: a parsed message equals the one it was encoded
    from. Their defaults are immutable, so that building a message (the server builds one per reply) calls no
    factory for them."""

    msg_type: int
    transaction_id: int
    options: list[Option] = field(default_factory=list)
    ia_na: Sequence[IaNa] = field(default=(), compare=False, repr=False)
    ia_other: Sequence[IaTa | IaPd] = field(default=(), compare=False, repr=False)  # in wire order
    oro: Sequence[int] = field(default=(), compare=False, repr=False)
    vendor_class: tuple[int, list[bytes]] | None = field(default=None, compare=False, repr=False)
    client_id: bytes | None = field(default=None, compare=False, repr=False)
    server_id: bytes | None = field(default=None, compare=False, repr=False)
    # Options already encoded, sent after ``options``: the server's per-configuration options, encoded once.
    tail: bytes = field(default=b"", compare=False, repr=False)

    def get(self, code: int) -> bytes | None:
        return get_option(self.options, code)

    def encode(self) -> bytes:
        return encode_message(self.msg_type, self.transaction_id, self.options, self.tail)


@dataclass(slots=True)
class RelayMessage:
    """Relay-forw / Relay-reply; ``inner`` is the relayed message (the Relay Message option, 9)."""

    msg_type: int
    hop_count: int
    link_address: IPv6Address
    peer_address: IPv6Address
    inner: Message | RelayMessage
    options: list[Option] = field(default_factory=list)  # without option 9

    def get(self, code: int) -> bytes | None:
        return get_option(self.options, code)

    def encode(self) -> bytes:
        return encode_relay(self.msg_type, self.hop_count, self.link_address, self.peer_address, self.options,
                            self.inner.encode())

    def innermost(self) -> Message:
        inner = self.inner
        while isinstance(inner, RelayMessage):
            inner = inner.inner
        return inner


# --- options -----------------------------------------------------------------------------------------------------


def parse_options(data: bytes, start: int = 0, end: int | None = None) -> list[Option]:
    if type(data) is not bytes:
        data = bytes(data)  # once, so that every value sliced out of it is bytes
    if end is not None and end != len(data):
        data = data[:end]  # so that a header running past ``end`` fails to unpack, as at the end of the data
    end = len(data)
    out: list[Option] = []
    append = out.append
    unpack_from = _HEAD.unpack_from
    pos = start
    try:  # free in CPython 3.11 until it raises: the loop does not check for room for each header itself
        while pos < end:
            code, length = unpack_from(data, pos)
            stop = pos + 4 + length
            if stop > end:
                raise Dhcp6Error(f"option {code} length {length} runs past the end")
            append((code, data[pos + 4:stop]))
            pos = stop
    except struct.error:  # fewer than 4 bytes left for the header
        raise Dhcp6Error(f"truncated option header at byte {pos}") from None
    return out


def encode_options(options: list[Option], head: bytes = b"", tail: bytes = b"") -> bytes:
    """The options on the wire, between ``head`` and ``tail`` (a message's: one join, no copy of the whole to add
    them; the loop calls no comprehension and concatenates no header to its value)."""
    pack = _HEAD.pack
    parts = [head]
    try:
        for code, value in options:
            parts.append(pack(code, len(value)))
            parts.append(value)
    except struct.error:  # a length (or a code) that does not fit its 16-bit field
        for code, value in options:
            if len(value) > 0xFFFF:
                raise ValueError(f"option {code} is longer than 65535 bytes") from None
        raise
    parts.append(tail)
    return b"".join(parts)


def encode_message(msg_type: int, transaction_id: int, options: list[Option], tail: bytes = b"") -> bytes:
    """A client/server message on the wire; the server's replies are encoded by it with no Message object."""
    if not 0 <= transaction_id < 1 << 24:
        raise ValueError("transaction id is 24 bits")
    return encode_options(options, _TYPE_XID.pack(msg_type << 24 | transaction_id), tail)


def encode_relay(msg_type: int, hop_count: int, link_address: IPv6Address, peer_address: IPv6Address,
                 options: list[Option], inner: bytes) -> bytes:
    """A relay message on the wire around ``inner``, the relayed message already encoded (option 9, last)."""
    head = bytes((msg_type, hop_count)) + link_address.packed + peer_address.packed
    return head + encode_options([*options, (OPT_RELAY_MSG, inner)])


def get_option(options: list[Option], code: int) -> bytes | None:
    for c, value in options:
        if c == code:
            return value
    return None


def get_all(options: list[Option], code: int) -> list[bytes]:
    return [value for c, value in options if c == code]


# --- typed helpers -------------------------------------------------------------------------------------------------


def check_duid(value: bytes, what: str = "DUID") -> bytes:
    if 3 <= len(value) <= MAX_DUID:
        return value
    if len(value) < 3:
        raise Dhcp6Error(f"{what} of {len(value)} bytes is too short")
    if len(value) > MAX_DUID:
        raise Dhcp6Error(f"{what} of {len(value)} bytes is longer than 128 bytes after its type")
    return value


def duid_mac(duid: bytes) -> bytes | None:
    """The Ethernet MAC inside a DUID-LLT (type 1) or DUID-LL (type 3), if there is one."""
    if len(duid) == 14 and duid[:4] == b"\x00\x01\x00\x01":
        return duid[8:]
    if len(duid) == 10 and duid[:4] == b"\x00\x03\x00\x01":
        return duid[4:]
    return None


@dataclass(slots=True)
class StatusCode:
    code: int
    message: str = ""

    def encode(self) -> bytes:
        return _U16.pack(self.code) + self.message.encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> StatusCode:
        if len(data) < 2:
            raise Dhcp6Error("status code option shorter than 2 bytes")
        return cls(_U16.unpack_from(data)[0], data[2:].decode("utf-8", "replace"))


@dataclass(slots=True)
class IaAddress:
    address: IPv6Address
    preferred: int
    valid: int
    options: list[Option] = field(default_factory=list)

    def encode(self) -> bytes:
        head = _IAADDR.pack(self.address.packed, self.preferred, self.valid)
        return head + encode_options(self.options) if self.options else head

    @classmethod
    def decode(cls, data: bytes) -> IaAddress:
        if len(data) < _IAADDR.size:
            raise Dhcp6Error("IAADDR option shorter than 24 bytes")
        packed, preferred, valid = _IAADDR.unpack_from(data)
        return cls(IPv6Address(packed), preferred, valid,
                   parse_options(data, _IAADDR.size) if len(data) > _IAADDR.size else [])


@dataclass(slots=True)
class IaNa:
    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: list[IaAddress] = field(default_factory=list)
    status: StatusCode | None = None
    options: list[Option] = field(default_factory=list)  # anything else inside the IA

    def encode(self) -> bytes:
        addresses = self.addresses
        if self.status is None and not self.options and len(addresses) == 1 and not addresses[0].options:
            only = addresses[0]  # the usual IA of a reply
            return encode_ia_na_address(self.iaid, self.t1, self.t2, only.address.packed, only.preferred, only.valid)
        return _IA.pack(self.iaid, self.t1, self.t2) + _encode_ia_contents(addresses, self.status, self.options)

    @classmethod
    def decode(cls, data: bytes) -> IaNa:
        size = len(data)
        if size == 12:  # a Solicit's IA: nothing inside
            iaid, t1, t2 = _IA.unpack(data)
            return cls(iaid, t1, t2, [], None, [])
        if size == 40 and data[12:16] == _IAADDR_HEAD:  # a Request's: one address (_IA_ONE), nothing else
            iaid, t1, t2, _, _, packed, preferred, valid = _IA_ONE.unpack(data)
            return cls(iaid, t1, t2, [IaAddress(IPv6Address(packed), preferred, valid, [])], None, [])
        if size < 12:
            raise Dhcp6Error("IA_NA option shorter than 12 bytes")
        iaid, t1, t2 = _IA.unpack_from(data)
        addresses, status, options = _ia_contents(data, _IA.size)
        return cls(iaid, t1, t2, addresses, status, options)


def encode_ia_na_address(iaid: int, t1: int, t2: int, address: bytes, preferred: int, valid: int) -> bytes:
    """The value of an IA_NA holding one address and nothing else (the reply to a Request, a Renew)."""
    return _IA_ONE.pack(iaid, t1, t2, OPT_IAADDR, _IAADDR.size, address, preferred, valid)


def _encode_ia_contents(addresses: list[IaAddress], status: StatusCode | None, others: list[Option]) -> bytes:
    if status is None and not others and len(addresses) == 1:  # the usual IA: one address, nothing else
        value = addresses[0].encode()
        if len(value) <= 0xFFFF:  # (longer: encode_options below raises the ValueError)
            return _HEAD.pack(OPT_IAADDR, len(value)) + value
    inner: list[Option] = [(OPT_IAADDR, a.encode()) for a in addresses]
    if status is not None:
        inner.append((OPT_STATUS_CODE, status.encode()))
    return encode_options([*inner, *others])


def _ia_contents(data: bytes, start: int) -> tuple[list[IaAddress], StatusCode | None, list[Option]]:
    addresses: list[IaAddress] = []
    status: StatusCode | None = None
    others: list[Option] = []
    for code, value in parse_options(data, start):
        if code == OPT_IAADDR:
            if len(addresses) >= MAX_IA_ADDRESSES:
                raise Dhcp6Error(f"more than {MAX_IA_ADDRESSES} addresses in one IA")
            addresses.append(IaAddress.decode(value))
        elif code == OPT_STATUS_CODE:
            status = StatusCode.decode(value)
        else:
            others.append((code, value))
    return addresses, status, others


@dataclass(slots=True)
class IaTa:
    """An IA for temporary addresses (RFC 8415 21.5): IAID and options, no T1/T2. bootstrapd assigns none."""

    iaid: int
    addresses: list[IaAddress] = field(default_factory=list)
    status: StatusCode | None = None

    def encode(self) -> bytes:
        return self.iaid.to_bytes(4, "big") + _encode_ia_contents(self.addresses, self.status, [])

    @classmethod
    def decode(cls, data: bytes) -> IaTa:
        if len(data) < 4:
            raise Dhcp6Error("IA_TA option shorter than 4 bytes")
        addresses, status, _ = _ia_contents(data, 4)
        return cls(int.from_bytes(data[:4], "big"), addresses, status)


@dataclass(slots=True)
class IaPd:
    """An IA for delegated prefixes (RFC 8415 21.21): IAID, T1, T2, options. bootstrapd delegates none."""

    iaid: int
    t1: int = 0
    t2: int = 0
    status: StatusCode | None = None

    def encode(self) -> bytes:
        inner: list[Option] = [(OPT_STATUS_CODE, self.status.encode())] if self.status is not None else []
        return _IA.pack(self.iaid, self.t1, self.t2) + encode_options(inner)

    @classmethod
    def decode(cls, data: bytes) -> IaPd:
        if len(data) < _IA.size:
            raise Dhcp6Error("IA_PD option shorter than 12 bytes")
        iaid, t1, t2 = _IA.unpack_from(data)
        status = None
        for code, value in parse_options(data, _IA.size):  # the prefixes (option 26) are not used
            if code == OPT_STATUS_CODE:
                status = StatusCode.decode(value)
        return cls(iaid, t1, t2, status)


def decode_oro(data: bytes) -> list[int]:
    if len(data) % 2:
        raise Dhcp6Error("option request option of odd length")
    if len(data) == 2:  # one code, as perfdhcp asks
        return [data[0] << 8 | data[1]]
    codes = array("H", data)  # C calls only: the comprehension over iter_unpack was a Python frame of its own
    if _LITTLE:
        codes.byteswap()
    return codes.tolist()


def encode_oro(codes: list[int]) -> bytes:
    return b"".join(_U16.pack(c) for c in codes)


def _opaque_list(data: bytes, start: int, what: str) -> list[bytes]:
    out: list[bytes] = []
    pos = start
    while pos < len(data):
        if len(data) - pos < 2:
            raise Dhcp6Error(f"truncated {what} entry")
        (length,) = _U16.unpack_from(data, pos)
        pos += 2
        if pos + length > len(data):
            raise Dhcp6Error(f"{what} entry runs past the end")
        out.append(bytes(data[pos:pos + length]))
        pos += length
    return out


def _encode_opaque_list(items: list[bytes]) -> bytes:
    return b"".join(_U16.pack(len(i)) + i for i in items)


def decode_user_class(data: bytes) -> list[bytes]:
    return _opaque_list(data, 0, "user class")


def encode_user_class(items: list[bytes]) -> bytes:
    return _encode_opaque_list(items)


def decode_vendor_class(data: bytes) -> tuple[int, list[bytes]]:
    if len(data) < 4:
        raise Dhcp6Error("vendor class option shorter than 4 bytes")
    return struct.unpack_from("!I", data)[0], _opaque_list(data, 4, "vendor class")


def encode_vendor_class(enterprise: int, items: list[bytes]) -> bytes:
    return struct.pack("!I", enterprise) + _encode_opaque_list(items)


def decode_vendor_opts(data: bytes) -> tuple[int, list[Option]]:
    if len(data) < 4:
        raise Dhcp6Error("vendor-specific option shorter than 4 bytes")
    return struct.unpack_from("!I", data)[0], parse_options(data, 4)


def encode_vendor_opts(enterprise: int, options: list[Option]) -> bytes:
    return struct.pack("!I", enterprise) + encode_options(options)


def decode_addresses(data: bytes) -> list[IPv6Address]:
    if len(data) % 16:
        raise Dhcp6Error("address list not a multiple of 16 bytes")
    return [IPv6Address(data[i:i + 16]) for i in range(0, len(data), 16)]


def encode_addresses(addresses: list[IPv6Address]) -> bytes:
    return b"".join(a.packed for a in addresses)


def encode_domains(names: list[str]) -> bytes:
    """RFC 1035 wire names, uncompressed (RFC 8415 10)."""
    out = bytearray()
    for name in names:
        for label in name.strip(".").split("."):
            raw = label.encode("idna") if label else b""
            if not raw or len(raw) > 63:
                raise ValueError(f"{name!r} is not a valid domain name")
            out += bytes((len(raw),)) + raw
        out += b"\0"
    return bytes(out)


def decode_domains(data: bytes) -> list[str]:
    names: list[str] = []
    labels: list[str] = []
    pos = 0
    while pos < len(data):
        length = data[pos]
        pos += 1
        if length == 0:
            names.append(".".join(labels))
            labels = []
            continue
        if length > 63 or pos + length > len(data):
            raise Dhcp6Error("bad domain name label")
        labels.append(data[pos:pos + length].decode("ascii", "replace"))
        pos += length
    if labels:
        raise Dhcp6Error("domain name without its final empty label")
    return names


# --- messages ------------------------------------------------------------------------------------------------------

_CLIENT_TYPES = {SOLICIT, REQUEST, CONFIRM, RENEW, REBIND, RELEASE, DECLINE, INFORMATION_REQUEST}
_SERVER_TYPES = {ADVERTISE, REPLY, RECONFIGURE}


def _check_options(msg_type: int, transaction_id: int, data: bytes) -> Message:
    """The options of a client/server message (``data`` from byte 4), split as parse_options splits them, with the
    structural checks of those the server relies on in the same loop (each option visited once); all raise
    Dhcp6Error, a truncated option anywhere before any check's, as when the split came first (the except clause).
    The message is built once, with what they decoded (its IAs, option request, vendor class, client and server ID:
    the first of each, as ``get`` finds). The branches go in the order a client's options usually come (client ID,
    elapsed time, option request, IA); a DUID's length is compared here and check_duid called only to name what is
    wrong (a call per DUID is a tenth of the checks)."""
    options: list[Option] = []
    append = options.append
    unpack_from = _HEAD.unpack_from
    end = len(data)
    pos = 4
    ia_na: list[IaNa] = []
    ia_other: list[IaTa | IaPd] = []
    ias = 0
    oro: list[int] | None = None
    vendor_class: tuple[int, list[bytes]] | None = None
    client_id: bytes | None = None
    server_id: bytes | None = None
    try:
        while pos < end:
            try:  # free in CPython 3.11 until it raises, as in parse_options
                code, length = unpack_from(data, pos)
            except struct.error:  # fewer than 4 bytes left for the header
                raise Dhcp6Error(f"truncated option header at byte {pos}") from None
            stop = pos + 4 + length
            if stop > end:
                raise Dhcp6Error(f"option {code} length {length} runs past the end")
            value = data[pos + 4:stop]
            append((code, value))
            pos = stop
            if code == OPT_CLIENTID:
                if not 3 <= len(value) <= MAX_DUID:
                    check_duid(value, "client ID")
                if client_id is None:
                    client_id = value
            elif code == OPT_ELAPSED_TIME:
                if len(value) != 2:
                    raise Dhcp6Error("elapsed time option must be 2 bytes")
            elif code == OPT_ORO:
                decoded = decode_oro(value)
                if oro is None:
                    oro = decoded
            elif code == OPT_SERVERID:
                if not 3 <= len(value) <= MAX_DUID:
                    check_duid(value, "server ID")
                if server_id is None:
                    server_id = value
            elif code == OPT_IA_NA or code == OPT_IA_TA or code == OPT_IA_PD:
                ias += 1
                if ias > MAX_IAS:
                    raise Dhcp6Error(f"more than {MAX_IAS} IA options")
                if code == OPT_IA_NA:
                    ia_na.append(IaNa.decode(value))
                elif code == OPT_IA_TA:
                    ia_other.append(IaTa.decode(value))
                else:
                    ia_other.append(IaPd.decode(value))
            elif code == OPT_RAPID_COMMIT and value:
                raise Dhcp6Error("rapid commit option must be empty")
            elif code == OPT_USER_CLASS:
                decode_user_class(value)
            elif code == OPT_VENDOR_CLASS:
                vendor = decode_vendor_class(value)
                if vendor_class is None:
                    vendor_class = vendor
            elif code == OPT_VENDOR_OPTS:
                decode_vendor_opts(value)
            elif code == OPT_STATUS_CODE:
                StatusCode.decode(value)
            elif code == OPT_RELAY_MSG:
                raise Dhcp6Error("relay message option inside a client/server message")
    except Dhcp6Error:
        parse_options(data, pos)  # the first truncated option after this one, if there is one, is the error
        raise
    if msg_type == INFORMATION_REQUEST and ias:
        raise Dhcp6Error("information-request carrying an IA")
    return Message(msg_type, transaction_id, options, ia_na, ia_other, oro or [], vendor_class, client_id, server_id)


def parse(data: bytes, _depth: int = 0) -> Message | RelayMessage:
    """Decode one DHCPv6 datagram (UDP payload); raises Dhcp6Error on anything malformed. (``_depth``: how many
    relay messages wrap this one, for the recursion.)"""
    if type(data) is not bytes:
        data = bytes(data)
    if not data:
        raise Dhcp6Error("empty message")
    msg_type = data[0]
    if msg_type in (RELAY_FORW, RELAY_REPL):
        if _depth >= MAX_RELAY_DEPTH:
            raise Dhcp6Error(f"relay messages nested more than {MAX_RELAY_DEPTH} deep")
        if len(data) < 34:
            raise Dhcp6Error("relay message shorter than 34 bytes")
        options = parse_options(data, 34)
        relayed = [v for c, v in options if c == OPT_RELAY_MSG]
        if len(relayed) != 1:
            raise Dhcp6Error(f"relay message with {len(relayed)} relay message options")
        inner = parse(relayed[0], _depth + 1)
        if msg_type == RELAY_FORW and inner.msg_type not in _CLIENT_TYPES and inner.msg_type != RELAY_FORW:
            raise Dhcp6Error("relay-forw carrying a server message")
        return RelayMessage(
            msg_type, data[1], IPv6Address(data[2:18]), IPv6Address(data[18:34]), inner,
            [(c, v) for c, v in options if c != OPT_RELAY_MSG],
        )
    if msg_type not in _CLIENT_TYPES and msg_type not in _SERVER_TYPES:
        raise Dhcp6Error(f"unknown message type {msg_type}")
    if len(data) < 4:
        raise Dhcp6Error("message shorter than 4 bytes")
    return _check_options(msg_type, _TYPE_XID.unpack_from(data)[0] & 0xFFFFFF, data)
