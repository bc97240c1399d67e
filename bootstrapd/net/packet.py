"""A packet socket that sends Ethernet frames on the provisioning interface (and receives nothing).

Used for DHCPv4 replies to clients that have no address yet (see :mod:`bootstrapd.net.ethernet`): the frame goes
straight to chaddr, whatever the kernel's neighbour table holds. Protocol 0 and no bind: the socket is never handed
any received packet, so it costs nothing on the receive path. Needs CAP_NET_RAW and, under systemd,
``AF_PACKET`` in ``RestrictAddressFamilies``.
"""

from __future__ import annotations

import socket

from bootstrapd.net.ethernet import ETH_P_IP


class PacketSender:
    def __init__(self, interface: str) -> None:
        self.interface = interface
        self._address = (interface, ETH_P_IP)
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    def send(self, frame: bytes) -> None:
        """Write one frame; raises BlockingIOError when the send buffer is full, OSError on other failures."""
        self._sock.sendto(frame, self._address)

    def close(self) -> None:
        self._sock.close()
