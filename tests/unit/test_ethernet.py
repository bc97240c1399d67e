"""The Ethernet/IPv4/UDP frame a unicast DHCP reply is sent in, checked by an independent decoder (scapy)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from bootstrapd.dhcp4 import codec
from bootstrapd.net.ethernet import internet_checksum, udp4_frame
from tests.unit.dhcp4_helpers import SERVER, dora, mac, make_server

SERVER_MAC = bytes.fromhex("027700000001")


def _decoded(frame: bytes) -> Ether:
    packet = Ether(frame)
    # scapy recomputes a checksum only when it is unset: compare what we sent with what scapy computes itself.
    ip, udp = packet[IP], packet[UDP]
    fresh = Ether(bytes(Ether(src=packet.src, dst=packet.dst) / IP(
        src=ip.src, dst=ip.dst, ttl=ip.ttl, flags=ip.flags, id=ip.id) / UDP(sport=udp.sport, dport=udp.dport)
        / bytes(udp.payload)))
    assert ip.chksum == fresh[IP].chksum, "IPv4 header checksum"
    assert udp.chksum == fresh[UDP].chksum, "UDP checksum"
    return packet


def test_a_dhcp_ack_framed_for_chaddr_decodes_with_scapy() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    payload = codec.encode(ack)
    frame = udp4_frame(SERVER_MAC, mac(1), SERVER.packed, ack.yiaddr, 67, 68, payload)
    packet = _decoded(frame)
    assert packet.dst == "02:00:00:00:00:01" and packet.src == "02:77:00:00:00:01" and packet.type == 0x0800
    ip, udp = packet[IP], packet[UDP]
    assert (ip.version, ip.ihl, ip.proto, ip.ttl, ip.len) == (4, 5, 17, 64, 20 + 8 + len(payload))
    assert ip.src == "10.77.0.1" and ip.dst == "10.77.0.100"
    assert (udp.sport, udp.dport, udp.len) == (67, 68, 8 + len(payload))
    assert bytes(udp.payload) == payload
    assert codec.decode(bytes(udp.payload)).msg_type() == codec.ACK


@given(payload=st.binary(max_size=1472), src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4),
       sport=st.integers(0, 65535), dport=st.integers(0, 65535))
def test_checksums_match_scapys_for_any_payload(payload: bytes, src: bytes, dst: bytes, sport: int,
                                                 dport: int) -> None:
    packet = _decoded(udp4_frame(SERVER_MAC, mac(9), src, dst, sport, dport, payload))
    assert bytes(packet[UDP].payload) == payload


def test_internet_checksum_edge_cases() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\0\0") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == 0x0000  # the sum is one's-complement "negative zero"
    assert internet_checksum(b"\x00\x01\xf2\x03\xf4\xf5\xf6\xf7") == 0x220D  # RFC 1071 example, complemented
    assert internet_checksum(b"\x01") == ~0x0100 & 0xFFFF  # odd length: padded with a zero byte
