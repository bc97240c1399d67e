"""The asyncio side of DHCPv6: one UDP socket on port 547 of the provisioning interface, joined to ff02::1:2.

Datagrams go to the core; a reply that hands out or changes a lease is held back until the lease store's group
commit has made it durable (``commit_then``), every other reply leaves at once. Replies to clients go to their
link-local source on port 546 with the interface's scope id, so the kernel sends them from our link-local address;
Relay-replies go to the relay's address on port 547.
"""

from __future__ import annotations

import logging
import socket
import time
from ipaddress import IPv6Network
from typing import Any

from bootstrapd.clock import Now
from bootstrapd.config import Settings
from bootstrapd.dhcp6.codec import MAX_DUID, check_duid
from bootstrapd.dhcp6.server import SERVER_PORT, Dhcp6Server, Outgoing
from bootstrapd.dhcpconf import format_mac
from bootstrapd.leases.store import Lease, Lease6
from bootstrapd.log import RateLimited
from bootstrapd.net.sockets import join_ipv6_group, udp_socket
from bootstrapd.net.udp import Address, DatagramEndpoint, open_destination_endpoint
from bootstrapd.service import Context

log = logging.getLogger("bootstrapd.dhcp6")
_limited = RateLimited(log)
# Now(...) runs the named tuple's Python __new__; tuple.__new__ makes the same object without it (100 ns per message).
_new = tuple.__new__

ALL_DHCP_RELAY_AGENTS_AND_SERVERS = "ff02::1:2"
DUID_META_KEY = "dhcp6.server_duid"
_DUID_EPOCH = 946684800  # 2000-01-01T00:00:00Z, RFC 8415 11.2


_SHARED: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # the events' option-code and class tuples, one object each


