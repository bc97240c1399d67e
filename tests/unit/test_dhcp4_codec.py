"""The DHCPv4 codec: round trips, RFC 3396 splitting, an independent decoder, and hostile input."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import dhcppython.packet
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Dhcp4Error, Packet
from bootstrapd.errors import ProtocolError
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import dora, mac, make_server, message

option_codes = st.integers(1, 254).filter(lambda c: c not in (codec.OVERLOAD,))
option_maps = st.dictionaries(option_codes, st.binary(min_size=0, max_size=600), max_size=12)
addresses = st.binary(min_size=4, max_size=4)


@given(
    xid=st.integers(0, 2**32 - 1), secs=st.integers(0, 65535), flags=st.integers(0, 65535),
    ciaddr=addresses, yiaddr=addresses, giaddr=addresses, hw=st.binary(min_size=6, max_size=6),
    options=option_maps,
)
def test_round_trip(xid: int, secs: int, flags: int, ciaddr: bytes, yiaddr: bytes, giaddr: bytes, hw: bytes,
                    options: dict[int, bytes]) -> None:
    packet = Packet(op=codec.BOOTREQUEST, xid=xid, secs=secs, flags=flags, ciaddr=ciaddr, yiaddr=yiaddr,
                    giaddr=giaddr, chaddr=hw.ljust(16, b"\0"), options=options)
    decoded = codec.decode(codec.encode(packet, max_size=65535))
    assert decoded == packet


@settings(max_examples=2000)
@given(st.binary(max_size=700))
def test_arbitrary_bytes_raise_only_dhcp4error(data: bytes) -> None:
    try:
        codec.decode(data)
    except Dhcp4Error:
        pass


@settings(max_examples=1500)
@given(st.data())
def test_mutated_messages_never_crash_the_server(data: st.DataObject) -> None:
    server = make_server()
    valid = bytearray(message(codec.REQUEST, mac(1), options={codec.REQUESTED_IP: b"\x0a\x4d\x00\x64",
                                                               codec.CLIENT_ID: b"\x01abcdef"}))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(valid) - 1))
        valid[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(valid)))
    try:
        server.handle(bytes(valid[:cut]), ("0.0.0.0", 68), at(1000.0))
    except ProtocolError:
        pass


def test_long_option_is_split_and_concatenated() -> None:
    value = bytes(range(256)) * 2  # 512 bytes: three instances on the wire (RFC 3396)
    wire = codec.encode_options({224: value})
    assert wire[0] == 224 and wire[1] == 255
    assert wire[257] == 224 and wire[258] == 255
    assert wire[514] == 224 and wire[515] == 2
    packet = Packet(op=codec.BOOTREQUEST, options={224: value})
    assert codec.decode(codec.encode(packet)).options[224] == value


def test_overloaded_file_field_is_read() -> None:
    packet = Packet(op=codec.BOOTREQUEST, options={codec.MESSAGE_TYPE: b"\x01", codec.OVERLOAD: b"\x01"})
    packet.file = bytes((codec.HOSTNAME, 5)) + b"phone" + bytes((codec.END,))
    assert codec.decode(codec.encode(packet)).hostname() == "phone"


def test_independent_decoder_reads_our_ack() -> None:
    """dhcppython (another implementation) decodes what we send the way a client would."""
    server = make_server()
    hw = mac(7, "00:15:65")
    ack = dora(server, hw, options={codec.VENDOR_CLASS: b"yealink"})
    wire = codec.encode(ack)
    other = dhcppython.packet.DHCPPacket.from_bytes(wire)
    assert other.msg_type == "DHCPACK"
    assert str(other.yiaddr) == str(IPv4Address(ack.yiaddr))
    assert other.chaddr.lower() == "00:15:65:00:00:07"
    decoded = {type(o).__name__: o for o in other.options}
    assert decoded["ServerIdentifier"].value == {"dhcp_server": "10.77.0.1"}
    assert decoded["IPAddressLeaseTime"].value == {"lease_time": 3600}
    tftp = decoded["TFTPServerName"].data
    assert tftp == b"tftp://10.77.0.1/"


# --- the crash packets of other servers' CVEs (protocols.md section 4) ------------------------------------------

def _raw(options: bytes, *, op: int = 1, htype: int = 1, hlen: int = 6, magic: bytes = codec.MAGIC) -> bytes:
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, htype, hlen, 0, 1, 0, 0, b"\0" * 4, b"\0" * 4,
                         b"\0" * 4, b"\0" * 4, mac(1).ljust(16, b"\0"), b"\0" * 64, b"\0" * 128)
    return header + magic + options


DISCOVER = bytes((53, 1, 1))

CRASH_PACKETS = {
    "option 61 of length 254": _raw(DISCOVER + bytes((61, 254)) + b"\x01" * 254 + b"\xff"),
    "option 12 of length 0": _raw(DISCOVER + bytes((12, 0)) + b"\xff"),
    "option length past the end": _raw(DISCOVER + bytes((60, 200)) + b"yealink"),
    "length byte missing": _raw(DISCOVER + bytes((60,))),
    "truncated header (bad UDP length)": _raw(DISCOVER + b"\xff")[:150],
    "client-id looping a parser": _raw(DISCOVER + bytes((61, 0)) * 100 + bytes((61, 1, 1)) + b"\xff"),
    "BOOTP without magic cookie": _raw(b"", magic=b"\0\0\0\0") + b"\0" * 64,
    "unknown op": _raw(DISCOVER + b"\xff", op=7),
    "unknown htype": _raw(DISCOVER + b"\xff", htype=99),
    "hlen over 16": _raw(DISCOVER + b"\xff", hlen=200),
    "message type 99": _raw(bytes((53, 1, 99, 255))),
    "message type of length 0": _raw(bytes((53, 0, 255))),
    "option 51 of length 2": _raw(DISCOVER + bytes((51, 2, 0, 1, 255))),
    "requested ip of length 3": _raw(bytes((53, 1, 3, 50, 3, 10, 77, 0, 255))),
    "server id of length 1": _raw(bytes((53, 1, 3, 54, 1, 10, 255))),
    "bad overload value": _raw(DISCOVER + bytes((52, 1, 9, 255))),
    "a BOOTREPLY sent to the server": _raw(DISCOVER + b"\xff", op=2),
    "empty datagram": b"",
}


@pytest.mark.parametrize("name", sorted(CRASH_PACKETS))
def test_crash_packets_are_dropped_without_harm(name: str) -> None:
    server = make_server()
    try:
        reply = server.handle(CRASH_PACKETS[name], ("0.0.0.0", 68), at(1000.0))
    except Dhcp4Error:
        reply = None
    if reply is not None and reply.data is not None:
        codec.decode(reply.data)  # anything we did answer is itself well formed
    # ... and the server still serves a normal client afterwards.
    assert dora(server, mac(99)).yiaddr != b"\0\0\0\0"


def test_option_61_of_length_254_is_echoed_unchanged() -> None:
    server = make_server()
    client_id = b"\x01" * 254
    reply = server.handle(message(codec.DISCOVER, mac(1), options={codec.CLIENT_ID: client_id}), ("0.0.0.0", 68),
                          at(1000.0))
    assert reply is not None and reply.data is not None
    assert codec.decode(reply.data).options[codec.CLIENT_ID] == client_id
