"""The provisioning interface: its index, MAC, MTU, state and addresses, read through netlink (pyroute2)."""

from __future__ import annotations

import ipaddress
import socket
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
