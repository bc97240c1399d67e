"""leases.owners: the MAC behind an address is what the DHCP servers' own pools say, for both families."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from bootstrapd.dhcp4 import codec
from bootstrapd.leases.owners import LeaseOwners
from tests.unit import test_dhcp6_server as v6
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import SERVER, dora, mac, make_server, message


def test_dhcp4_active_lease_owner_then_released_or_expired() -> None:
    server = make_server()
    owners = LeaseOwners()
    owners.register(server.owner)
    hw = mac(7, "00:15:65")
    ack = dora(server, hw, now=1000.0)
    address = IPv4Address(ack.yiaddr)
    assert owners.mac_for(str(address), 1001.0) == hw
    assert owners.mac_for(f"::ffff:{address}", 1001.0) == hw  # a v4-mapped source from a dual-stack socket
    assert owners.mac_for(str(address), 1000.0 + 10_000) is None  # expired
    assert owners.mac_for("10.77.0.250", 1001.0) is None
    assert owners.mac_for("not an address", 1001.0) is None
    release = message(codec.RELEASE, hw, ciaddr=str(address), options={codec.SERVER_ID: SERVER.packed})
    server.handle(release, (str(address), 68), at(1002.0))
    assert owners.mac_for(str(address), 1003.0) is None


def test_an_offer_is_not_ownership() -> None:
    server = make_server()
    owners = LeaseOwners()
    owners.register(server.owner)
    hw = mac(8, "00:15:65")
    offer = server.handle(message(codec.DISCOVER, hw), ("0.0.0.0", 68), at(1000.0))
    assert offer is not None and offer.data is not None
    offered = codec.decode(offer.data)
    assert owners.mac_for(str(IPv4Address(offered.yiaddr)), 1000.5) is None


def test_dhcp6_owner_is_the_mac_inside_the_duid() -> None:
    srv = v6.server()
    owners = LeaseOwners()
    owners.register(srv.owner)
    address = v6.obtain(srv)
    assert owners.mac_for(address, v6.NOW + 1) == bytes.fromhex("001565010203")
    assert owners.mac_for(f"{address}%eth0", v6.NOW + 1) == bytes.fromhex("001565010203")
    assert owners.mac_for(IPv6Address("fd77::1ff"), v6.NOW + 1) is None

