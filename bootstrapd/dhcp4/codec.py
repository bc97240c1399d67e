"""DHCPv4 wire format (RFC 2131, 2132, 3396): decode and encode BOOTP/DHCP messages.

Options are kept as ``{code: bytes}`` in arrival order. Repeated instances of one code are concatenated (RFC 3396),
options overloaded into ``file``/``sname`` (option 52) are read, and any malformed input raises
:class:`Dhcp4Error` and nothing else. Typed accessors (``msg_type``, ``requested_ip`` …) check lengths, so an option
51 of length 2 or a message type 99 is a Dhcp4Error too, never an IndexError.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from bootstrapd.errors import ProtocolError

MAGIC = b"\x63\x82\x53\x63"
BOOTREQUEST, BOOTREPLY = 1, 2
_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_SIZE = _HEADER.size  # 236
MIN_SIZE = 300  # BOOTP minimum message size; replies are padded up to it
BROADCAST_FLAG = 0x8000

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
TYPE_NAMES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE", 8: "INFORM"}

# Option codes used by name.
SUBNET_MASK, ROUTER, DNS, HOSTNAME, DOMAIN = 1, 3, 6, 12, 15
REQUESTED_IP, LEASE_TIME, OVERLOAD, MESSAGE_TYPE, SERVER_ID = 50, 51, 52, 53, 54
PARAM_LIST, MESSAGE, MAX_SIZE, RENEWAL_TIME, REBINDING_TIME = 55, 56, 57, 58, 59
VENDOR_CLASS, CLIENT_ID, USER_CLASS, BOOT_FILE, RELAY_AGENT = 60, 61, 77, 67, 82
PAD, END = 0, 255

ZERO = b"\0\0\0\0"

# Options the server keeps, echoes or interprets, none of which RFC 3396 concatenation is meant for: longer than one
# instance's 255 bytes, they are malformed. (Otherwise a 60 KB option 61 would become a 60 KB pool key, be echoed in
# a 60 KB OFFER and stored as a 60 KB row.)
SINGLE_INSTANCE = frozenset({HOSTNAME, REQUESTED_IP, LEASE_TIME, OVERLOAD, MESSAGE_TYPE, SERVER_ID, PARAM_LIST,
                             MAX_SIZE, VENDOR_CLASS, CLIENT_ID, USER_CLASS, RELAY_AGENT})


_DECIMAL = tuple(str(n) for n in range(256))  # a byte's decimal text: looked up, not formatted, per address


def ntoa(address: bytes) -> str:
    """Dotted quad of 4 bytes (no socket import in a protocol core; faster than building an IPv4Address)."""
    decimal = _DECIMAL
    return f"{decimal[address[0]]}.{decimal[address[1]]}.{decimal[address[2]]}.{decimal[address[3]]}"


class Dhcp4Error(ProtocolError):
    """A DHCPv4 message that cannot be accepted."""


@dataclass(slots=True)
class Packet:
    op: int = BOOTREPLY
    htype: int = 1
    hlen: int = 6
    hops: int = 0
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: bytes = ZERO
    yiaddr: bytes = ZERO
    siaddr: bytes = ZERO
    giaddr: bytes = ZERO
    chaddr: bytes = b"\0" * 16
    sname: bytes = b"\0" * 64
    file: bytes = b"\0" * 128
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> bytes:
        hlen = self.hlen
        return self.chaddr[:hlen if hlen <= 16 else 16]

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)

    # Typed option accessors: all raise Dhcp4Error on a malformed value.
    def msg_type(self) -> int:
        value = self.options.get(MESSAGE_TYPE)
        if value is None:
            return 0  # plain BOOTP
        if len(value) != 1 or not 1 <= value[0] <= 8:
            raise Dhcp4Error(f"bad message type {value.hex()}")
        return value[0]

    def _address(self, code: int) -> IPv4Address | None:
        value = self.address_bytes(code)
        return IPv4Address(value) if value is not None else None

    def address_bytes(self, code: int) -> bytes | None:
        """An address option's 4 bytes (the hot path compares and converts these without an IPv4Address)."""
        value = self.options.get(code)
        if value is not None and len(value) != 4:
            raise Dhcp4Error(f"option {code} has length {len(value)}, not 4")
        return value

    def requested_ip(self) -> IPv4Address | None:
        return self._address(REQUESTED_IP)

    def server_id(self) -> IPv4Address | None:
        return self._address(SERVER_ID)

    def lease_time(self) -> int | None:
        value = self.options.get(LEASE_TIME)
        if value is None:
            return None
        if len(value) != 4:
            raise Dhcp4Error(f"option 51 has length {len(value)}, not 4")
        return int.from_bytes(value, "big")

    def max_size(self) -> int:
        value = self.options.get(MAX_SIZE)
        if value is None or len(value) != 2:
            return 576
        return max(576, int.from_bytes(value, "big"))

    def param_list(self) -> bytes:
        return self.options.get(PARAM_LIST, b"")

    def client_id(self) -> bytes | None:
        value = self.options.get(CLIENT_ID)
        if value is not None and len(value) < 2:
            raise Dhcp4Error("client identifier shorter than 2 bytes")
        return value

    def vendor_class(self) -> bytes | None:
        value = self.options.get(VENDOR_CLASS)
        # Cisco phones (and others) send a trailing NUL: strip it before matching or storing.
        return value.rstrip(b"\0") if value is not None else None

    def hostname(self) -> str | None:
        value = self.options.get(HOSTNAME)
        if not value:
            return None
        return printable(value.rstrip(b"\0")) or None