def _shared(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """One tuple object per distinct value (bounded: at most 1,024 kept)."""
    kept = _SHARED.get(value)
    if kept is None:
        kept = value
        if len(_SHARED) < 1024:
            _SHARED[value] = value
    return kept


def _text(address: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, address.to_bytes(16, "big"))


def reply_event(out: Outgoing) -> dict[str, Any]:
    """The ``dhcp6.reply`` event's fields: strings and shared tuples, so a dict the cyclic garbage collector does not
    track once its passes have seen the shared tuples. The journal holds a storm's events until the storm passes,
    and each tracked one held made the collector's passes, which stop the loop, come sooner (journal.py, STRIDE).
    The address is formatted by the C library (0.5 us; ``str(IPv6Address)`` takes 4 us, and the journal did it
    anyway); ``addresses`` only when the reply holds more than one."""
    addresses = out.addresses
    fields: dict[str, Any] = {
        "duid": out.duid.hex() if out.duid else None,
        "mac": format_mac(out.mac) if out.mac else None,
        "type": out.kind,
        "request": out.request,
        "address": _text(addresses[0]) if addresses else None,
        "options": _shared(tuple(out.options)),
        "classes": _shared(out.classes),
    }
    if len(addresses) > 1:
        fields["addresses"] = tuple(_text(a) for a in addresses)
    return fields


def make_duid(mac: bytes, now: float) -> bytes:
    """DUID-LLT from the interface MAC (Ethernet), or DUID-LL when the clock is before 2000."""
    if len(mac) == 6 and any(mac):
        seconds = int(now) - _DUID_EPOCH
        if seconds > 0:
            return b"\x00\x01\x00\x01" + (seconds & 0xFFFFFFFF).to_bytes(4, "big") + mac
        return b"\x00\x03\x00\x01" + mac
    # No usable MAC: DUID-UUID (type 4) from random bytes.
    import uuid

    return b"\x00\x04" + uuid.uuid4().bytes


def server_duid(ctx: Context) -> bytes:
    """The server DUID, created once and kept in the lease store (state_dir) so it survives restarts."""
    stored = ctx.store.get_meta(DUID_META_KEY)
    if stored is not None and 3 <= len(stored) <= MAX_DUID:
        return stored
    duid = make_duid(ctx.interface.mac, time.time())
    ctx.store.set_meta(DUID_META_KEY, duid)
    return duid


def _link_prefixes(ctx: Context) -> list[IPv6Network]:
    return [i.network for i in ctx.interface.ipv6 if not i.ip.is_link_local]


class Dhcp6Service:
    name = "dhcp6"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.duid = check_duid(server_duid(ctx), "server DUID")
        self.core = Dhcp6Server(ctx.settings.dhcp6, self.duid, ctx.store.leases6(), variables=ctx.url_variables(),
                                link_prefixes=_link_prefixes(ctx))
        self.endpoint: DatagramEndpoint | None = None
        # Resolved once, not per reply (as the DHCPv4 adapter does): the context's event stream and interface are
        # the daemon's for its lifetime.
        self._publish = ctx.events.publish
        self._scope = ctx.interface.index  # the scope id of every reply's destination
        ctx.owners.register(self.core.owner)
        if ctx.store.backend != "sqlite":  # a store shared with other appliances (see leases.backends)
            self.core.pool.spread(self.duid)
            ctx.store.watch(self._learn)

    async def start(self) -> None:
        iface = self.ctx.interface
        sock = udp_socket(socket.AF_INET6, iface.name, "::", SERVER_PORT, reuse_address=True)
        try:
            join_ipv6_group(sock, ALL_DHCP_RELAY_AGENTS_AND_SERVERS, iface.index)
            # Replies to link-local clients must leave through this interface even without a scope in the address.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface.index)
        except BaseException:
            sock.close()
            raise
        self.endpoint = await open_destination_endpoint(self.name, sock, self._received, self.ctx.events)
        settings = self.ctx.settings.dhcp6
        log.info("dhcp6 range %s-%s, %d leases loaded", settings.range_start, settings.range_end,
                 len(self.core.pool.by_address), extra={"server_duid": self.duid.hex()})

    def reload(self, settings: Settings) -> None:
        self.core.reconfigure(settings.dhcp6, variables=self.ctx.url_variables(),
                              link_prefixes=_link_prefixes(self.ctx))

    async def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None

    def _received(self, data: bytes, addr: Address, destination: bytes | None) -> None:
        host: str = addr[0]  # a "%scope" suffix, if the text has one, is dropped (the scope is addr[3])
        if "%" in host:
            host = host.split("%", 1)[0]
        # RFC 8415 16: sent to our unicast address rather than to ff02::1:2 (multicast addresses start with 0xff).
        unicast = destination is not None and destination[0] != 0xFF
        out = self.core.handle(data, host, _new(Now, (time.time(), time.monotonic())), unicast=unicast)
        if out is None:
            return
        if out.exhausted:
            _limited.warning("dhcp6.exhausted", "dhcp6 range exhausted: no address to give",
                             duid=out.duid.hex() if out.duid else None)
        if out.unserved_link is not None:
            _limited.warning("dhcp6.link", "dhcp6: a relay forwards clients of link %s, which has no addresses here "
                             "(dhcp6.range is on %s): they get NoAddrsAvail", out.unserved_link,
                             ", ".join(str(n) for n in self.core.link_prefixes))
        if out.leases:
            self.ctx.store.commit_then(out.leases, self, out)  # this service is the reply's waiter (see below)
        else:
            self._send(out)

    def _send(self, out: Outgoing) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            return
        host, port = out.destination
        endpoint.sendto(out.data, (host, port, 0, self._scope))
        self._publish("dhcp6.reply", reply_event(out))  # a dict of its own: no copy

    def _learn(self, leases: list[Lease]) -> None:
        """Leases other appliances committed: their addresses are taken, their clients known here."""
        self.core.learn(x for x in leases if isinstance(x, Lease6))

    def commit_lost(self, out: Outgoing, winners: list[Lease]) -> None:
        # Another appliance's client got an address of this reply first: no REPLY; the client's retransmission
        # gets another address, the pool having learnt who holds this one.
        self.ctx.events.count("dhcp6.lease_lost")
        self._learn(winners)
        self._withheld(out, "an address went to another client (through another appliance)")

    def commit_failed(self, out: Outgoing, error: BaseException) -> None:
        # No reply leaves for a lease that is not durable; the client retransmits.
        self.ctx.events.count("dhcp6.commit_failed")
        _limited.warning("dhcp6.commit", "dhcp6: lease commit failed, reply withheld: %s", error)
        self._withheld(out, f"its lease was not committed: {error}")

    # The store's waiter (Store.commit_then): a reply held back for its leases leaves once they are durable,
    # and is withheld if the commit failed or (a shared store) an address went to another client.
    committed = _send

    def _withheld(self, out: Outgoing, reason: str) -> None:
        """A reply that never left, for the journal (a sent one is the dhcp6.reply event)."""
        self.ctx.events.emit("dhcp6.withheld", duid=out.duid.hex() if out.duid else None,
                             mac=format_mac(out.mac) if out.mac else None, type=out.kind, request=out.request,
                             address=_text(out.addresses[0]) if out.addresses else None, reason=reason)


__all__ = ["Dhcp6Service", "make_duid", "server_duid"]
