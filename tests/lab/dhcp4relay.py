"""A DHCPv4 relay-agent stand-in for the lab: REBINDING requests for many clients at once; prints one JSON report.

    python -m tests.lab.dhcp4relay GIADDR MAC=ADDRESS[=CLIENT_ID_HEX] ...

For each client it broadcasts a REQUEST with ``ciaddr`` = its address and no server identifier (RFC 2131 4.3.2:
REBINDING, as a client does once T2 passes and its server is silent), relayed (``giaddr``) so that the answers come
back to this one socket; retransmits to those not answered for 30 s; prints ``{mac: [type, yiaddr, server_id]}``.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from ipaddress import IPv4Address

from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Packet

WAIT = 30.0


def request(mac: bytes, address: IPv4Address, client_id: bytes, giaddr: IPv4Address, xid: int) -> bytes:
    packet = Packet(op=codec.BOOTREQUEST, xid=xid, chaddr=mac.ljust(16, b"\0"), ciaddr=address.packed,
                    giaddr=giaddr.packed)
    packet.options = {codec.MESSAGE_TYPE: bytes((codec.REQUEST,))}
    if client_id:
        packet.options[codec.CLIENT_ID] = client_id
    return codec.encode(packet)


def main(argv: list[str]) -> None:
    giaddr = IPv4Address(argv[0])
    clients: dict[int, tuple[bytes, IPv4Address, bytes]] = {}
    for n, item in enumerate(argv[1:], start=1):
        mac_text, address_text, *cid = item.split("=")
        clients[0x5EB1_0000 + n] = (bytes.fromhex(mac_text.replace(":", "")), IPv4Address(address_text),
                                    bytes.fromhex(cid[0]) if cid else b"")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, 25, b"eth0")  # SO_BINDTODEVICE: a limited broadcast needs an interface
    sock.bind((str(giaddr), 67))
    answers: dict[str, list[str]] = {}
    deadline = time.monotonic() + WAIT
    next_send = 0.0
    while time.monotonic() < deadline and len(answers) < len(clients):
        if time.monotonic() >= next_send:
            for xid, (mac, address, client_id) in clients.items():
                if mac.hex() not in answers:
                    sock.sendto(request(mac, address, client_id, giaddr, xid), ("255.255.255.255", 67))
                    time.sleep(0.002)  # a rebinding storm, not a flood
            next_send = time.monotonic() + 3.0
        ready, _, _ = select.select([sock], [], [], 0.2)
        while ready:
            data = sock.recv(4096)
            try:
                reply = codec.decode(data)
            except codec.Dhcp4Error:
                break
            if reply.xid in clients:
                server = reply.options.get(codec.SERVER_ID, b"\0\0\0\0")
                answers[clients[reply.xid][0].hex()] = [codec.TYPE_NAMES.get(reply.msg_type(), "?"),
                                                         codec.ntoa(reply.yiaddr), codec.ntoa(server)]
            ready, _, _ = select.select([sock], [], [], 0)
    print(json.dumps(answers))


if __name__ == "__main__":
    main(sys.argv[1:])
