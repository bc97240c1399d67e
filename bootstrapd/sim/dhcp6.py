"""A DHCPv6 client, the phone's side of :mod:`bootstrapd.dhcp6.codec`: SOLICIT, ADVERTISE, REQUEST, REPLY.

No I/O and no clock. The client identifier is a DUID-LL of the phone's MAC (so the server finds the MAC, its class
and the OUI table from it), one IA_NA, and an option request list asking for option 59 (the boot-file URL: the
phone's IPv6 provisioning source) and DNS. Retransmission is RFC 8415 15: the first SOLICIT/REQUEST after 1 s, each
next one after twice the last, +-10 %; after ``tries`` unanswered SOLICITs the client gives up ("no ADVERTISE"),
after ``tries`` unanswered REQUESTs too ("no REPLY"). The first ADVERTISE is taken. Messages go from the phone
namespace's link-local address to ff02::1:2 port 547; the adapter dispatches replies by transaction id.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from bootstrapd.dhcp6 import codec
from bootstrapd.dhcp6.codec import Dhcp6Error, IaNa, Message

ORO = (codec.OPT_BOOTFILE_URL, codec.OPT_DNS_SERVERS)


def duid_ll(mac: bytes) -> bytes:
    return b"\x00\x03\x00\x01" + mac


@dataclass
class Dhcp6Client:
    mac: bytes
    rng: random.Random
    tries: int = 5
    state: str = "init"  # init, soliciting, requesting, bound, failed
    failure: str = ""
    address: IPv6Address | None = None
    bootfile_url: str | None = None  # option 59
    deadline: float | None = None
    xid: int = 0
    retransmissions: int = 0
    _attempt: int = 0
    _timeout: float = 1.0
    _started: float = 0.0
    _last: bytes = field(default=b"", repr=False)
    _server: bytes = field(default=b"", repr=False)
    _ia: IaNa | None = field(default=None, repr=False)

    @property
    def duid(self) -> bytes:
        return duid_ll(self.mac)

    @property
    def iaid(self) -> int:
        return int.from_bytes(self.mac[2:], "big")

    def _message(self, kind: int, now: float, extra: list[codec.Option]) -> bytes:
        elapsed = min(int((now - self._started) * 100), 0xFFFF)
        ia = IaNa(self.iaid) if self._ia is None else IaNa(self.iaid, 0, 0, self._ia.addresses)
        options: list[codec.Option] = [(codec.OPT_CLIENTID, self.duid), *extra,
                                       (codec.OPT_IA_NA, ia.encode()),
                                       (codec.OPT_ORO, codec.encode_oro(list(ORO))),
                                       (codec.OPT_ELAPSED_TIME, elapsed.to_bytes(2, "big"))]
        return Message(kind, self.xid, options).encode()

    def _send(self, data: bytes, now: float) -> list[bytes]:
        self._last = data
        self._attempt, self._timeout = 0, 1.0
        self.deadline = now + self._timeout * self.rng.uniform(0.9, 1.1)
        return [data]

    def start(self, now: float) -> list[bytes]:
        self._started = now
        self.state = "soliciting"
        self.xid = self.rng.getrandbits(24)
        return self._send(self._message(codec.SOLICIT, now, []), now)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        if self.state not in ("soliciting", "requesting"):
            return []
        try:
            msg = codec.parse(data)
            if not isinstance(msg, Message) or msg.transaction_id != self.xid or msg.get(codec.OPT_CLIENTID) != \
                    self.duid:
                return []
            server = msg.get(codec.OPT_SERVERID)
            raw_ia = msg.get(codec.OPT_IA_NA)
            ia = IaNa.decode(raw_ia) if raw_ia is not None else None
        except Dhcp6Error:
            return []
        if server is None or ia is None or not ia.addresses or (ia.status is not None and ia.status.code):
            return []  # no address for us in it (NoAddrsAvail): wait for another server or the next SOLICIT
        if self.state == "soliciting" and msg.msg_type == codec.ADVERTISE:
            self.state = "requesting"
            self._server, self._ia = server, ia
            self.xid = self.rng.getrandbits(24)
            return self._send(self._message(codec.REQUEST, now, [(codec.OPT_SERVERID, server)]), now)
        if self.state == "requesting" and msg.msg_type == codec.REPLY and server == self._server:
            self.address = ia.addresses[0].address
            url = msg.get(codec.OPT_BOOTFILE_URL)
            self.bootfile_url = url.decode("utf-8", "replace").strip() or None if url else None
            self.state = "bound"
            self.deadline = None
        return []

    def on_timer(self, now: float) -> list[bytes]:
        if self.deadline is None or now < self.deadline or self.state not in ("soliciting", "requesting"):
            return []
        self._attempt += 1
        if self._attempt >= self.tries:
            self.state = "failed"
            self.failure = ("no ADVERTISE" if self._server == b"" else "no REPLY") + f" after {self.tries} tries"
            self.deadline = None
            return []
        self.retransmissions += 1
        self._timeout *= 2
        self.deadline = now + self._timeout * self.rng.uniform(0.9, 1.1)
        return [self._last]
