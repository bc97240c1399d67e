"""Sockets bound to the provisioning interface only.

Every service socket carries SO_BINDTODEVICE, so even a socket bound to the wildcard address never receives or
answers on another interface: a DHCP server must not leak onto a network that is not its own.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bootstrapd.net.interfaces import Interface

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32


def udp_socket(
    family: socket.AddressFamily,
    interface: str,
    address: str,
    port: int,
    *,
    broadcast: bool = False,
    reuse_address: bool = False,
    reuse_port: bool = False,
    rcvbuf: int = 4 << 20,
    sndbuf: int = 4 << 20,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``address:port`` on ``interface`` only."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # A boot storm arrives in bursts: ask for big buffers. The *FORCE variants pass net.core.rmem_max/wmem_max
        # with CAP_NET_ADMIN (root has it; the systemd unit does not grant it, nothing else needs it); without it,
        # take what the kernel allows, so raise those sysctls on an appliance for thousands of phones.
        sizes = ((SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf), (SO_SNDBUFFORCE, socket.SO_SNDBUF, sndbuf))
        for forced, plain, size in sizes:
            try:
                sock.setsockopt(socket.SOL_SOCKET, forced, size)
            except OSError:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, plain, size)
                except OSError:
                    pass
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def join_ipv4_group(sock: socket.socket, group: str, ifindex: int) -> None:
    """IP_ADD_MEMBERSHIP with an ip_mreqn naming the interface by index (not by an address that may change)."""
    mreqn = socket.inet_aton(group) + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)


def join_ipv6_group(sock: socket.socket, group: str, ifindex: int) -> None:
    mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", ifindex)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)


def tcp_listener(family: socket.AddressFamily, interface: str, address: str, port: int, *, scope: int = 0,
                 backlog: int = 1024) -> socket.socket:
    """A non-blocking listening TCP socket on ``address:port`` of ``interface`` only (HTTP, FTP)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, interface.encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port, 0, scope))
        else:
            sock.bind((address, port))
        sock.setblocking(False)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def interface_binds(interface: Interface) -> list[tuple[socket.AddressFamily, str, int]]:
    """(family, address, scope id) of every address of the interface, IPv4 first."""
    binds: list[tuple[socket.AddressFamily, str, int]] = [(socket.AF_INET, str(a.ip), 0) for a in interface.ipv4]
    binds += [(socket.AF_INET6, str(a.ip), interface.index if a.ip.is_link_local else 0) for a in interface.ipv6]
    return binds
