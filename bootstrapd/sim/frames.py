"""Ethernet frames for the simulated phones' DHCP: a client without an address, one MAC per phone, all phones on
one packet socket. Pure functions: no socket, no clock.

- :func:`dhcp_request_frame`: a client message from 0.0.0.0:68 to 255.255.255.255:67, Ethernet source = the
  phone's MAC (the switch learns every phone's MAC, as it would for real phones);
- :func:`udp_payload`: the UDP payload of a received frame (IPv4, no fragments), or None;
- :func:`garp_frame`: the gratuitous ARP a phone sends once its address is configured. It announces the address at
  the MAC of the interface the simulator runs on (the kernel answers ARP for every phone's address from there), so a
  server that installed a neighbour entry for yiaddr -> chaddr to unicast its ACK (dnsmasq does) sends the phone's
  later traffic where the kernel accepts it;
- :func:`stray_target`: the address a frame sent to a phone's own MAC was for (see :data:`DHCP_CLIENT_FILTER`);
- :data:`DHCP_CLIENT_FILTER`: a classic BPF program for the packet socket that keeps only DHCP replies and frames
  for other MACs, so the storm's TFTP and HTTP traffic never reaches Python through it.
"""

from __future__ import annotations

import struct

from bootstrapd.net.ethernet import (  # the frame the DHCPv4 server sends to chaddr, built the same way
    ETH_P_IP,
    udp4_frame,
)

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
_ZERO = b"\0\0\0\0"
_ALL_ONES = b"\xff\xff\xff\xff"


def dhcp_request_frame(mac: bytes, payload: bytes) -> bytes:
    return udp4_frame(mac, BROADCAST_MAC, _ZERO, _ALL_ONES, 68, 67, payload)


def udp_payload(frame: bytes) -> tuple[bytes, int, int] | None:
    """(payload, source port, destination port) of an Ethernet II frame carrying IPv4 UDP, else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14] >> 4 != 4 or ihl < 20 or frame[23] != 17:
        return None
    if struct.unpack_from("!H", frame, 20)[0] & 0x3FFF:
        return None  # a fragment (more-fragments flag or an offset): DHCP replies never are
    start = 14 + ihl
    if len(frame) < start + 8:
        return None
    sport, dport, length = struct.unpack_from("!HHH", frame, start)
    if length < 8 or start + length > len(frame):
        return None
    return frame[start + 8: start + length], sport, dport


def garp_frame(mac: bytes, address: bytes) -> bytes:
    """A gratuitous ARP request (sender = target = ``address``) from ``mac``, broadcast."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 1, mac, address, b"\0" * 6, address)
    return BROADCAST_MAC + mac + ETH_P_ARP.to_bytes(2, "big") + arp


def stray_target(frame: bytes) -> bytes | None:
    """The IPv4 address a frame for another MAC was meant for (an IPv4 packet's destination, an ARP request's
    target), or None: what the simulator gets when a server still sends to a phone's own MAC (a stale neighbour
    entry), so it can announce that address again."""
    if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
        return frame[30:34]
    if len(frame) >= 42 and frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x01":
        return frame[38:42]
    return None


# Classic BPF for the packet socket (struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}; jumps count instructions
# after the next one). It keeps IPv4 UDP to port 68 (DHCP replies) and frames the kernel classed "to another host"
# (a phone's own MAC: see stray_target); it drops everything else, our own outgoing frames included, so the
# storm's TFTP and HTTP traffic never reaches Python through it.
_SKF_PKTTYPE = 0xFFFFF004  # SKF_AD_OFF + SKF_AD_PKTTYPE
_PACKET_OTHERHOST = 3
_BPF = (
    (0x28, 0, 0, 12),           # 0  ldh [12]            ethertype
    (0x15, 0, 7, 0x0800),       # 1  jeq IPv4 ? 2 : 9
    (0x30, 0, 0, 23),           # 2  ldb [23]            IP protocol
    (0x15, 0, 5, 17),           # 3  jeq UDP ? 4 : 9
    (0x28, 0, 0, 20),           # 4  ldh [20]            flags + fragment offset
    (0x45, 3, 0, 0x1FFF),       # 5  jset offset ? 9 : 6
    (0xB1, 0, 0, 14),           # 6  ldxb 4*([14]&0xf)   IP header length
    (0x48, 0, 0, 16),           # 7  ldh [x + 16]        UDP destination port
    (0x15, 2, 0, 68),           # 8  jeq 68 ? 11 : 9
    (0x20, 0, 0, _SKF_PKTTYPE),  # 9  ld pkttype
    (0x15, 0, 1, _PACKET_OTHERHOST),  # 10 jeq OTHERHOST ? 11 : 12
    (0x06, 0, 0, 0x40000),      # 11 ret 256 KB          accept
    (0x06, 0, 0, 0),            # 12 ret 0               drop
)
DHCP_CLIENT_FILTER = b"".join(struct.pack("=HBBI", *insn) for insn in _BPF)
DHCP_CLIENT_FILTER_LENGTH = len(_BPF)
