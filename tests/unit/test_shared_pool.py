"""A DHCP server sharing its store with other appliances: it learns their leases and spreads its offers."""

from __future__ import annotations

from ipaddress import IPv4Address

from bootstrapd.dhcp4 import codec
from bootstrapd.leases.pool import Pool
from bootstrapd.leases.store import Lease4
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import SERVER, dora, mac, make_server, message


def test_a_learnt_lease_is_served_on_rebinding_and_never_offered_to_another() -> None:
    server = make_server()
    other_client = mac(7)
    # Another appliance ACKed 10.77.0.101 to other_client (its NOTIFY, or the winner of a lost commit).
    server.learn([Lease4(IPv4Address("10.77.0.101"), other_client, None, 1000.0 + 3600)])
    # Its client rebinds (broadcast, ciaddr, no server id) through this appliance: same address, our server id.
    reply = server.handle(message(codec.REQUEST, other_client, ciaddr="10.77.0.101"), ("10.77.0.101", 68), at(1100))
    assert reply is not None and reply.data is not None
    acked = codec.decode(reply.data)
    assert acked.msg_type() == codec.ACK and codec.ntoa(acked.yiaddr) == "10.77.0.101"
    assert acked.options[codec.SERVER_ID] == SERVER.packed
    # Nobody else is offered it, and the MAC-file rule knows its owner.
    given = {codec.ntoa(dora(server, mac(n), now=1100).yiaddr) for n in range(1, 4)}
    assert "10.77.0.101" not in given
    assert server.owner(IPv4Address("10.77.0.101"), 1100) == other_client


def test_a_lost_commit_makes_the_retry_refused_then_another_address() -> None:
    server = make_server()
    mine = mac(1)
    offer = server.handle(message(codec.DISCOVER, mine), ("0.0.0.0", 68), at(1000))
    assert offer is not None and offer.data is not None
    address = codec.decode(offer.data).yiaddr
    options = {codec.SERVER_ID: SERVER.packed, codec.REQUESTED_IP: address}
    assert server.handle(message(codec.REQUEST, mine, options=options), ("0.0.0.0", 68), at(1000)) is not None
    # The database said another appliance's client got it first: the pool learns the winner.
    server.learn([Lease4(IPv4Address(address), mac(9), None, 1000.0 + 3600)])
    retry = server.handle(message(codec.REQUEST, mine, options=options), ("0.0.0.0", 68), at(1001))
    assert retry is not None and retry.data is not None and codec.decode(retry.data).msg_type() == codec.NAK
    again = dora(server, mine, now=1002)
    assert again.yiaddr != address


def test_spread_pools_start_apart_and_still_find_every_free_address() -> None:
    first, last = 1000, 1999
    a, b = Pool(first, last), Pool(first, last)
    a.spread(b"\x0a\x4d\x00\x01")
    b.spread(b"\x0a\x4d\x00\x02")
    now = at(0)
    # Two appliances allocating in turn, each learning the other's bindings at once: never the same address.
    collisions = 0
    for n in range(900):
        for pool, other, tag in ((a, b, b"a"), (b, a, b"b")):
            key = tag + n.to_bytes(4, "big")
            address = pool.allocate(key, now)
            if address is None:
                continue
            if other.holder(address) is not None and not other.reusable(other.holder(address), now):  # type: ignore[arg-type]
                collisions += 1
            pool.bind(key, address, "active", 1e9)
            other.bind(key, address, "active", 1e9)
    assert collisions == 0
    # Full: a spread pool still finds the last free address (the plain scan after the jumps sees every one).
    full = Pool(first, first + 99)
    full.spread(b"x")
    for n in range(99):
        key = n.to_bytes(4, "big")
        got = full.allocate(key, now)
        assert got is not None
        full.bind(key, got, "active", 1e9)
    last_one = full.allocate(b"last", now)
    assert last_one is not None and full.holder(last_one) is None
