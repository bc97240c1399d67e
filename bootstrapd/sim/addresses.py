"""Putting each simulated phone's leased address on the simulator's interface (RTM_NEWADDR / RTM_DELADDR).

The kernel then answers ARP for every phone's address and every socket a phone opens can bind to it, so the server
sees each phone at its own leased address. The messages are encoded here with ``struct`` (as
:mod:`bootstrapd.net.interfaces` reads the interface with pyroute2 once): one small request and its
acknowledgement per phone, on a netlink socket of our own.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Interface, IPv6Interface

_RTM_NEWADDR, _RTM_DELADDR, _NLMSG_ERROR = 20, 21, 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_IFA_F_NODAD = 0x02  # a phone's DHCPv6 address is usable at once (the lab has no duplicate to detect)
_RT_SCOPE_UNIVERSE = 0


def _rtattr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


class Addresses:
    def __init__(self, ifindex: int) -> None:
        self.ifindex = ifindex
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
        self._sock.bind((0, 0))
        self._sock.settimeout(5.0)
        self._seq = 0
        self.added: list[IPv4Interface | IPv6Interface] = []

    def _request(self, kind: int, flags: int, address: IPv4Interface | IPv6Interface) -> int:
        self._seq += 1
        v6 = isinstance(address, IPv6Interface)
        family = socket.AF_INET6 if v6 else socket.AF_INET
        body = struct.pack("=BBBBI", family, address.network.prefixlen, _IFA_F_NODAD if v6 else 0,
                           _RT_SCOPE_UNIVERSE, self.ifindex)
        body += _rtattr(_IFA_ADDRESS, address.ip.packed) if v6 else (
            _rtattr(_IFA_LOCAL, address.ip.packed) + _rtattr(_IFA_ADDRESS, address.ip.packed))
        header = struct.pack("=LHHLL", 16 + len(body), kind, _NLM_F_REQUEST | _NLM_F_ACK | flags, self._seq, 0)
        self._sock.send(header + body)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_type, _flags, seq, _pid = struct.unpack_from("=LHHLL", data, offset)
                if msg_type == _NLMSG_ERROR and seq == self._seq:
                    code: int = struct.unpack_from("=i", data, offset + 16)[0]
                    return -code
                offset += max(16, (length + 3) & ~3)

    def add(self, address: IPv4Interface | IPv6Interface) -> None:
        """Add ``address`` (raises OSError); an address already there (a second boot) is fine."""
        code = self._request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, address)
        if code == errno.EEXIST:
            return
        if code:
            raise OSError(code, os.strerror(code))
        self.added.append(address)

    def remove_all(self) -> None:
        """Remove what :meth:`add` added, newest first (secondary addresses before the primary one)."""
        while self.added:
            address = self.added.pop()
            try:
                self._request(_RTM_DELADDR, 0, address)
            except OSError:
                pass

    def close(self) -> None:
        self._sock.close()
