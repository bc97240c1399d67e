"""The DHCPv4 server core (RFC 2131): a message in, at most one reply out, plus the leases to make durable first.

No sockets, clock or database here: :meth:`Dhcp4Server.handle` takes the datagram, its source and ``now`` (both
clocks, :class:`~bootstrapd.clock.Now`: lease expiry is wall-clock, offer holds and the rate limiter monotonic) and
returns a :class:`Reply` (or None). When the reply hands out an address, ``Reply.commit`` holds the lease records; the
adapter sends the reply only once the store has committed them. Bindings change in memory immediately, so a second
client can never be given an address whose ACK is still waiting for its commit.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any, NamedTuple

from bootstrapd.clock import Now
from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.classes import Classifier, OptionSet
from bootstrapd.dhcp4.codec import Dhcp4Error, Packet
from bootstrapd.dhcp4.settings import Dhcp4Settings, Host4, format_mac
from bootstrapd.dhcpconf import render_map
from bootstrapd.leases.pool import ACTIVE, DECLINED, OFFERED, RELEASED, Binding, Pool
from bootstrapd.leases.ratelimit import RateLimiter
from bootstrapd.leases.store import Lease4

SERVER_PORT, CLIENT_PORT = 67, 68
BROADCAST = "255.255.255.255"


@dataclass(slots=True)
class Reply:
    data: bytes | None  # None: nothing to send (RELEASE, DECLINE), only leases to commit
    destination: tuple[str, int] = (BROADCAST, CLIENT_PORT)
    # RFC 2131 4.1 unicast to a client without an address: the MAC (chaddr) to frame the datagram for, since the
    # kernel could not resolve yiaddr (see net.ethernet). None: an ordinary UDP send to ``destination``.
    link: bytes | None = None
    commit: list[Lease4] = field(default_factory=list)
    event: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _ClientInfo:
    kind: int  # the request's message type
    mac: bytes
    client_id: bytes | None
    key: bytes
    host: Host4 | None  # its reservation (looked up once per message)
    classes: tuple[str, ...]
    vendor_class: str | None


class _Template(NamedTuple):
    message: codec.Template
    codes: tuple[int, ...]  # the configured options it carries, sorted (for its event)


def _sent(codes: tuple[int, ...], left_out: tuple[int, ...]) -> tuple[int, ...]:
    """The configured option codes a reply carries (for its event)."""
    return tuple(code for code in codes if code not in left_out) if left_out else codes


def client_key(mac: bytes, client_id: bytes | None) -> bytes:
    """Leases are keyed by the client identifier when sent (RFC 2131 4.2), else by hardware type + MAC."""
    return b"c" + client_id if client_id else b"m\x01" + mac


class Dhcp4Server:
    def __init__(self, settings: Dhcp4Settings, server_ip: IPv4Address, network: IPv4Network,
                 leases: Iterable[Lease4] = (), *, variables: Mapping[str, str] | None = None,
                 mtu: int = 1500) -> None:
        self.server_ip = server_ip
        self.server_id = server_ip.packed
        self.network = network
        self._netmask = int(network.netmask)
        self._netaddr = int(network.network_address)
        self.pool = Pool(int(settings.range_start), int(settings.range_end))
        self.stats: dict[str, int] = {}
        self.mtu = mtu  # replies never exceed it, whatever the client's option 57 says (unicast frames cannot)
        # The values of the URL-template placeholders ({ipv4} …, see bootstrapd.urltemplates), from the interface.
        self.variables: dict[str, str] = dict(variables) if variables is not None else {"ipv4": str(server_ip)}
        self.configure(settings)
        self.learn(leases)

    def learn(self, leases: Iterable[Lease4]) -> None:
        """Leases from the store: at start-up, and (a shared store) those another appliance committed or that won an
        address over one of ours. The pool then offers none of their addresses and serves their clients' renewals
        and rebinds as its own; the newest lease of a client wins (see Pool.load)."""
        for lease in leases:
            key = client_key(lease.mac, lease.client_id)
            vendor = sys.intern(lease.vendor_class) if lease.vendor_class else None  # thousands of "yealink"
            binding = self.pool.load(key, int(lease.address), lease.state, lease.expires, lease.mac)
            if binding is not None:
                binding.info = (lease.mac, lease.client_id, lease.hostname, vendor)

    def owner(self, address: IPv4Address | IPv6Address, now: float) -> bytes | None:
        """The MAC holding an active, unexpired lease on ``address`` (see leases.owners)."""
        if not isinstance(address, IPv4Address):
            return None
        binding = self.pool.holder(int(address))
        if binding is None or binding.state != ACTIVE or binding.expires <= now:
            return None
        return binding.owner or None

    # -- configuration ------------------------------------------------------------------------------------------
    def configure(self, settings: Dhcp4Settings, variables: Mapping[str, str] | None = None) -> None:
        """Apply (re)loaded settings; bindings are kept. Option templates are rendered here, once."""
        self.settings = settings
        if variables is not None:
            self.variables = dict(variables)
        self.hosts: dict[bytes, Host4] = {h.mac: h for h in settings.hosts}
        self.host_options: dict[bytes, dict[int, bytes]] = {
            h.mac: render_map(h.options, self.variables) for h in settings.hosts if h.options}
        self.reserved_for: dict[int, bytes] = {int(h.address): h.mac for h in settings.hosts}
        self.pool.reconfigure(int(settings.range_start), int(settings.range_end), frozenset(self.reserved_for))
        base: dict[int, bytes] = {codec.SUBNET_MASK: self.network.netmask.packed}
        if settings.router:
            base[codec.ROUTER] = settings.router.packed
        if settings.dns:
            base[codec.DNS] = b"".join(a.packed for a in settings.dns)
        if settings.domain:
            base[codec.DOMAIN] = settings.domain.encode()
        base.update(render_map(settings.options, self.variables))
        # The boot file name goes in the BOOTP file field, and in option 67 to a client that asks for it.
        on_request = {codec.BOOT_FILE: settings.boot_file.encode()} if settings.boot_file else {}
        self.classifier = Classifier(settings.classes, base, self.variables, on_request)
        self._host_sets: dict[tuple[bytes, tuple[str, ...]], OptionSet] = {}
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self.lease_time = settings.lease_time
        self._timers = (
            settings.lease_time.to_bytes(4, "big"),
            settings.renew_time.to_bytes(4, "big"),
            settings.rebind_time.to_bytes(4, "big"),
        )
        self.siaddr = settings.next_server.packed if settings.next_server else self.server_id
        self._heads: dict[tuple[int, bool], tuple[dict[int, bytes], bytes]] = {}  # see _head
        self._relays: dict[bytes, tuple[str, int]] = {}  # giaddr -> where its replies go
        self._templates: dict[tuple[int, bool, tuple[str, ...], bytes, int], _Template] = {}  # see _reply
        self.boot_file = settings.boot_file.encode().ljust(128, b"\0") if settings.boot_file else bytes(128)

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    # -- entry point ----------------------------------------------------------------------------------------------
    def handle(self, data: bytes, source: tuple[str, int], now: Now) -> Reply | None:
        packet = codec.decode(data)
        if packet.op != codec.BOOTREQUEST:
            raise Dhcp4Error("not a BOOTREQUEST")
        kind = packet.msg_type()
        if kind == 0:
            raise Dhcp4Error("BOOTP without a DHCP message type is not served")
        giaddr = packet.giaddr
        # A relay already answered (self._relays, filled by _destination) passed this test before.
        if giaddr != codec.ZERO and giaddr not in self._relays and \
                int.from_bytes(giaddr, "big") & self._netmask != self._netaddr:
            raise Dhcp4Error(f"relay {codec.ntoa(packet.giaddr)} is not on a served subnet")
        mac = packet.mac
        if not self.limiter.allow(mac, now.mono):
            self._count("rate_limited")
            return None
        client_id = packet.client_id()
        vendor = packet.vendor_class()
        classes = self.classifier.classify(vendor, packet.options.get(codec.USER_CLASS), mac)
        info = _ClientInfo(kind, mac, client_id, client_key(mac, client_id), self.hosts.get(mac), classes,
                           sys.intern(codec.printable(vendor, 255)) if vendor else None)
        if kind == codec.DISCOVER:
            return self._discover(packet, info, now)
        if kind == codec.REQUEST:
            return self._request(packet, info, now)
        if kind == codec.DECLINE:
            return self._decline(packet, info, now)
        if kind == codec.RELEASE:
            return self._release(packet, info, now)
        if kind == codec.INFORM:
            return self._inform(packet, info, source)
        raise Dhcp4Error(f"unexpected message type {codec.TYPE_NAMES.get(kind, kind)} from a client")

    # -- address choice -------------------------------------------------------------------------------------------
    def _refusal(self, address: int, info: _ClientInfo, now: Now) -> str | None:
        """Why ``info`` may not hold ``address`` (None: it may): the checks of a new binding, which a renewal,
        a rebinding and an INIT-REBOOT pass too. On the hot path (every SELECTING REQUEST): keep it lean."""
        if address & self._netmask != self._netaddr:
            return "wrong network"
        host = info.host
        if host is not None and int(host.address) != address:
            return "this client has a reservation for another address"
        if not self.pool.can_take(info.mac, info.key, now):
            return "this client holds its share of addresses"  # rotating client identifiers, a DECLINE loop
        owner = self.reserved_for.get(address)
        if owner is not None and owner != info.mac:
            return "address reserved for another client"
        if owner is None and not self.pool.in_range(address):
            return "address outside the range"
        if not self.pool.available(address, info.key, now):
            holder = self.pool.holder(address)
            return "address declined" if holder is not None and holder.state == DECLINED else \
                "address held by another client"
        return None

    def _choose(self, packet: Packet, info: _ClientInfo, now: Now, may_take: bool = False) -> int | None:
        """The address to offer (None: none); ``may_take``: the caller has just found that the client may take
        another address (Pool.can_take)."""
        host = info.host
        if host is not None:
            address = int(host.address)
            return address if self.pool.available(address, info.key, now) else None
        # The pool's dict read directly on the DORA path (here, in _discover and in a SELECTING _request): a Python
        # call fewer each than Pool.binding.
        current = self.pool.by_key.get(info.key)
        if current is not None and current.state != DECLINED and self._refusal(current.address, info, now) is None:
            return current.address
        wanted = packet.address_bytes(codec.REQUESTED_IP)
        if wanted is not None:
            address = int.from_bytes(wanted, "big")
            if self._refusal(address, info, now) is None:
                return address
        if not may_take and not self.pool.can_take(info.mac, info.key, now):
            return None
        return self.pool.allocate(info.key, now)

    # -- messages ---------------------------------------------------------------------------------------------------
    def _discover(self, packet: Packet, info: _ClientInfo, now: Now) -> Reply | None:
        reclaimed: Binding | None = None
        may_take = info.host is None and self.pool.can_take(info.mac, info.key, now)
        if info.host is None and not may_take:
            # This MAC already holds its share under other client identifiers: the newest identity replaces the
            # oldest (a phone reset with a new client-id is still served); only quarantines are never reclaimed.
            reclaimed = self.pool.reclaim_oldest(info.mac, now)
            if reclaimed is None:
                self._count("client_limit")  # not an exhausted pool: no warning
                return None
            self._count("client_reclaimed")
        address = self._choose(packet, info, now, may_take)
        if address is None:
            host = info.host
            if host is not None:
                # Its address is held by another client (the reservation is newer than that lease): that client's
                # next renewal is refused, which frees the address; at the latest it is free when the lease ends.
                self._count("reserved_in_use")
                return Reply(None, event={"type": "reserved_in_use", "mac": format_mac(info.mac),
                                          "address": str(host.address), "classes": info.classes})
            self._count("pool_exhausted")
            return Reply(None, event={"type": "exhausted", "mac": format_mac(info.mac), "classes": info.classes})
        current = self.pool.by_key.get(info.key)
        if current is None or current.address != address or current.state != ACTIVE or current.expires <= now.wall:
            self.pool.bind(info.key, address, OFFERED, now.mono + self.settings.offer_time, info.mac)
        reply = self._reply(packet, info, codec.OFFER, address)
        if reclaimed is not None:
            reply.commit.append(self._lease(reclaimed))  # the old identity's lease is released on disk too
        return reply

    def _request(self, packet: Packet, info: _ClientInfo, now: Now) -> Reply | None:
        server_id = packet.address_bytes(codec.SERVER_ID)
        requested = packet.address_bytes(codec.REQUESTED_IP)
        ciaddr = int.from_bytes(packet.ciaddr, "big")
        if server_id is not None:
            # SELECTING: the client answers an OFFER; if it chose another server, free what we held.
            if server_id != self.server_id:
                self.pool.forget_offer(info.key)
                self._count("chose_other_server")
                return None
            if requested is None:
                raise Dhcp4Error("REQUEST in SELECTING state without a requested address")
            binding = self.pool.by_key.get(info.key)
            address = int.from_bytes(requested, "big")
            why = "offer expired or not yours" if binding is None or binding.address != address else \
                self._refusal(address, info, now)
            if why is not None:
                return self._nak(packet, info, why, now)
            return self._ack(packet, info, address, now)
        if requested is not None and ciaddr == 0:
            address = int.from_bytes(requested, "big")  # INIT-REBOOT: the client checks the address it remembers
        elif ciaddr != 0:
            address = ciaddr  # RENEWING (unicast to us) or REBINDING (broadcast): extend the lease on ciaddr
        else:
            raise Dhcp4Error("REQUEST with neither server id, requested address nor ciaddr")
        # RFC 2131 4.3.2. Whether the address is still right for this client is decided by the same checks as a new
        # binding: the subnet, the range or a reservation for this MAC, the reservation's owner, a decline, the
        # MAC's share. We "know" a client we have a binding or a reservation for.
        known = self.pool.binding(info.key) is not None or info.host is not None
        why = self._refusal(address, info, now)
        if why is None:
            if not known and not self.settings.authoritative:
                return None  # no record of the client: it may be another server's (MUST remain silent)
            return self._ack(packet, info, address, now)  # authoritative: a lease nobody else holds is ours
        if not known and not self.settings.authoritative:
            return None  # another server's client (a REBINDING broadcast, say): not ours to refuse
        return self._nak(packet, info, why, now)

    def _ack(self, packet: Packet, info: _ClientInfo, address: int, now: Now) -> Reply:
        binding = self.pool.bind(info.key, address, ACTIVE, now.wall + self.lease_time, info.mac)
        host = info.host
        hostname = (host.hostname if host and host.hostname else None) or packet.hostname()
        binding.info = (info.mac, info.client_id, hostname, info.vendor_class)
        reply = self._reply(packet, info, codec.ACK, address)
        reply.commit.append(self._lease(binding))
        return reply

    def _lease(self, binding: Binding) -> Lease4:
        mac, client_id, hostname, vendor_class = binding.info or (b"", None, None, None)
        return Lease4(IPv4Address(binding.address), mac, client_id, binding.expires, binding.state, hostname,
                      vendor_class)

    def _nak(self, packet: Packet, info: _ClientInfo, why: str, now: Now) -> Reply:
        self._count("nak")
        commit: list[Lease4] = []
        binding = self.pool.binding(info.key)
        asked = packet.requested_ip()
        address = int(asked) if asked is not None else int.from_bytes(packet.ciaddr, "big")
        if binding is not None and binding.state == ACTIVE and binding.address == address and address:
            # The client must stop using the address now: free it at once (for its reservation's owner, say).
            released = self.pool.release(info.key, address, now)
            if released is not None:
                commit.append(self._lease(released))
        reply = Packet(op=codec.BOOTREPLY, xid=packet.xid, flags=packet.flags, giaddr=packet.giaddr,
                       chaddr=packet.chaddr)
        reply.options = {codec.MESSAGE_TYPE: bytes((codec.NAK,)), codec.SERVER_ID: self.server_id,
                         codec.MESSAGE: why.encode()}
        client_id = packet.options.get(codec.CLIENT_ID)
        if client_id is not None:
            reply.options[codec.CLIENT_ID] = client_id
        if packet.giaddr != codec.ZERO:
            destination = (codec.ntoa(packet.giaddr), SERVER_PORT)
            reply.flags |= codec.BROADCAST_FLAG  # the relay must broadcast a NAK on the client's segment
        else:
            destination = (BROADCAST, CLIENT_PORT)  # RFC 2131 4.1: NAK broadcast when giaddr is 0
        data = codec.encode(reply, max_size=min(packet.max_size(), self.mtu),
                            relay=packet.options.get(codec.RELAY_AGENT))
        return Reply(data, destination, commit=commit,
                     event={"type": "NAK", "mac": format_mac(info.mac), "reason": why, "classes": info.classes})

    def _decline(self, packet: Packet, info: _ClientInfo, now: Now) -> Reply | None:
        server_id = packet.server_id()
        requested = packet.requested_ip()
        if server_id is None or server_id.packed != self.server_id or requested is None:
            return None
        binding = self.pool.binding(info.key)
        if binding is None or binding.address != int(requested):
            return None  # only the holder can decline its address
        quarantined = self.pool.decline(int(requested), now.wall + self.settings.decline_time, info.mac)
        self._count("declined")
        # The client identifier goes with it: in a shared store only the holder's own row may become a quarantine.
        lease = Lease4(IPv4Address(quarantined.address), info.mac, info.client_id, quarantined.expires, DECLINED)
        return Reply(None, commit=[lease],
                     event={"type": "DECLINE", "mac": format_mac(info.mac), "address": str(requested)})

    def _release(self, packet: Packet, info: _ClientInfo, now: Now) -> Reply | None:
        server_id = packet.server_id()
        if server_id is not None and server_id.packed != self.server_id:
            return None
        address = int.from_bytes(packet.ciaddr, "big")
        binding = self.pool.release(info.key, address, now)
        if binding is None:
            return None
        self._count("released")
        return Reply(None, commit=[self._lease(binding)],
                     event={"type": "RELEASE", "mac": format_mac(info.mac), "address": str(IPv4Address(address))})

    def _inform(self, packet: Packet, info: _ClientInfo, source: tuple[str, int]) -> Reply:
        return self._reply(packet, info, codec.ACK, None, source=source)

    # -- building replies -----------------------------------------------------------------------------------------
    def _with_host_options(self, info: _ClientInfo, configured: OptionSet) -> OptionSet:
        host_options = self.host_options.get(info.mac)
        if not host_options:
            return configured
        key = (info.mac, info.classes)
        merged = self._host_sets.get(key)
        if merged is None:
            merged = OptionSet.of({**configured.options, **host_options}, configured.on_request)
            self._host_sets[key] = merged  # bounded: hosts times the class combinations they come with
        return merged

    def _reply(self, packet: Packet, info: _ClientInfo, kind: int, address: int | None,
               source: tuple[str, int] | None = None) -> Reply:
        options = packet.options
        host = info.host
        hostname = host.hostname if host is not None else None
        client_id = info.client_id
        relay = options.get(codec.RELAY_AGENT)
        requested = options.get(codec.PARAM_LIST, b"")
        limit = packet.max_size()
        if limit > self.mtu:
            limit = self.mtu
        yiaddr = address.to_bytes(4, "big") if address is not None else codec.ZERO
        # RFC 2131 table 3: ciaddr is the client's in an ACK (and an INFORM's ACK), 0 in an OFFER.
        ciaddr = packet.ciaddr if kind == codec.ACK else codec.ZERO
        data: bytes | None = None
        if info.mac not in self.host_options:
            # Nothing configured for this client alone: its reply is the template of every client of these classes
            # with this option 55 and size (a boot storm of one model: one dict lookup), with its own header fields
            # and the options it brought (its identifier, echoed: RFC 6842; option 82) put in.
            key = (kind, address is not None, info.classes, requested, limit)
            template = self._templates.get(key)
            if template is None:
                template = self._template(key)
            own = b""
            if hostname:
                own = codec.tlv(codec.HOSTNAME, hostname.encode())
            if client_id is not None:
                own += codec.tlv(codec.CLIENT_ID, client_id)
            data = template.message.reply(packet.xid, packet.flags, ciaddr, yiaddr, packet.giaddr, packet.chaddr,
                                          own, relay)
            codes, left_out = template.codes, template.message.left_out
        if data is None:  # a host's own options, or the client's do not fit the template: encoded for it alone
            data, codes, left_out = self._encoded(packet, info, kind, address is not None, hostname, client_id,
                                                  relay, requested, limit, ciaddr, yiaddr)
        destination, link = self._destination(packet, yiaddr if address is not None else None, source)
        event: dict[str, Any] = {
            "type": codec.TYPE_NAMES[kind] if address is not None else "INFORM",
            "request": codec.TYPE_NAMES[info.kind],
            "mac": format_mac(info.mac),
            "address": codec.ntoa(yiaddr) if address is not None else None,
            "classes": info.classes,
            "vendor_class": info.vendor_class,
            "options": codes,
        }
        if left_out:
            # What the client does not get, and why: the event (and a rate-limited warning) say exactly.
            self._count("options_left_out")
            event["left_out"] = left_out
            event["max_size"] = limit
        return Reply(data, destination, link, [], event)

    def _configured(self, info: _ClientInfo) -> OptionSet:
        configured = self.classifier.options(info.classes)
        if self.host_options:
            configured = self._with_host_options(info, configured)
        return configured

    def _template(self, key: tuple[int, bool, tuple[str, ...], bytes, int]) -> _Template:
        kind, times, classes, requested, limit = key
        ordered = self.classifier.options(classes).ordered(requested)
        options, head = self._head(kind, times)
        model = Packet(op=codec.BOOTREPLY, siaddr=self.siaddr, file=self.boot_file, options=dict(options))
        message = codec.Template(model, max_size=limit, extra=ordered.items, extra_wire=ordered.wire, head_wire=head)
        template = _Template(message, _sent(ordered.codes, message.left_out))
        if len(self._templates) < 1024:  # bounded: option 55 and 57 come from the wire
            self._templates[key] = template
        return template

    def _encoded(self, packet: Packet, info: _ClientInfo, kind: int, times: bool, hostname: str | None,
                 client_id: bytes | None, relay: bytes | None, requested: bytes, limit: int, ciaddr: bytes,
                 yiaddr: bytes) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
        """A reply encoded for this client alone (:func:`codec.encode_reply`)."""
        options, head = self._head(kind, times)
        options = dict(options)
        extra: list[codec.Option] = []
        if hostname:
            extra.append((codec.HOSTNAME, hostname.encode()))
        if client_id is not None:
            extra.append((codec.CLIENT_ID, client_id))  # RFC 6842: echoed unchanged
        if extra:
            options.update(extra)
            head += codec.encode_options(extra)
        reply = Packet(op=codec.BOOTREPLY, xid=packet.xid, flags=packet.flags, giaddr=packet.giaddr,
                       chaddr=packet.chaddr, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=self.siaddr, file=self.boot_file,
                       options=options)
        ordered = self._configured(info).ordered(requested)
        data, left_out = codec.encode_reply(reply, max_size=limit, extra=ordered.items, extra_wire=ordered.wire,
                                            relay=relay, head_wire=head)
        return data, _sent(ordered.codes, left_out), left_out

    def _head(self, kind: int, times: bool) -> tuple[dict[int, bytes], bytes]:
        """A reply's own first options (message type, server id, the lease times) and their encoding, built once."""
        head = self._heads.get((kind, times))
        if head is None:
            options = {codec.MESSAGE_TYPE: bytes((kind,)), codec.SERVER_ID: self.server_id}
            if times:
                options[codec.LEASE_TIME], options[codec.RENEWAL_TIME], options[codec.REBINDING_TIME] = self._timers
            head = self._heads[(kind, times)] = (options, codec.encode_options(options))
        return head

    def _destination(self, packet: Packet, address: bytes | None,
                     source: tuple[str, int] | None) -> tuple[tuple[str, int], bytes | None]:
        """RFC 2131 4.1: relay, then ciaddr, then the broadcast flag, else unicast to yiaddr at chaddr."""
        giaddr = packet.giaddr
        if giaddr != codec.ZERO:
            relay = self._relays.get(giaddr)
            if relay is None:
                relay = (codec.ntoa(giaddr), SERVER_PORT)
                if len(self._relays) < 256:  # a site has a handful of relays; giaddr comes from the wire
                    self._relays[giaddr] = relay
            return relay, None
        if packet.ciaddr != codec.ZERO:
            return (codec.ntoa(packet.ciaddr), CLIENT_PORT), None
        if address is None:
            # INFORM without ciaddr (broken client): answer where it came from.
            if source is not None and source[0] != "0.0.0.0":
                return (source[0], CLIENT_PORT), None
            return (BROADCAST, CLIENT_PORT), None
        if packet.broadcast:
            return (BROADCAST, CLIENT_PORT), None
        return (codec.ntoa(address), CLIENT_PORT), packet.mac

    # -- introspection --------------------------------------------------------------------------------------------
    def lease_for(self, mac: bytes, client_id: bytes | None = None) -> Binding | None:
        return self.pool.binding(client_key(mac, client_id))

    def states(self) -> dict[str, int]:
        counts = {OFFERED: 0, ACTIVE: 0, RELEASED: 0, DECLINED: 0}
        for binding in self.pool.bindings():
            counts[binding.state] = counts.get(binding.state, 0) + 1
        return counts
