"""Adversarial sequences against the DHCPv4 and DHCPv6 cores (not only the codecs), with injected time.

Valid client messages of every type, built from what the server answered before (offered addresses, its server
ID), are mutated (bytes flipped, truncated, options duplicated) and fed in sequences from a few clients. Whatever
arrives, a core may only raise a ProtocolError, its tables stay consistent and bounded by the pool, and afterwards a
fresh client still gets an address.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrapd.dhcp4 import codec as c4
from bootstrapd.dhcp6 import codec as c6
from bootstrapd.errors import ProtocolError
from bootstrapd.leases.pool import Pool
from tests.unit import test_dhcp6_server as h6
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import SERVER, dora, mac, make_server, message

MACS = [mac(n) for n in range(1, 4)] + [mac(1, "00:15:65")]
CLIENT_IDS = [None, b"\x01" + MACS[0], b"\xff\x00\x00\x00\x01abc", b"\x00"]
DUIDS = [h6.YEALINK, h6.OTHER, b"\x00\x02\x00\x00\x00\x09xyz"]

mutation = st.one_of(
    st.none(),
    st.tuples(st.just("flip"), st.integers(0, 2000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 2000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 2000), st.integers(0, 255)),
)


def mutate(data: bytes, how: tuple[str, int, int] | None) -> bytes:
    if how is None or not data:
        return data
    kind, where, value = how
    where %= len(data)
    if kind == "flip":
        return data[:where] + bytes((data[where] ^ value,)) + data[where + 1:]
    if kind == "cut":
        return data[:where]
    return data[:where] + bytes((value,)) + data[where:]


def check_pool(pool: Pool) -> None:
    assert len(pool.by_address) <= pool.size() + 8  # (reservations live outside the range)
    for key, binding in pool.by_key.items():
        assert binding.key == key and pool.by_address.get(binding.address) is binding


step4 = st.tuples(
    st.sampled_from([c4.DISCOVER, c4.REQUEST, c4.DECLINE, c4.RELEASE, c4.INFORM, 0, 2, 9]),
    st.integers(0, len(MACS) - 1),
    st.sampled_from(CLIENT_IDS),
    st.sampled_from(["selecting", "init-reboot", "renewing", "other-server"]),
    st.booleans(),  # via a relay (option 82, giaddr)
    mutation,
    st.floats(0, 120),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step4, max_size=25))
def test_dhcp4_core_survives_mutated_sequences(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    server = make_server()
    now = 1000.0
    known: dict[int, bytes] = {}  # client -> last address offered or acked
    for kind, who, client_id, state, relay, how, advance in steps:
        now += advance
        hw = MACS[who]
        address = known.get(who, IPv4Address("10.77.0.100").packed)
        options: dict[int, bytes] = {c4.PARAM_LIST: bytes((1, 3, 6, 66, 160))}
        if client_id is not None:
            options[c4.CLIENT_ID] = client_id
        ciaddr = "0.0.0.0"
        if kind in (c4.REQUEST, c4.DECLINE):
            if state == "selecting" or kind == c4.DECLINE:
                options[c4.SERVER_ID] = SERVER.packed
                options[c4.REQUESTED_IP] = address
            elif state == "init-reboot":
                options[c4.REQUESTED_IP] = address
            elif state == "renewing":
                ciaddr = c4.ntoa(address)
            else:
                options[c4.SERVER_ID] = b"\x0a\x4d\x00\x09"
                options[c4.REQUESTED_IP] = address
        elif kind in (c4.RELEASE, c4.INFORM):
            ciaddr = c4.ntoa(address)
            options[c4.SERVER_ID] = SERVER.packed
        if relay:
            options[c4.RELAY_AGENT] = b"\x01\x04port\x02\x06" + hw
        data = message(kind, hw, xid=who, options=options, ciaddr=ciaddr,
                       giaddr="10.77.0.2" if relay else "0.0.0.0")
        if kind == 0:
            data = data.replace(b"\x35\x01\x00", b"")
        try:
            reply = server.handle(mutate(data, how), ("10.77.0.50", 68), at(now))
        except ProtocolError:
            continue
        if reply is not None and reply.data is not None:
            decoded = c4.decode(reply.data)
            assert decoded.options[c4.SERVER_ID] == SERVER.packed
            if decoded.yiaddr != c4.ZERO:
                known[who] = decoded.yiaddr
        check_pool(server.pool)
    now += 3600 * 24
    ack = dora(server, mac(99), now)
    assert IPv4Address(ack.yiaddr) in server.network


step6 = st.tuples(
    st.sampled_from([c6.SOLICIT, c6.REQUEST, c6.CONFIRM, c6.RENEW, c6.REBIND, c6.RELEASE, c6.DECLINE,
                     c6.INFORMATION_REQUEST, c6.ADVERTISE, c6.REPLY]),
    st.integers(0, len(DUIDS) - 1),
    st.integers(0, 3),  # IAID
    st.booleans(),  # rapid commit
    st.integers(0, 2),  # relay depth
    mutation,
    st.floats(0, 120),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step6, max_size=25))
def test_dhcp6_core_survives_mutated_sequences(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    srv = h6.server("rapid_commit = true\nrate_limit = 1000.0\nrate_burst = 1000\n")
    now = h6.NOW
    known: dict[tuple[int, int], str] = {}
    for kind, who, iaid, rapid, depth, how, advance in steps:
        now += advance
        duid = DUIDS[who]
        address = known.get((who, iaid), "fd77::100")
        options: list[c6.Option] = [h6.oro(c6.OPT_BOOTFILE_URL, 23)]
        if kind != c6.INFORMATION_REQUEST:
            options.append(h6.ia(iaid, address) if kind != c6.SOLICIT else h6.ia(iaid))
        if rapid:
            options.append((c6.OPT_RAPID_COMMIT, b""))
        server_id = h6.SERVER_DUID if kind in (c6.REQUEST, c6.RENEW, c6.RELEASE, c6.DECLINE) else None
        data = h6.msg(kind, duid, *options, server_id=server_id, xid=who)
        for level in range(depth):
            # Built by hand: a server message inside a Relay-forw must reach the server too.
            relay = bytes((c6.RELAY_FORW, level)) + IPv6Address("fd77::2").packed + IPv6Address("fe80::1").packed
            data = relay + c6.encode_options([(c6.OPT_INTERFACE_ID, b"vlan7"), (c6.OPT_RELAY_MSG, data)])
        try:
            out = srv.handle(mutate(data, how), h6.CLIENT, at(now))
        except ProtocolError:
            continue
        if out is not None:
            parsed = c6.parse(out.data)
            while isinstance(parsed, c6.RelayMessage):
                parsed = parsed.inner
            for ia_option in h6.ias(parsed):
                for entry in ia_option.addresses:
                    if entry.valid:
                        known[(who, ia_option.iaid)] = str(entry.address)
        check_pool(srv.pool)
    h6.obtain(srv, b"\x00\x03\x00\x01\x02\x00\x00\x00\x0a\x0b", 7, now + 3600 * 24 * 30)
