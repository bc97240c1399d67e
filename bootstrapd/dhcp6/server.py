"""The DHCPv6 server core (RFC 8415): a datagram and ``now`` in, the reply to send and the leases to commit out.

No I/O and no clock. The adapter hands every received datagram to :meth:`Dhcp6Server.handle` with its source address;
it gets back an :class:`Outgoing` (bytes, destination, leases that must be durable before the bytes leave) or
``None`` (nothing to answer). Anything to drop raises :class:`~bootstrapd.dhcp6.codec.Dhcp6Error`: malformed input,
and the validation rules of RFC 8415 16 (a Solicit carrying a Server ID, a Request/Renew/Release/Decline for another
server, an Information-Request carrying an IA, …).

Addresses come from the shared :class:`~bootstrapd.leases.pool.Pool`, keyed by DUID + IAID, so a returning client
keeps its address and an advertised address is held for ``offer_time`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from typing import NamedTuple

from bootstrapd.clock import Now
from bootstrapd.dhcp6 import codec
from bootstrapd.dhcp6.codec import (
    Dhcp6Error,
    IaAddress,
    IaNa,
    IaPd,
    IaTa,
    Message,
    Option,
    RelayMessage,
    StatusCode,
)
from bootstrapd.dhcp6.settings import Class6, Dhcp6Settings
from bootstrapd.dhcpconf import render, render_map
from bootstrapd.leases import pool as poolmod
from bootstrapd.leases.pool import Pool
from bootstrapd.leases.ratelimit import RateLimiter
from bootstrapd.leases.store import ACTIVE, DECLINED, RELEASED, Lease6
from bootstrapd.urltemplates import expand

CLIENT_PORT = 546
SERVER_PORT = 547


@dataclass(slots=True)
class Outgoing:
    """What to send, where, and what must be durable first; plus the facts for the ``dhcp6.reply`` event."""

    data: bytes
    destination: tuple[str, int]
    leases: list[Lease6]
    kind: str  # advertise / reply
    request: str  # the client's message type
    duid: bytes | None
    mac: bytes | None
    addresses: list[int] = field(default_factory=list)  # as ints: no IPv6Address for an Advertise's address
    options: list[int] = field(default_factory=list)
    classes: tuple[str, ...] = ()
    exhausted: bool = False  # an IA got NoAddrsAvail
    unserved_link: IPv6Address | None = None  # relayed from a link bootstrapd has no addresses for


# Built once, not per message (a tuple of module attributes in the condition is built each time it is evaluated).
_CLIENT_KINDS = frozenset((codec.SOLICIT, codec.REQUEST, codec.CONFIRM, codec.RENEW, codec.REBIND, codec.RELEASE,
                           codec.DECLINE, codec.INFORMATION_REQUEST))
_MULTICAST_ONLY = frozenset((codec.SOLICIT, codec.CONFIRM, codec.REBIND, codec.INFORMATION_REQUEST))
_NO_SERVER_ID = frozenset((codec.SOLICIT, codec.REBIND, codec.CONFIRM))
_ASSIGNING = frozenset((codec.SOLICIT, codec.REQUEST))


class _Configured(NamedTuple):
    """One class combination's options, as they follow a reply's own options on the wire."""

    codes: tuple[int, ...]  # the option codes in ``encoded``, in order (for the dhcp6.reply event)
    encoded: bytes
    url: bytes  # the boot-file URL option (59) encoded, b"" when there is no URL


def _key(duid: bytes, iaid: int) -> bytes:
    return duid + iaid.to_bytes(4, "big")


def _split_key(key: bytes) -> tuple[bytes, int]:
    return key[:-4], int.from_bytes(key[-4:], "big")


class _Matcher:
    """One class's match rules, prepared once: OUIs (3-byte prefixes) in a set, one lookup per packet."""

    def __init__(self, cls: Class6) -> None:
        self.name = cls.name
        self.enterprise = cls.enterprise
        self.vendor_class = tuple(p.lower() for p in cls.vendor_class)
        self.vendor_class_contains = tuple(p.lower() for p in cls.vendor_class_contains)
        self.ouis = frozenset(p for p in cls.mac_prefix if len(p) == 3)
        self.prefixes = tuple(p for p in cls.mac_prefix if len(p) != 3)

    def matches(self, vendor: tuple[int, list[bytes]] | None, mac: bytes | None) -> bool:
        if vendor is not None and (self.enterprise is None or self.enterprise == vendor[0]):
            for entry in vendor[1]:
                folded = entry.lower()
                if folded.startswith(self.vendor_class) or any(p in folded for p in self.vendor_class_contains):
                    return True
        if mac is None:
            return False
        return mac[:3] in self.ouis or (bool(self.prefixes) and mac.startswith(self.prefixes))