def printable(raw: bytes, limit: int = 64) -> str:
    """Text from the wire that is stored and shown (lease list, logs, journal): at most ``limit`` characters, control
    characters and line breaks replaced by '?'."""
    text = raw.decode("utf-8", "replace")[:limit]
    return text if text.isprintable() else "".join(ch if ch.isprintable() else "?" for ch in text)


def _parse_options(data: bytes, start: int, out: dict[int, bytes]) -> None:
    """The options from ``start`` to the end of ``data`` (the message, or a file or sname field alone)."""
    end = len(data)
    i = start
    try:
        while i < end:
            code = data[i]
            if code == PAD:
                i += 1
                continue
            if code == END:
                return
            i += 2  # the value's start
            value_end = i + data[i - 1]  # an IndexError: no room for the length
            if value_end > end:
                raise Dhcp4Error(f"option {code} of length {data[i - 1]} runs past the end")
            if code in out:
                _concatenate(out, code, data[i: value_end])  # RFC 3396: split options are concatenated
            else:
                out[code] = data[i: value_end]
            i = value_end
    except IndexError:
        raise Dhcp4Error(f"option {data[end - 1]} truncated before its length") from None
    # Options without an END option are tolerated (many clients omit it when the field is full).


def _concatenate(options: dict[int, bytes], code: int, value: bytes) -> None:
    joined = options[code] + value
    if code in SINGLE_INSTANCE and len(joined) > 255:
        raise Dhcp4Error(f"option {code} of {len(joined)} bytes (at most 255)")
    options[code] = joined


