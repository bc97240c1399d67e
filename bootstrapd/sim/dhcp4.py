"""A DHCPv4 client, the phone's side of :mod:`bootstrapd.dhcp4.codec`: DISCOVER, OFFER, REQUEST, ACK.

No I/O and no clock: :meth:`Dhcp4Client.start`, :meth:`receive` and :meth:`on_timer` take ``now`` and return the
DHCP payloads to send (broadcast from 0.0.0.0:68 to 255.255.255.255:67; the adapter frames them). The first OFFER
is taken, as phones do. Retransmission follows RFC 2131 4.1: 4 s, then doubling up to 64 s, each randomised by
+-1 s; after ``tries`` unanswered DISCOVERs the client gives up ("no OFFER"), after ``tries`` unanswered REQUESTs
it starts over once from DISCOVER and then gives up ("no ACK"). A NAK sends it back to DISCOVER after a pause
of 3-4 s (at most ``MAX_RESTARTS`` times).

A phone that remembers its address (``previous``: the lease of its last boot) starts in INIT-REBOOT (RFC 2131
4.4.2, 3.2): a broadcast REQUEST with option 50 = that address, no server identifier, ciaddr 0. An ACK binds it at
once; a NAK (the address is no longer its own) sends it to DISCOVER at once; after ``REBOOT_TRIES`` unanswered
REQUESTs it does DISCOVER too (RFC 2131 allows keeping the old address; a phone that has no working lease must
not guess).

What the phone sends is what a Yealink sends (protocols.md section 4): option 60 ``yealink``, a client identifier
of type 1 + MAC, a maximum message size, its host name, and a parameter request list. The list is a desk phone's
(unverified: no Yealink capture of option 55 is at hand); the phone's IPv4 Custom Option joins it when set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface

from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Dhcp4Error, Packet

VENDOR_CLASS = b"yealink"
# subnet mask, router, DNS, host name, domain, broadcast, NTP, vendor-specific (43), NetBIOS name server, TFTP server
# name (66), boot file (67), SIP servers (120), classless static routes (121), V-I vendor (125), VLAN ID (132).
PARAMETER_REQUEST = (1, 3, 6, 12, 15, 28, 42, 43, 44, 66, 67, 120, 121, 125, 132)
MAX_MESSAGE_SIZE = 1500
MAX_RESTARTS = 10  # NAKs before the phone gives up (a phone keeps trying; the simulator's run has an end)
REBOOT_TRIES = 2  # INIT-REBOOT REQUESTs before DISCOVER (4 s, then 8 s)
NAK_PAUSE = 3.0


@dataclass(frozen=True)
class Lease:
    address: IPv4Address
    interface: IPv4Interface  # address with the subnet mask the server gave
    server: IPv4Address  # option 54
    router: IPv4Address | None
    lease_time: int | None
    options: dict[int, bytes]  # every option of the ACK


@dataclass
class Dhcp4Client:
    mac: bytes  # 6 bytes
    rng: random.Random
    hostname: str = ""
    custom_option: int | None = None  # the phone's IPv4 Custom Option (128-254)
    broadcast_flag: bool = False
    tries: int = 5  # DISCOVERs (and REQUESTs) before giving up
    previous: IPv4Address | None = None  # the address of the last boot: INIT-REBOOT instead of DISCOVER
    first_timeout: float = 4.0
    max_timeout: float = 64.0
    state: str = "init"  # init, rebooting, selecting, requesting, bound, failed
    init_reboot: str = ""  # how INIT-REBOOT ended: "ack", "nak", "no answer" ("" when not tried)
    failure: str = ""
    lease: Lease | None = None
    deadline: float | None = None
    xid: int = 0
    sent: int = 0  # messages sent (first transmissions and retransmissions)
    retransmissions: int = 0
    naks: int = 0
    _started: float = 0.0
    _attempt: int = 0
    _restarts: int = 0
    _offer: Packet | None = field(default=None, repr=False)
    _last: bytes = b""

    def start(self, now: float) -> list[bytes]:
        self._started = now
        if self.previous is not None:
            return self._reboot(self.previous, now)
        return self._discover(now)

    # -- messages -------------------------------------------------------------------------------------------------

    def _request_list(self) -> bytes:
        codes = list(PARAMETER_REQUEST)
        if self.custom_option is not None and self.custom_option not in codes:
            codes.append(self.custom_option)
        return bytes(codes)

    def _packet(self, msg_type: int, now: float, extra: dict[int, bytes]) -> bytes:
        options: dict[int, bytes] = {codec.MESSAGE_TYPE: bytes((msg_type,)),
                                     codec.CLIENT_ID: b"\x01" + self.mac}
        options.update(extra)
        options[codec.MAX_SIZE] = MAX_MESSAGE_SIZE.to_bytes(2, "big")
        options[codec.VENDOR_CLASS] = VENDOR_CLASS
        if self.hostname:
            options[codec.HOSTNAME] = self.hostname.encode()
        options[codec.PARAM_LIST] = self._request_list()
        packet = Packet(op=codec.BOOTREQUEST, xid=self.xid, secs=min(int(now - self._started), 0xFFFF),
                        flags=codec.BROADCAST_FLAG if self.broadcast_flag else 0, chaddr=self.mac,
                        options=options)
        return codec.encode(packet)

    def _send(self, data: bytes, now: float) -> list[bytes]:
        self._last = data
        self.sent += 1
        timeout = min(self.first_timeout * 2 ** self._attempt, self.max_timeout)
        self.deadline = now + max(0.5, timeout + self.rng.uniform(-1.0, 1.0))
        return [data]

    def _discover(self, now: float) -> list[bytes]:
        self.state = "selecting"
        self.xid = self.rng.getrandbits(32)
        self._attempt = 0
        self._offer = None
        return self._send(self._packet(codec.DISCOVER, now, {}), now)

    def _reboot(self, address: IPv4Address, now: float) -> list[bytes]:
        self.state = "rebooting"
        self.xid = self.rng.getrandbits(32)
        self._attempt = 0
        self._offer = None
        return self._send(self._packet(codec.REQUEST, now, {codec.REQUESTED_IP: address.packed}), now)

    def _request(self, offer: Packet, now: float) -> list[bytes]:
        self.state = "requesting"
        self._attempt = 0
        self._offer = offer
        extra = {codec.REQUESTED_IP: offer.yiaddr, codec.SERVER_ID: offer.options[codec.SERVER_ID]}
        return self._send(self._packet(codec.REQUEST, now, extra), now)

    # -- input ----------------------------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """A datagram from port 67 (any chaddr: the caller may pass every phone's replies to every client)."""
        if self.state not in ("rebooting", "selecting", "requesting"):
            return []
        try:
            packet = codec.decode(data)
            if packet.op != codec.BOOTREPLY or packet.xid != self.xid or packet.mac != self.mac:
                return []
            kind = packet.msg_type()
            server = packet.server_id()
        except Dhcp4Error:
            return []
        if self.state == "selecting" and kind == codec.OFFER and server is not None and packet.yiaddr != codec.ZERO:
            return self._request(packet, now)
        if self.state == "rebooting":  # any server may answer: the phone named none
            if kind == codec.NAK:
                self.init_reboot = "nak"
                self.naks += 1
                return self._discover(now)
            if kind == codec.ACK and packet.yiaddr != codec.ZERO:
                self.init_reboot = "ack"
                return self._bound(packet, now)
            return []
        if self.state != "requesting" or self._offer is None:
            return []
        if server is not None and server.packed != self._offer.options.get(codec.SERVER_ID):
            return []  # another server's answer to our REQUEST for this one's offer
        if kind == codec.NAK:
            return self._nak(now)
        if kind == codec.ACK:
            return self._bound(packet, now)
        return []

    def _bound(self, ack: Packet, now: float) -> list[bytes]:
        address = IPv4Address(ack.yiaddr)
        mask = ack.options.get(codec.SUBNET_MASK)
        prefix = bin(int.from_bytes(mask, "big")).count("1") if mask is not None and len(mask) == 4 else 24
        router = ack.options.get(codec.ROUTER)
        try:
            lease_time = ack.lease_time()
            server = ack.server_id()
        except Dhcp4Error:
            lease_time, server = None, None
        if server is None and self._offer is not None:
            server = IPv4Address(self._offer.options[codec.SERVER_ID])
        self.lease = Lease(address, IPv4Interface(f"{address}/{prefix}"), server or IPv4Address(0),
                           IPv4Address(router[:4]) if router and len(router) >= 4 else None, lease_time,
                           dict(ack.options))
        self.state = "bound"
        self.deadline = None
        return []

    def _nak(self, now: float) -> list[bytes]:
        """Back to INIT, and DISCOVER again after a pause (busybox udhcpc waits 3 s too): a server that offered an
        address it then refuses must not be hammered."""
        self._restarts += 1
        self.naks += 1
        if self._restarts > MAX_RESTARTS:
            return self._fail(f"NAK after {self._restarts} attempts")
        self.state = "init"
        self.deadline = now + NAK_PAUSE + self.rng.uniform(0.0, 1.0)
        return []

    def _fail(self, reason: str) -> list[bytes]:
        self.state = "failed"
        self.failure = reason
        self.deadline = None
        return []

    def on_timer(self, now: float) -> list[bytes]:
        if self.deadline is not None and now >= self.deadline and self.state == "init" and self.sent:
            return self._discover(now)  # the pause after a NAK is over
        if self.deadline is None or now < self.deadline or self.state not in ("rebooting", "selecting", "requesting"):
            return []
        self._attempt += 1
        if self.state == "rebooting" and self._attempt >= REBOOT_TRIES:
            self.init_reboot = "no answer"
            return self._discover(now)
        if self._attempt >= self.tries:
            if self.state == "selecting":
                return self._fail(f"no OFFER after {self.tries} DISCOVERs")
            if self._restarts == 0:
                self._restarts += 1
                return self._discover(now)  # RFC 2131 4.4.1: no ACK, back to INIT
            return self._fail(f"no ACK after {self.tries} REQUESTs")
        self.retransmissions += 1
        self.sent += 1
        data = self._last
        timeout = min(self.first_timeout * 2 ** self._attempt, self.max_timeout)
        self.deadline = now + max(0.5, timeout + self.rng.uniform(-1.0, 1.0))
        return [data]
