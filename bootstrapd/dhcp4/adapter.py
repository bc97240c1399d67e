"""The asyncio side of DHCPv4: one socket on port 67 of the provisioning interface, the core, the lease store.

A reply that hands out an address is sent from the store's group-commit callback, i.e. only once its lease is
durable. Unicast replies to a client without an address go out as Ethernet frames we build, on a packet socket,
straight to chaddr (see net.ethernet): the kernel's neighbour table is never involved.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from bootstrapd.clock import Now
from bootstrapd.config import Settings
from bootstrapd.dhcp4.server import Dhcp4Server, Reply
from bootstrapd.leases.store import Lease, Lease4
from bootstrapd.log import RateLimited
from bootstrapd.net.ethernet import udp4_frame
from bootstrapd.net.packet import PacketSender
from bootstrapd.net.sockets import udp_socket
from bootstrapd.net.udp import DatagramEndpoint, open_endpoint
from bootstrapd.service import Context, StartupError

log = logging.getLogger("bootstrapd.dhcp4")
_limited = RateLimited(log, interval=30.0)
# Now(...) runs the named tuple's Python __new__; tuple.__new__ makes the same object without it (100 ns per message).
_new = tuple.__new__

# The event kind of each reply type the core names (its TYPE_NAMES, and the two without a reply), made once.
_KINDS = {kind: "dhcp4." + kind.lower()
          for kind in ("OFFER", "ACK", "NAK", "INFORM", "DECLINE", "RELEASE", "exhausted", "reserved_in_use")}
_WARNED = frozenset({"exhausted", "reserved_in_use"})


def _warn(kind: str, event: dict[str, Any]) -> None:
    """The rate-limited warnings a reply's event calls for (rare: the hot path only tests for them)."""
    if kind == "exhausted":
        _limited.warning("exhausted", "dhcp4 pool exhausted: no address to offer", mac=event.get("mac"))
    elif kind == "reserved_in_use":
        _limited.warning("reserved", "dhcp4: the address reserved for %s, %s, is held by another client: "
                         "none offered until that client's renewal is refused or its lease ends",
                         event.get("mac"), event.get("address"))
    left_out = event.get("left_out")
    if left_out:
        _limited.warning("left_out", "dhcp4: option(s) %s left out of a %s to %s: they do not fit the "
                         "%d-byte reply (the client's option 57, else 576, and the MTU)",
                         ", ".join(map(str, left_out)), kind, event.get("mac"), event.get("max_size"))


class Dhcp4Service:
    name = "dhcp4"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.core: Dhcp4Server | None = None
        self.endpoint: DatagramEndpoint | None = None
        self.frames: PacketSender | None = None
        self._source = (b"", b"")  # our MAC and IPv4 address, the source of the frames
        # Resolved once, not per message: the context's event stream and store are the daemon's for its lifetime.
        self._publish = ctx.events.publish
        self._commit_then = ctx.store.commit_then

    async def start(self) -> None:
        settings = self.ctx.settings.dhcp4
        iface = self.ctx.interface
        address = iface.ipv4_for(settings.range_start)
        if address is None:
            raise StartupError("dhcp4.range is not on the interface's subnet")
        self.core = Dhcp4Server(settings, address.ip, address.network, self.ctx.store.leases4(),
                                variables=self.ctx.url_variables(), mtu=iface.mtu)
        self.ctx.owners.register(self.core.owner)
        self._share()
        try:
            self.frames = PacketSender(iface.name)
        except OSError as exc:
            why = exc.strerror or exc
            raise StartupError(f"dhcp4: cannot open a packet socket on {iface.name} for unicast replies ({why}); "
                               "it needs CAP_NET_RAW, and AF_PACKET in systemd's RestrictAddressFamilies") from None
        self._source = (iface.mac, address.ip.packed)
        sock = udp_socket(socket.AF_INET, iface.name, "0.0.0.0", 67, broadcast=True, reuse_address=True)
        self.endpoint = await open_endpoint("dhcp4", sock, self._datagram, self.ctx.events)
        log.info("dhcp4 pool %s-%s, %d leases loaded", settings.range_start, settings.range_end,
                 len(self.core.pool.by_address),
                 extra={"server_id": str(address.ip)})

    def _datagram(self, data: bytes, source: tuple[str, int]) -> None:
        assert self.core is not None
        reply = self.core.handle(data, source, _new(Now, (time.time(), time.monotonic())))
        if reply is None:
            return
        event = reply.event
        if event:
            kind = event.get("type", "")
            if kind in _WARNED or "left_out" in event:
                _warn(kind, event)
            # The core's dict becomes the event as it is (no copy per message): nothing changes it afterwards,
            # and _withheld only reads it.
            self._publish(_KINDS.get(kind) or "dhcp4." + kind.lower(), event)
        if reply.commit:
            self._commit_then(reply.commit, self, reply)  # this service is the reply's waiter (see below)
        else:
            self._send(reply)

    def _send(self, reply: Reply) -> None:
        if reply.data is None or self.endpoint is None:
            return
        if reply.link is not None and self.frames is not None:
            host, port = reply.destination
            mac, ip = self._source
            frame = udp4_frame(mac, reply.link, ip, socket.inet_aton(host), 67, port, reply.data)
            try:
                self.frames.send(frame)
            except (BlockingIOError, InterruptedError):
                self.ctx.events.count("dhcp4.send_dropped")
            except OSError as exc:
                self.ctx.events.count("dhcp4.send_error")
                _limited.warning("frame", "dhcp4: cannot send a frame to %s: %s", host, exc)
            return
        self.endpoint.sendto(reply.data, reply.destination)

    # The store's waiter (Store.commit_then): a reply held back for its lease leaves once the lease is durable,
    # and is withheld if the commit failed or (a shared store) its address went to another client.
    committed = _send

    def commit_failed(self, reply: Reply, error: BaseException) -> None:
        # The reply is not sent: the client retries, and nothing was promised that is not on disk.
        self.ctx.events.count("dhcp4.commit_failed")
        _limited.warning("commit", "dhcp4: lease commit failed, reply withheld: %s", error)
        self._withheld(reply, f"its lease was not committed: {error}")

    def _withheld(self, reply: Reply, reason: str) -> None:
        """The reply's event went out before the commit (the journal then has its ACK): say it never left."""
        event = reply.event
        if event and event.get("mac"):
            self.ctx.events.emit("dhcp4.withheld", mac=event["mac"], address=event.get("address"),
                                 request=event.get("request"), type=event.get("type"), reason=reason)

    # -- a store shared with other appliances (the store calls these; see leases.backends) ---------------------------
    def _share(self) -> None:
        assert self.core is not None
        if self.ctx.store.backend == "sqlite":
            return
        self.core.pool.spread(self.core.server_id)  # each appliance offers from a part of the range of its own
        self.ctx.store.watch(self._learn)

    def _learn(self, leases: list[Lease]) -> None:
        """Leases other appliances committed: their addresses are taken, their clients known here."""
        assert self.core is not None
        self.core.learn(x for x in leases if isinstance(x, Lease4))

    def commit_lost(self, reply: Reply, winners: list[Lease]) -> None:
        # Another appliance's client got the address first: no ACK (the client's retry is refused and it starts
        # over with another address); the pool learns who holds it.
        self.ctx.events.count("dhcp4.lease_lost")
        self._learn(winners)
        self._withheld(reply, "the address went to another client (through another appliance)")

    def reload(self, settings: Settings) -> None:
        assert self.core is not None
        self.core.configure(settings.dhcp4, self.ctx.url_variables())

    async def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
        if self.frames is not None:
            self.frames.close()