def decode(data: bytes) -> Packet:
    if len(data) < HEADER_SIZE + 4:
        raise Dhcp4Error(f"{len(data)} bytes is shorter than a DHCP message")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = _HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise Dhcp4Error(f"unknown op {op}")
    if htype != 1 or hlen != 6:
        # Only Ethernet is served: every phone is on Ethernet, and hlen > 16 would overrun chaddr.
        raise Dhcp4Error(f"unsupported hardware type {htype}/length {hlen}")
    if data[HEADER_SIZE: HEADER_SIZE + 4] != MAGIC:
        raise Dhcp4Error("no DHCP magic cookie (plain BOOTP is not served)")
    options: dict[int, bytes] = {}
    _parse_options(data, HEADER_SIZE + 4, options)
    overload = options.get(OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise Dhcp4Error("bad option overload value")
        extra: dict[int, bytes] = {}
        if overload[0] & 1:
            _parse_options(file, 0, extra)
        if overload[0] & 2:
            _parse_options(sname, 0, extra)
        for code, value in extra.items():
            if code in options:
                _concatenate(options, code, value)
            else:
                options[code] = value
    return Packet(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file,
                  options)


Option = tuple[int, bytes]
_EMPTY_FILE, _EMPTY_SNAME = bytes(128), bytes(64)
_FIXED = 28 + HEADER_SIZE + len(MAGIC) + 1  # IPv4 and UDP headers, the fixed header, the cookie, END


def encode_options(options: dict[int, bytes] | Iterable[Option]) -> bytes:
    """Options as TLVs, in order; values over 255 bytes are split into consecutive instances (RFC 3396)."""
    out = bytearray()
    items = options.items() if isinstance(options, dict) else options
    for code, value in items:
        size = len(value)
        if size <= 255:
            out.append(code)
            out.append(size)
            out += value
            continue
        for offset in range(0, size, 255):
            chunk = value[offset: offset + 255]
            out.append(code)
            out.append(len(chunk))
            out += chunk
    return bytes(out)


def encode(packet: Packet, *, max_size: int = 1500, extra: Sequence[Option] = (), extra_wire: bytes | None = None,
           relay: bytes | None = None) -> bytes:
    """:func:`encode_reply` without the list of what was left out."""
    return encode_reply(packet, max_size=max_size, extra=extra, extra_wire=extra_wire, relay=relay)[0]


def encode_reply(packet: Packet, *, max_size: int = 1500, extra: Sequence[Option] = (),
                 extra_wire: bytes | None = None, relay: bytes | None = None,
                 head_wire: bytes | None = None) -> tuple[bytes, tuple[int, ...]]:
    """Encode a message of at most ``max_size`` bytes (IP and UDP headers included, RFC 2132 9.10) and say which
    option codes did not fit.

    Options go out in priority order: ``packet.options`` (the message's own: 53, 54, lease times, 61 …), then
    ``extra`` (configured options, the ones the client requested first, in its option 55 order, RFC 2132 9.8;
    ``extra_wire`` is their encoding when the caller has it cached; ``head_wire`` likewise for ``packet.options``).
    ``relay`` is an option 82 to echo as the last
    option of the options field (RFC 3046 2.2): its room is reserved before any option but 53 and 54. When the
    options field is too small, options that do not fit go into ``file`` and then ``sname`` (if the message does not
    use them itself) behind an option 52 (RFC 2132 9.3; never with value 0), and an option too long for the room
    left in one field is split across them (RFC 3396). What fits nowhere is left out, lowest priority first.
    """
    head = head_wire if head_wire is not None else encode_options(packet.options)
    body = extra_wire if extra_wire is not None else encode_options(extra) if extra else b""
    relay_tlv = _relay_tlv(relay)
    if len(head) + len(body) + len(relay_tlv) <= max_size - _FIXED:
        return _message(packet, head + body + relay_tlv, packet.file, packet.sname), ()
    return _fitted(packet, [*packet.options.items(), *extra], relay_tlv, max_size - _FIXED)


def _fitted(packet: Packet, items: list[Option], relay_tlv: bytes, room: int) -> tuple[bytes, tuple[int, ...]]:
    file_free, sname_free = packet.file == _EMPTY_FILE, packet.sname == _EMPTY_SNAME
    left_out: list[int] = []
    main_cap = room - (3 if file_free or sname_free else 0)  # option 52, should anything overflow
    essential = sum(2 + len(value) for code, value in items if code in (MESSAGE_TYPE, SERVER_ID))
    if relay_tlv and essential + len(relay_tlv) > main_cap:
        left_out.append(RELAY_AGENT)
        relay_tlv = b""
    # Free bytes in the options field, file and sname (the latter two keep one byte for their END).
    free = [main_cap - len(relay_tlv), 127 if file_free else 0, 63 if sname_free else 0]
    fields: list[list[bytes]] = [[], [], []]
    for code, value in items:
        pieces = _place(value, free)
        if pieces is None:
            left_out.append(code)
            continue
        for index, chunk in pieces:
            fields[index].append(bytes((code, len(chunk))) + chunk)
            free[index] -= 2 + len(chunk)
    main, in_file, in_sname = fields
    flags = (1 if in_file else 0) | (2 if in_sname else 0)
    if flags:
        main.insert(1 if main else 0, bytes((OVERLOAD, 1, flags)))  # right after the message type
    file = b"".join(in_file) + bytes((END,)) if in_file else packet.file
    sname = b"".join(in_sname) + bytes((END,)) if in_sname else packet.sname
    return _message(packet, b"".join(main) + relay_tlv, file, sname), tuple(left_out)


def _place(value: bytes, free: list[int]) -> list[tuple[int, bytes]] | None:
    """Where an option goes: whole into the first field with room, else split over the fields in their
    concatenation order (options, file, sname: RFC 3396), or None when the room left is too small."""
    size = len(value)
    if size <= 255:
        for index, room in enumerate(free):
            if room >= size + 2:
                return [(index, value)]
        if size == 0:
            return None
    pieces: list[tuple[int, bytes]] = []
    offset = 0
    for index, room in enumerate(free):
        while offset < size and room >= 3:
            take = min(255, room - 2, size - offset)
            pieces.append((index, value[offset: offset + take]))
            room -= take + 2
            offset += take
        if offset >= size:
            return pieces
    return None


def _message(packet: Packet, options: bytes, file: bytes, sname: bytes) -> bytes:
    try:
        header = _HEADER.pack(packet.op, packet.htype, packet.hlen, packet.hops, packet.xid, packet.secs,
                              packet.flags, packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr,
                              packet.chaddr.ljust(16, b"\0")[:16], sname[:64].ljust(64, b"\0"),
                              file[:128].ljust(128, b"\0"))
    except struct.error as exc:
        raise Dhcp4Error(f"cannot encode: {exc}") from None
    message = header + MAGIC + options + bytes((END,))
    if len(message) < MIN_SIZE:
        message += b"\0" * (MIN_SIZE - len(message))
    return message


# The header fields a reply takes from its request and its address (xid, secs, flags, ciaddr, yiaddr, siaddr,
# giaddr, chaddr): bytes 4 to 44 of the message, the same fields _HEADER packs there.
_PER_CLIENT = struct.Struct("!IHH4s4s4s4s16s")
_PER_CLIENT_END = 4 + _PER_CLIENT.size  # 44
_END = bytes((END,))


class Template:
    """A reply encoded once and reused for every client it fits.

    The model's encoding comes from :func:`encode_reply` (the fitting into file and sname, the padding, what was
    left out); per reply only the header fields of the client's own are written, and the options of its own (its
    identifier echoed, a host name: ``own``, right after the model's head; option 82 last) are put where
    :func:`encode_reply` puts them. :meth:`reply` says None when they do not fit the model's room as it is: the
    caller then encodes that reply with :func:`encode_reply`.
    """

    __slots__ = ("_first", "_head", "_rest", "_siaddr", "_spare", "_wire", "left_out")

    def __init__(self, model: Packet, *, max_size: int, extra: Sequence[Option] = (), extra_wire: bytes | None = None,
                 head_wire: bytes | None = None) -> None:
        head = head_wire if head_wire is not None else encode_options(model.options)
        wire = extra_wire if extra_wire is not None else encode_options(extra) if extra else b""
        data, self.left_out = encode_reply(model, max_size=max_size, extra=extra, extra_wire=wire, head_wire=head)
        self._first = data[:4]  # op, htype, hlen, hops
        self._siaddr = model.siaddr
        self._rest = data[_PER_CLIENT_END:]  # sname, file, the cookie, the options, END, the padding
        self._head = data[_PER_CLIENT_END: HEADER_SIZE + len(MAGIC) + len(head)]  # ... up to the head's end
        self._wire = wire
        # The room left for options of the client's own: encode_reply's test for a message that needs no fitting
        # (negative: the model itself did not fit as it is, see _fitted).
        self._spare = max_size - _FIXED - len(head) - len(wire)

    def reply(self, xid: int, flags: int, ciaddr: bytes, yiaddr: bytes, giaddr: bytes, chaddr: bytes,
              own: bytes = b"", relay: bytes | None = None) -> bytes | None:
        """The message for one client (``chaddr`` as decoded: 16 bytes; addresses 4 bytes; secs is 0 in a reply),
        or None when ``own`` (encoded options) and ``relay`` (an option 82 to echo) do not fit it."""
        try:
            fields = _PER_CLIENT.pack(xid, 0, flags, ciaddr, yiaddr, self._siaddr, giaddr, chaddr)
        except struct.error as exc:
            raise Dhcp4Error(f"cannot encode: {exc}") from None
        if not own and relay is None:
            return b"".join((self._first, fields, self._rest))  # one copy (two concatenations made two)
        relay_tlv = _relay_tlv(relay) if relay is not None else b""
        if len(own) + len(relay_tlv) > self._spare:
            return None
        # Padded to the BOOTP minimum in the same call (no padding object and second copy per reply).
        return b"".join((self._first, fields, self._head, own, self._wire, relay_tlv, _END)).ljust(MIN_SIZE, b"\0")


def tlv(code: int, value: bytes) -> bytes:
    """One option's encoding (:func:`encode_options` of a single option, without its loop)."""
    size = len(value)
    return bytes((code, size)) + value if size <= 255 else encode_options(((code, value),))


def _relay_tlv(relay: bytes | None) -> bytes:
    return b"" if relay is None else tlv(RELAY_AGENT, relay)
