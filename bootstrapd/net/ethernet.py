"""Ethernet frames carrying one IPv4/UDP datagram, built by us: the way a DHCP reply reaches a client with no address.

RFC 2131 4.1: an OFFER or ACK to a client without an address (no broadcast flag, no relay, no ciaddr) goes unicast to
yiaddr at chaddr. Sent through the kernel's IP stack, that needs a neighbour entry for yiaddr, and the neighbour table
cannot be trusted for it: an entry goes FAILED when the client does not answer ARP (it has no address yet), a link
flap flushes the table, and at most gc_thresh3 (1024 by default) entries exist at once. So the reply is framed here,
with its IPv4 and UDP headers and checksums, and written to a packet socket straight to chaddr (as ISC dhcpd and Kea
do). A pure function: no socket, no clock; the DHCPv4 adapter sends what it returns.
"""

from __future__ import annotations

import struct

ETH_P_IP = 0x0800
ETHERNET_HEADER = 14
IPV4_HEADER = 20
UDP_HEADER = 8
OVERHEAD = IPV4_HEADER + UDP_HEADER  # what an IPv4/UDP datagram adds to its payload within the MTU

_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_PSEUDO = struct.Struct("!4s4sBBH")
_PROTO_UDP = 17
_DONT_FRAGMENT = 0x4000


def internet_checksum(data: bytes) -> int:
    """RFC 1071: the one's-complement of the one's-complement sum of the big-endian 16-bit words of ``data``.

    Computed as one big-integer remainder (2**16 = 1 modulo 0xFFFF, so the sum of the words and the number the
    bytes spell are the same modulo 0xFFFF): a few microseconds for a DHCP reply, with no Python loop.
    """
    if len(data) & 1:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and any(data):
        total = 0xFFFF  # one's-complement "negative zero": the sum of non-zero words is 0xFFFF, not 0
    return ~total & 0xFFFF


def udp4_frame(src_mac: bytes, dst_mac: bytes, src_ip: bytes, dst_ip: bytes, src_port: int, dst_port: int,
               payload: bytes, *, ttl: int = 64) -> bytes:
    """An Ethernet II frame holding ``payload`` in a UDP datagram in an IPv4 packet (no options, DF set)."""
    udp_length = UDP_HEADER + len(payload)
    total = IPV4_HEADER + udp_length
    if total > 0xFFFF:
        raise ValueError(f"a {len(payload)}-byte payload does not fit an IPv4 packet")
    pseudo = _PSEUDO.pack(src_ip, dst_ip, 0, _PROTO_UDP, udp_length)
    udp_sum = internet_checksum(pseudo + _UDP.pack(src_port, dst_port, udp_length, 0) + payload) or 0xFFFF
    header = _IP.pack(0x45, 0, total, 0, _DONT_FRAGMENT, ttl, _PROTO_UDP, 0, src_ip, dst_ip)
    ip_sum = internet_checksum(header)
    header = header[:10] + ip_sum.to_bytes(2, "big") + header[12:]
    return (dst_mac + src_mac + ETH_P_IP.to_bytes(2, "big") + header
            + _UDP.pack(src_port, dst_port, udp_length, udp_sum) + payload)
