"""DHCPv4 wire format (RFC 2131, 2132, 3396): decode and encode BOOTP/DHCP messages.

Options are kept as ``{code: bytes}`` in arrival order. Repeated instances of one code are concatenated (RFC 3396),
options overloaded into ``file``/``sname`` (option 52) are read, and any malformed input raises
:class:`Dhcp4Error` and nothing else. Typed accessors (``msg_type``, ``requested_ip`` …) check lengths, so an option
51 of length 2 or a message type 99 is a Dhcp4Error too, never an IndexError.
"""

from __future__ import annotations

import struct
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
VENDOR_CLASS, CLIENT_ID, USER_CLASS, RELAY_AGENT = 60, 61, 77, 82
PAD, END = 0, 255

ZERO = b"\0\0\0\0"


def ntoa(address: bytes) -> str:
    """Dotted quad of 4 bytes (no socket import in a protocol core; faster than building an IPv4Address)."""
    return f"{address[0]}.{address[1]}.{address[2]}.{address[3]}"


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
        return self.chaddr[: min(self.hlen, 16)]

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
        value = self.options.get(code)
        if value is None:
            return None
        if len(value) != 4:
            raise Dhcp4Error(f"option {code} has length {len(value)}, not 4")
        return IPv4Address(value)

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
        return value.rstrip(b"\0").decode("utf-8", "replace")[:64] or None


def _parse_options(data: bytes, start: int, end: int, out: dict[int, bytes]) -> None:
    i = start
    while i < end:
        code = data[i]
        if code == PAD:
            i += 1
            continue
        if code == END:
            return
        if i + 1 >= end:
            raise Dhcp4Error(f"option {code} truncated before its length")
        length = data[i + 1]
        value_end = i + 2 + length
        if value_end > end:
            raise Dhcp4Error(f"option {code} of length {length} runs past the end")
        value = data[i + 2: value_end]
        if code in out:
            out[code] += value  # RFC 3396: split options are concatenated
        else:
            out[code] = value
        i = value_end
    # Options without an END option are tolerated (many clients omit it when the field is full).


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
    _parse_options(data, HEADER_SIZE + 4, len(data), options)
    overload = options.get(OVERLOAD)
    if overload is not None:
        if len(overload) != 1 or overload[0] not in (1, 2, 3):
            raise Dhcp4Error("bad option overload value")
        extra: dict[int, bytes] = {}
        if overload[0] & 1:
            _parse_options(file, 0, len(file), extra)
        if overload[0] & 2:
            _parse_options(sname, 0, len(sname), extra)
        for code, value in extra.items():
            options[code] = options.get(code, b"") + value
    return Packet(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname, file,
                  options)


def encode_options(options: dict[int, bytes], last: tuple[int, bytes] | None = None) -> bytes:
    """Options as TLVs; values over 255 bytes are split into consecutive instances (RFC 3396)."""
    out = bytearray()
    items = list(options.items())
    if last is not None:
        items.append(last)
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


def _split_tlvs(block: bytes) -> list[bytes]:
    out: list[bytes] = []
    i = 0
    while i < len(block):
        end = i + 2 + block[i + 1]
        out.append(block[i:end])
        i = end
    return out


def _overload(body: bytes, room: int) -> tuple[bytes, bytes, bytes, int]:
    """RFC 2131 4.1 / RFC 2132 9.3: options that do not fit the options field go into ``file``, then ``sname``.

    Options keep their order; those that fit nowhere are left out (the message must not exceed the client's size).
    Returns the options field, the file and sname fields, and the overload flags.
    """
    main, file_area, sname_area = bytearray(), bytearray(), bytearray()
    flags = 0
    for tlv in _split_tlvs(body):
        if not file_area and not sname_area and len(main) + len(tlv) <= room:
            main += tlv
        elif not sname_area and len(file_area) + len(tlv) <= 127:
            file_area += tlv
            flags |= 1
        elif len(sname_area) + len(tlv) <= 63:
            sname_area += tlv
            flags |= 2
    if file_area:
        file_area.append(END)
    if sname_area:
        sname_area.append(END)
    return bytes(main), bytes(file_area), bytes(sname_area), flags


def encode(packet: Packet, *, max_size: int = 1500, last: tuple[int, bytes] | None = None,
           wire: bytes = b"") -> bytes:
    """Encode a message of at most ``max_size`` bytes (IP and UDP headers included, RFC 2132 9.10).

    ``wire`` is a block of options already encoded (a cached option set), placed after ``packet.options``; ``last``
    is an option to put after all others (82, RFC 3046), left out if it does not fit. Options beyond the options
    field overflow into ``file`` and ``sname`` (option 52).
    """
    body = encode_options(packet.options) + wire
    tail = encode_options({}, last) if last is not None else b""
    limit = max_size - 28
    fixed = HEADER_SIZE + 4 + 1  # header, magic cookie, END
    if tail and fixed + len(body) + len(tail) > limit:
        tail = b""  # option 82 does not fit: reply without it rather than not at all
    file, sname = packet.file, packet.sname
    if fixed + len(body) > limit:
        body, file_area, sname_area, flags = _overload(body, limit - fixed - 3)
        body = bytes((OVERLOAD, 1, flags)) + body
        file = file_area or file
        sname = sname_area or sname
    try:
        header = _HEADER.pack(packet.op, packet.htype, packet.hlen, packet.hops, packet.xid, packet.secs,
                              packet.flags, packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr,
                              packet.chaddr.ljust(16, b"\0")[:16], sname[:64].ljust(64, b"\0"),
                              file[:128].ljust(128, b"\0"))
    except struct.error as exc:
        raise Dhcp4Error(f"cannot encode: {exc}") from None
    message = header + MAGIC + body + tail + bytes((END,))
    if len(message) < MIN_SIZE:
        message += b"\0" * (MIN_SIZE - len(message))
    return message
