"""The provisioning interface: its index, MAC, MTU, state and addresses, read through netlink (pyroute2)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any


class InterfaceError(Exception):
    """The configured interface cannot be served on."""


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    mac: bytes
    mtu: int
    up: bool
    ipv4: tuple[IPv4Interface, ...]
    ipv6: tuple[IPv6Interface, ...]

    def ipv4_for(self, address: IPv4Address) -> IPv4Interface | None:
        """The interface address whose subnet holds ``address``."""
        for iface in self.ipv4:
            if address in iface.network:
                return iface
        return None

    @property
    def first_ipv4(self) -> IPv4Address | None:
        return self.ipv4[0].ip if self.ipv4 else None

    @property
    def first_global_ipv6(self) -> IPv6Address | None:
        for iface in self.ipv6:
            if not iface.ip.is_link_local:
                return iface.ip
        return None

    @property
    def link_local_ipv6(self) -> IPv6Address | None:
        for iface in self.ipv6:
            if iface.ip.is_link_local:
                return iface.ip
        return None


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def lookup(name: str) -> Interface:
    """Read the interface named ``name`` from the current network namespace."""
    from pyroute2 import IPRoute  # imported here: pyroute2 is only needed once the daemon starts

    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=name)
        if not links:
            raise InterfaceError(f"interface {name!r} does not exist")
        index = links[0]
        link = ipr.get_links(index)[0]
        flags = link["flags"]
        mac_text = _attr(link, "IFLA_ADDRESS") or "00:00:00:00:00:00"
        v4: list[IPv4Interface] = []
        v6: list[IPv6Interface] = []
        for addr in ipr.get_addr(index=index):
            text = _attr(addr, "IFA_ADDRESS")
            if text is None:
                continue
            if addr["family"] == socket.AF_INET:
                local = _attr(addr, "IFA_LOCAL") or text
                v4.append(ipaddress.IPv4Interface(f"{local}/{addr['prefixlen']}"))
            elif addr["family"] == socket.AF_INET6:
                v6.append(ipaddress.IPv6Interface(f"{text}/{addr['prefixlen']}"))
    return Interface(
        name=name,
        index=index,
        mac=bytes.fromhex(mac_text.replace(":", "")),
        mtu=int(_attr(link, "IFLA_MTU") or 1500),
        up=bool(flags & 1),  # IFF_UP
        ipv4=tuple(v4),
        ipv6=tuple(v6),
    )


_RTM_NEWNEIGH = 28
_NLM_F_REQUEST, _NLM_F_REPLACE, _NLM_F_CREATE = 0x1, 0x100, 0x400
_NDA_DST, _NDA_LLADDR = 1, 2
_NUD_STALE = 0x04


def _rtattr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


class Neighbours:
    """Adds neighbour (ARP) entries so a unicast reply reaches a client that has no address yet.

    RFC 2131 4.1: the server unicasts an OFFER/ACK to yiaddr at chaddr; the kernel would ARP for yiaddr, which
    nobody answers yet, so we install the mapping first, as dnsmasq does. The RTM_NEWNEIGH message is encoded here
    (28 bytes of structs, a few microseconds) rather than with pyroute2's encoder (~140 us each, measured), because
    it is on the DHCP hot path; it is sent on a non-blocking netlink socket without waiting for an answer.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        self._sock.bind((0, 0))
        self._sock.setblocking(False)
        self._seq = 0
        self._recent: dict[IPv4Address, bytes] = {}
        self.errors = 0

    def add(self, address: IPv4Address, mac: bytes) -> None:
        if self._recent.get(address) == mac:
            return
        if len(self._recent) > 65536:
            self._recent.clear()
        self._recent[address] = mac
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        body = struct.pack("=BxxxiHBB", socket.AF_INET, self.index, _NUD_STALE, 0, 0)
        body += _rtattr(_NDA_DST, address.packed) + _rtattr(_NDA_LLADDR, mac)
        header = struct.pack(
            "=LHHLL", 16 + len(body), _RTM_NEWNEIGH, _NLM_F_REQUEST | _NLM_F_CREATE | _NLM_F_REPLACE, self._seq, 0
        )
        try:
            self._sock.send(header + body)
        except OSError:
            self.errors += 1
        self._drain()

    def _drain(self) -> None:
        # The kernel reports failures (never successes, no NLM_F_ACK) on this socket; count and discard them.
        while True:
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors += 1
                return
            if data:
                self.errors += 1
                self._recent.clear()

    def close(self) -> None:
        self._sock.close()