class Dhcp6Server:
    def __init__(self, settings: Dhcp6Settings, server_duid: bytes, leases: Iterable[Lease6] = (), *,
                 variables: Mapping[str, str] | None = None, link_prefixes: Sequence[IPv6Network] = ()) -> None:
        self.server_duid = codec.check_duid(server_duid, "server DUID")
        self.pool = Pool(int(settings.range_start), int(settings.range_end))
        self._macs: dict[bytes, bytes] = {}  # DUID -> MAC, for DUIDs without one (learnt from relays' option 79)
        self.reconfigure(settings, variables=variables, link_prefixes=link_prefixes)
        self.learn(leases)

    def learn(self, leases: Iterable[Lease6]) -> None:
        """Leases from the store: at start-up, and (a shared store) those another appliance committed or that won an
        address over one of ours; the newest lease of a DUID+IAID wins (see Pool.load)."""
        for lease in leases:
            self.pool.load(_key(lease.duid, lease.iaid), int(lease.address), lease.state, lease.expires, lease.duid)
            if lease.mac and lease.mac != codec.duid_mac(lease.duid):
                self._macs[lease.duid] = lease.mac

    def reconfigure(self, settings: Dhcp6Settings, *, variables: Mapping[str, str] | None = None,
                    link_prefixes: Sequence[IPv6Network] = ()) -> None:
        """New settings (SIGHUP); the lease table stays. ``variables``: the URL-template placeholders' values
        ({ipv6} …, see bootstrapd.urltemplates), rendered into the options once per class combination."""
        self.settings = settings
        self.variables: dict[str, str] = dict(variables or {})
        self.pool.reconfigure(int(settings.range_start), int(settings.range_end), frozenset())
        # On-link prefixes for Confirm: the interface's, or else the /64 around the range.
        self.link_prefixes = tuple(link_prefixes) or (IPv6Network(f"{settings.range_start}/64", strict=False),)
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        self._option_cache: dict[tuple[str, ...], _Configured] = {}
        self._matchers = [_Matcher(c) for c in settings.classes]
        self.t1, self.t2 = settings.renew_time, settings.rebind_time
        self._refresh = settings.information_refresh_time.to_bytes(4, "big")

    def owner(self, address: IPv4Address | IPv6Address, now: float) -> bytes | None:
        """The MAC behind the DUID holding an active, unexpired lease on ``address`` (see leases.owners)."""
        if not isinstance(address, IPv6Address):
            return None
        binding = self.pool.holder(int(address))
        if binding is None or binding.state != poolmod.ACTIVE or binding.expires <= now or not binding.owner:
            return None
        return self._macs.get(binding.owner) or codec.duid_mac(binding.owner)

    # --- entry point ----------------------------------------------------------------------------------------------

    def handle(self, data: bytes, source: str, now: Now, *, unicast: bool = False) -> Outgoing | None:
        """``unicast``: the datagram was addressed to one of our unicast addresses rather than to ff02::1:2
        (RFC 8415 16); it matters only for a client's own messages, not for a relay's."""
        message = codec.parse(data)
        if isinstance(message, Message):  # a client's own message, the usual case: no relay chain to walk
            return self._dispatch(message, now, None, source, CLIENT_PORT, unicast=unicast, link=None)
        relays: list[RelayMessage] = []  # outermost first
        inner: Message | RelayMessage = message
        while isinstance(inner, RelayMessage):
            if inner.msg_type != codec.RELAY_FORW:
                raise Dhcp6Error("relay-reply sent to a server")
            relays.append(inner)
            inner = inner.inner
        link_mac = self._relay_mac(relays[-1])
        link = self._client_link(relays)
        out = self._dispatch(inner, now, link_mac, source, SERVER_PORT, unicast=False, link=link)
        if out is None:
            return None
        data = out.data  # the reply to the client, wrapped in a Relay-reply per relay, innermost first
        for relay in reversed(relays):
            options: list[Option] = []
            interface_id = relay.get(codec.OPT_INTERFACE_ID)
            if interface_id is not None:
                options.append((codec.OPT_INTERFACE_ID, interface_id))
            data = codec.encode_relay(codec.RELAY_REPL, relay.hop_count, relay.link_address, relay.peer_address,
                                      options, data)
        out.data = data
        return out

    @staticmethod
    def _client_link(relays: list[RelayMessage]) -> IPv6Address | None:
        """RFC 8415 13.1: the client's link is named by the link-address of the relay closest to it; a relay that
        leaves it unspecified defers to the next one out. None: not relayed (or all unspecified), our own link."""
        for relay in reversed(relays):
            if not relay.link_address.is_unspecified:
                return relay.link_address
        return None

    @staticmethod
    def _relay_mac(relay: RelayMessage) -> bytes | None:
        # RFC 6939: the first relay may add the client's link-layer address (type 1 = Ethernet).
        value = relay.get(codec.OPT_CLIENT_LINKLAYER_ADDR)
        if value is not None and len(value) == 8 and value[:2] == b"\x00\x01":
            return value[2:]
        return None

    def _dispatch(self, msg: Message, now: Now, link_mac: bytes | None, source: str, port: int, *, unicast: bool,
                  link: IPv6Address | None) -> Outgoing | None:
        """The reply to a client's message, encoded (``out.data``), to ``source`` on ``port``. The reply is built as
        its type and list of options (no Message object: one fewer per message), then encoded by _finish."""
        kind = msg.msg_type
        if kind not in _CLIENT_KINDS:
            raise Dhcp6Error(f"{codec.MESSAGE_NAMES.get(kind, kind)} is not a client message")
        name = codec.MESSAGE_NAMES[kind]
        if unicast and kind in _MULTICAST_ONLY:
            raise Dhcp6Error(f"{name} sent to a unicast address (RFC 8415 16: discarded)")
        client_id = msg.client_id  # found by codec.parse
        server_id = msg.server_id
        if kind == codec.INFORMATION_REQUEST:
            if server_id is not None and server_id != self.server_duid:
                raise Dhcp6Error("information-request for another server")
        else:
            if client_id is None:
                raise Dhcp6Error(f"{name} without a client ID")
            if kind in _NO_SERVER_ID:
                if server_id is not None:
                    raise Dhcp6Error(f"{name} carrying a server ID")
            elif server_id != self.server_duid:
                raise Dhcp6Error(f"{name} for another server" if server_id else f"{name} without a server ID")
        # Per DUID; an Information-Request may come without one: then per source address.
        if not self.limiter.allow(client_id or source.encode(), now.mono):
            raise Dhcp6Error("rate limited")

        duid = client_id
        mac = link_mac or (codec.duid_mac(duid) if duid else None)  # the relay saw the real MAC
        if duid and link_mac and self._macs.get(duid) != link_mac:
            if len(self._macs) > 100_000:  # bounded: random DUIDs must not grow memory
                self._macs.clear()
            self._macs[duid] = link_mac
        options: list[Option] = [(codec.OPT_CLIENTID, client_id), (codec.OPT_SERVERID, self.server_duid)] \
            if client_id is not None else [(codec.OPT_SERVERID, self.server_duid)]
        out = Outgoing(b"", (source, port), [], "reply", name, duid, mac, [], [])
        if unicast:
            # RFC 8415 18.4: a Request, Renew, Release or Decline sent by unicast, and we never send the Server
            # Unicast option: UseMulticast, with the two identifiers and no other option; the client multicasts.
            options.append((codec.OPT_STATUS_CODE, StatusCode(codec.USE_MULTICAST, "use multicast").encode()))
            return self._finish(out, codec.REPLY, msg, options, mac, config=False)
        ias = msg.ia_na  # decoded once, by codec.parse
        others = msg.ia_other
        # RFC 8415 13.1: only a link we have addresses for gets any; Confirm needs to know the link's prefixes.
        served = link is None or self._on_link(link)
        if not served:
            out.unserved_link = link

        if kind in _ASSIGNING:
            rapid = kind == codec.SOLICIT and self.settings.rapid_commit and \
                msg.get(codec.OPT_RAPID_COMMIT) is not None
            assert duid is not None
            for ia in ias:
                given = self._assign(duid, ia, now, out, commit=rapid or kind == codec.REQUEST) if served else \
                    IaNa(ia.iaid, self.t1, self.t2, status=StatusCode(codec.NO_ADDRS_AVAIL, "link not served")).encode()
                options.append((codec.OPT_IA_NA, given))
            if others:
                self._unsupported_ias(options, others, assigning=True)
            if rapid:
                options.append((codec.OPT_RAPID_COMMIT, b""))
            elif kind == codec.SOLICIT:
                out.kind = "advertise"
                return self._finish(out, codec.ADVERTISE, msg, options, mac, config=True)
        elif kind in (codec.RENEW, codec.REBIND):
            assert duid is not None
            for ia in ias:
                extended = self._extend(duid, ia, now, out, kind) if served else self._wrong_link(ia)
                options.append((codec.OPT_IA_NA, extended.encode()))
            self._unsupported_ias(options, others, assigning=False)
        elif kind in (codec.RELEASE, codec.DECLINE):
            assert duid is not None
            for ia in ias:
                result = self._give_back(duid, ia, now, out, kind)
                if result is not None:
                    options.append((codec.OPT_IA_NA, result.encode()))
            self._unsupported_ias(options, others, assigning=False)
            done = "release received" if kind == codec.RELEASE else "decline received"
            options.append((codec.OPT_STATUS_CODE, StatusCode(codec.SUCCESS, done).encode()))
            return self._finish(out, codec.REPLY, msg, options, mac, config=False)
        elif kind == codec.CONFIRM:
            addresses = [a.address for ia in ias for a in ia.addresses]
            addresses += [a.address for ta in others if isinstance(ta, IaTa) for a in ta.addresses]
            if not addresses or not served:
                return None  # RFC 8415 18.3.3: nothing to confirm, or a link we cannot judge: no reply
            on_link = all(self._on_link(a) for a in addresses)
            status = StatusCode(codec.SUCCESS, "all addresses on link") if on_link else StatusCode(
                codec.NOT_ON_LINK, "not on link")
            options.append((codec.OPT_STATUS_CODE, status.encode()))
            return self._finish(out, codec.REPLY, msg, options, mac, config=False)
        elif kind == codec.INFORMATION_REQUEST:
            # RFC 8415 21.23: when to ask again, so a stateless phone sees a changed option 59 in time.
            options.append((codec.OPT_INFORMATION_REFRESH_TIME, self._refresh))
        return self._finish(out, codec.REPLY, msg, options, mac, config=True)

    def _unsupported_ias(self, options: list[Option], others: Sequence[IaTa | IaPd], *, assigning: bool) -> None:
        """IA_TA and IA_PD: bootstrapd assigns no temporary addresses and delegates no prefixes. In an Advertise or
        Reply to Solicit/Request: NoAddrsAvail / NoPrefixAvail inside the IA (RFC 8415 18.3.1, 18.3.2; RFC 7550
        4.1); to Renew, Rebind, Release, Decline: NoBinding, as for any IA the server has no binding for."""
        for ia in others:
            if isinstance(ia, IaTa):
                status = StatusCode(codec.NO_ADDRS_AVAIL, "no temporary addresses") if assigning else \
                    StatusCode(codec.NO_BINDING, "no binding")
                options.append((codec.OPT_IA_TA, IaTa(ia.iaid, status=status).encode()))
            else:
                pd = ia
                status = StatusCode(codec.NO_PREFIX_AVAIL, "no prefixes delegated") if assigning else \
                    StatusCode(codec.NO_BINDING, "no binding")
                options.append((codec.OPT_IA_PD, IaPd(pd.iaid, 0, 0, status).encode()))

    def _wrong_link(self, ia: IaNa) -> IaNa:
        """Renew/Rebind from a link we do not serve (RFC 8415 18.3.4, 18.3.5): our addresses are not appropriate
        there (lifetimes 0); an address of that link is another server's business (NoBinding)."""
        ours = [a for a in ia.addresses if self.pool.in_range(int(a.address)) or self._on_link(a.address)]
        if ours:
            return IaNa(ia.iaid, self.t1, self.t2, [IaAddress(a.address, 0, 0) for a in ours])
        return IaNa(ia.iaid, self.t1, self.t2, status=StatusCode(codec.NO_BINDING, "no binding"))

    # --- addresses -------------------------------------------------------------------------------------------------

    def _on_link(self, address: IPv6Address) -> bool:
        return any(address in net for net in self.link_prefixes)

    def _lease(self, duid: bytes, iaid: int, address: int | IPv6Address, state: str, expires: float,
               mac: bytes | None) -> Lease6:
        """``mac``: the DUID's own (or, for a message, the one its relay saw: ``Outgoing.mac``, which _dispatch has
        then remembered in ``_macs``); a MAC learnt from a relay earlier wins."""
        return Lease6(address if isinstance(address, IPv6Address) else IPv6Address(address), duid, iaid, expires,
                      state, self._macs.get(duid) or mac)

    def _ia_with(self, iaid: int, address: IPv6Address, preferred: int, valid: int) -> IaNa:
        return IaNa(iaid, self.t1, self.t2, [IaAddress(address, preferred, valid)])

    def _assign(self, duid: bytes, ia: IaNa, now: Now, out: Outgoing, *, commit: bool) -> bytes:
        """One IA of a Solicit or Request: the IA_NA option's value for the reply."""
        key = _key(duid, ia.iaid)
        pool = self.pool
        address: int | None = None
        # The pool's dicts and range read directly here (as Dhcp4Server does on the DORA path): a Python call fewer
        # each than Pool.binding, Pool.in_range and Pool.holder, in every Solicit and Request.
        binding = pool.by_key.get(key)
        if binding is not None and binding.state != poolmod.DECLINED and pool.first <= binding.address <= pool.last \
                and pool.available(binding.address, key, now):
            address = binding.address
        elif not pool.can_take(duid, key, now):
            # This DUID already holds its share (IAIDs rotated or packed into one message, a DECLINE loop).
            return IaNa(ia.iaid, self.t1, self.t2,
                        status=StatusCode(codec.NO_ADDRS_AVAIL, "no addresses available")).encode()
        elif ia.addresses:
            address = pool.first_available(key, [int(hint.address) for hint in ia.addresses], now)
        if address is None:
            address = pool.allocate(key, now)
        if address is None:
            out.exhausted = True
            return IaNa(ia.iaid, self.t1, self.t2,
                        status=StatusCode(codec.NO_ADDRS_AVAIL, "no addresses available")).encode()
        settings = self.settings
        if commit:
            expires = now.wall + settings.valid_lifetime
            pool.bind(key, address, poolmod.ACTIVE, expires, duid)
            # A Request asks for the address it was advertised: the IPv6Address decoded for it serves the lease (a
            # second one from the int costs about as much as the whole pool lookup).
            hints = ia.addresses
            ip = hints[0].address if hints and int(hints[0].address) == address else address
            out.leases.append(self._lease(duid, ia.iaid, ip, ACTIVE, expires, out.mac))
        else:
            current = pool.by_address.get(address)
            # An advertise must not shorten an active lease back to an offer.
            if not (current is not None and current.key == key and current.state == poolmod.ACTIVE
                    and current.expires > now.wall):
                pool.bind(key, address, poolmod.OFFERED, now.mono + settings.offer_time, duid)
        out.addresses.append(address)
        return codec.encode_ia_na_address(ia.iaid, self.t1, self.t2, address.to_bytes(16, "big"),
                                          settings.preferred_lifetime, settings.valid_lifetime)

    def _extend(self, duid: bytes, ia: IaNa, now: Now, out: Outgoing, kind: int) -> IaNa:
        key = _key(duid, ia.iaid)
        pool = self.pool
        settings = self.settings
        binding = pool.binding(key)
        address: int | None = None
        if binding is not None and binding.state in (poolmod.ACTIVE, poolmod.OFFERED) and \
                pool.in_range(binding.address) and pool.available(binding.address, key, now):
            address = binding.address
        elif pool.can_take(duid, key, now):
            # No binding (e.g. the lease expired): take the client's address back if it is still free (RFC 8415
            # 18.3.4 lets the server create the binding).
            address = pool.first_available(key, (int(hint.address) for hint in ia.addresses), now)
        if address is None:
            # Rebind: addresses that are wrong for the link, or ours but held by another client, must not be used
            # any more (lifetimes 0). An on-link address outside our range is another server's business (RFC 8415
            # 18.3.5): NoBinding, so the phone keeps it rather than dropping a working address.
            revoke = [a for a in ia.addresses if pool.in_range(int(a.address)) or not self._on_link(a.address)]
            if kind == codec.REBIND and revoke and len(revoke) == len(ia.addresses):
                return IaNa(ia.iaid, self.t1, self.t2, [IaAddress(a.address, 0, 0) for a in revoke])
            return IaNa(ia.iaid, self.t1, self.t2, status=StatusCode(codec.NO_BINDING, "no binding"))
        expires = now.wall + settings.valid_lifetime
        ip = IPv6Address(address)
        pool.bind(key, address, poolmod.ACTIVE, expires, duid)
        out.leases.append(self._lease(duid, ia.iaid, ip, ACTIVE, expires, out.mac))
        out.addresses.append(address)
        result = self._ia_with(ia.iaid, ip, settings.preferred_lifetime, settings.valid_lifetime)
        for other in ia.addresses:
            if int(other.address) != address:
                result.addresses.append(IaAddress(other.address, 0, 0))
        return result

    def _give_back(self, duid: bytes, ia: IaNa, now: Now, out: Outgoing, kind: int) -> IaNa | None:
        """Release or Decline of one IA (RFC 8415 18.3.7, 18.3.8). Only a binding counts: an address that was only
        advertised, or one the IA does not hold, is no binding, answered inside the IA with NoBinding."""
        key = _key(duid, ia.iaid)
        binding = self.pool.binding(key)
        wanted = {int(entry.address) for entry in ia.addresses}
        if binding is None or binding.state != poolmod.ACTIVE or binding.address not in wanted:
            return IaNa(ia.iaid, 0, 0, status=StatusCode(codec.NO_BINDING, "no binding"))
        address = binding.address
        if kind == codec.RELEASE:
            self.pool.release(key, address, now)
            out.leases.append(self._lease(duid, ia.iaid, address, RELEASED, now.wall, out.mac))
        else:
            until = now.wall + self.settings.decline_time
            self.pool.decline(address, until, duid)
            out.leases.append(self._lease(duid, ia.iaid, address, DECLINED, until, out.mac))
        out.addresses.append(address)
        return None

    # --- options ---------------------------------------------------------------------------------------------------

    def _classes(self, msg: Message, mac: bytes | None) -> tuple[str, ...]:
        vendor = msg.vendor_class  # decoded by codec.parse
        names: tuple[str, ...] = ()
        for m in self._matchers:  # a loop, not tuple(generator): no generator frame per message
            if m.matches(vendor, mac):
                names += (m.name,)
        return names

    def _configured(self, names: tuple[str, ...]) -> _Configured:
        """Options every client of this class combination gets, and its boot-file URL: encoded once (cached)."""
        cached = self._option_cache.get(names)
        if cached is not None:
            return cached
        settings = self.settings
        options: dict[int, bytes] = {}
        vendor = dict(settings.vendor_options)
        url = settings.bootfile_url
        if settings.dns:
            options[codec.OPT_DNS_SERVERS] = codec.encode_addresses(list(settings.dns))
        if settings.domain:
            options[codec.OPT_DOMAIN_LIST] = codec.encode_domains(list(settings.domain))
        variables = self.variables
        options.update(render_map(settings.options, variables))
        for cls in settings.classes:
            if cls.name in names:
                options.update(render_map(cls.options, variables))
                vendor.update(cls.vendor_options)
                url = cls.bootfile_url or url
        result: list[Option] = sorted(options.items())
        for enterprise, subs in vendor.items():
            rendered = [(code, render(value, variables)) for code, value in subs]
            result.append((codec.OPT_VENDOR_OPTS, codec.encode_vendor_opts(enterprise, rendered)))
        expanded = expand(url, variables)
        cached = _Configured(tuple(c for c, _ in result), codec.encode_options(result),
                             codec.encode_options([(codec.OPT_BOOTFILE_URL, expanded.encode())]) if expanded else b"")
        if len(self._option_cache) < 4096:
            self._option_cache[names] = cached
        return cached

    def _finish(self, out: Outgoing, reply_type: int, msg: Message, options: list[Option], mac: bytes | None, *,
                config: bool) -> Outgoing:
        """The reply encoded into ``out.data``, and its option codes in ``out.options`` for the event; ``config``:
        followed by the configured options of the client's classes (every reply but UseMulticast, Release,
        Decline and Confirm)."""
        codes = [c for c, _ in options]
        tail = b""
        if config:
            # Without classes, and once a combination's options are cached, no method call for either.
            names = self._classes(msg, mac) if self._matchers else ()
            out.classes = names
            configured = self._option_cache.get(names) or self._configured(names)
            codes += configured.codes
            if configured.url and (self.settings.force_bootfile_url or codec.OPT_BOOTFILE_URL in msg.oro):
                tail = configured.encoded + configured.url
                codes.append(codec.OPT_BOOTFILE_URL)
            else:
                tail = configured.encoded
        out.options = codes
        out.data = codec.encode_message(reply_type, msg.transaction_id, options, tail)
        return out

    # --- introspection ---------------------------------------------------------------------------------------------

    def leases(self, now: float) -> list[Lease6]:
        """The active leases held in memory (tests, status)."""
        leases = []
        for b in self.pool.bindings():
            if b.state == poolmod.ACTIVE and b.expires > now and b.key:
                duid, iaid = _split_key(b.key)
                leases.append(self._lease(duid, iaid, b.address, ACTIVE, b.expires, codec.duid_mac(duid)))
        return leases
