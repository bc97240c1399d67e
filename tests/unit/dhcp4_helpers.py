"""Building DHCPv4 client messages and a server core for unit tests."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from bootstrapd.config import loads
from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Packet
from bootstrapd.dhcp4.server import Dhcp4Server
from tests.unit.clock_helpers import at

SERVER = IPv4Address("10.77.0.1")
NETWORK = IPv4Network("10.77.0.0/24")

WITHOUT_OPTIONS = """
[server]
interface = "eth1"
[dhcp4]
range = "10.77.0.100-10.77.0.103"
router = "10.77.0.1"
dns = ["10.77.0.1", "10.77.0.2"]
rate_limit = 1000.0
rate_burst = 1000
"""
BASE = WITHOUT_OPTIONS + """[dhcp4.options]
66 = "tftp://10.77.0.1/"
160 = "http://10.77.0.1/p/"
"""


def make_server(extra: str = "", base: str = BASE) -> Dhcp4Server:
    settings = loads(base + extra)
    return Dhcp4Server(settings.dhcp4, SERVER, NETWORK)


def mac(n: int, oui: str = "02:00:00") -> bytes:
    return bytes.fromhex(oui.replace(":", "")) + n.to_bytes(3, "big")


def message(kind: int, hw: bytes, *, xid: int = 0x1234, options: dict[int, bytes] | None = None,
            ciaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0", flags: int = 0) -> bytes:
    packet = Packet(op=codec.BOOTREQUEST, xid=xid, flags=flags, chaddr=hw.ljust(16, b"\0"),
                    ciaddr=IPv4Address(ciaddr).packed, giaddr=IPv4Address(giaddr).packed)
    packet.options = {codec.MESSAGE_TYPE: bytes((kind,)), **(options or {})}
    return codec.encode(packet)


def dora(server: Dhcp4Server, hw: bytes, now: float = 1000.0, options: dict[int, bytes] | None = None) -> Packet:
    """DISCOVER, OFFER, REQUEST, ACK; returns the decoded ACK."""
    offer = server.handle(message(codec.DISCOVER, hw, options=options), ("0.0.0.0", 68), at(now))
    assert offer is not None and offer.data is not None
    offered = codec.decode(offer.data)
    assert offered.msg_type() == codec.OFFER
    request_options = {codec.SERVER_ID: SERVER.packed, codec.REQUESTED_IP: offered.yiaddr, **(options or {})}
    ack = server.handle(message(codec.REQUEST, hw, options=request_options), ("0.0.0.0", 68), at(now))
    assert ack is not None and ack.data is not None
    acked = codec.decode(ack.data)
    assert acked.msg_type() == codec.ACK, acked.options
    assert ack.commit and ack.commit[0].address == IPv4Address(acked.yiaddr)
    return acked
