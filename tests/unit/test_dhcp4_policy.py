"""REQUESTs that extend or check a lease (INIT-REBOOT, RENEWING, REBINDING) pass the checks of a new binding (issue #8
item 4), and `dhcp4.authoritative` has RFC 2131 4.3.2's behaviour for both values (item 5); T1/T2, siaddr and the
boot file are configurable (item 17)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bootstrapd.config import ConfigError, loads
from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Packet
from bootstrapd.dhcp4.server import Dhcp4Server, Reply
from bootstrapd.leases.store import RELEASED
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import BASE, SERVER, dora, mac, make_server, message

SRC = ("0.0.0.0", 68)
X, Y, STRANGER = mac(1), mac(2), mac(3)


def kind(reply: Reply | None) -> str | None:
    """The reply's message type name, or None when the server stays silent."""
    if reply is None or reply.data is None:
        return None
    return codec.TYPE_NAMES[codec.decode(reply.data).msg_type()]


def renew(server: Dhcp4Server, hw: bytes, address: str, now: float, *, broadcast: bool = False) -> Reply | None:
    """RENEWING (unicast, ciaddr) or, with ``broadcast``, REBINDING."""
    source = SRC if broadcast else (address, 68)
    return server.handle(message(codec.REQUEST, hw, ciaddr=address, flags=codec.BROADCAST_FLAG if broadcast else 0),
                         source, at(now))


def init_reboot(server: Dhcp4Server, hw: bytes, address: str, now: float) -> Reply | None:
    return server.handle(message(codec.REQUEST, hw, options={codec.REQUESTED_IP: IPv4Address(address).packed}),
                         SRC, at(now))


def ip(packet: Packet) -> str:
    return str(IPv4Address(packet.yiaddr))


# -- item 4: renewals pass policy ------------------------------------------------------------------------------------

def test_a_reservation_made_by_reload_wins_over_the_renewing_holder() -> None:
    """RFC 2131 4.3.2: X's renewal of the address now reserved for Y is NAKed and the address freed for Y."""
    server = make_server()
    address = ip(dora(server, X))
    reserved = BASE + f'[[dhcp4.host]]\nmac = "{Y.hex(":")}"\naddress = "{address}"\n'
    server.configure(loads(reserved).dhcp4)
    # Y boots while X still holds it: no offer, and the event says why (not "pool exhausted").
    waiting = server.handle(message(codec.DISCOVER, Y), SRC, at(1100.0))
    assert waiting is not None and waiting.data is None and waiting.event["type"] == "reserved_in_use"
    nak = renew(server, X, address, 2800.0)
    assert kind(nak) == "NAK"
    assert nak is not None and [(str(x.address), x.state) for x in nak.commit] == [(address, RELEASED)]
    assert codec.decode(nak.data or b"").options[codec.MESSAGE].startswith(b"address reserved for another")
    # Now Y gets its reserved address, and X another one.
    assert ip(dora(server, Y, now=2801.0)) == address
    assert ip(dora(server, X, now=2802.0)) != address


def test_the_reserved_address_is_freed_for_its_owner_when_the_holders_lease_ends() -> None:
    server = make_server()
    address = ip(dora(server, X))  # lease until 1000 + 3600
    server.configure(loads(BASE + f'[[dhcp4.host]]\nmac = "{Y.hex(":")}"\naddress = "{address}"\n').dhcp4)
    assert server.handle(message(codec.DISCOVER, Y), SRC, at(4599.0)).event["type"] == "reserved_in_use"  # type: ignore[union-attr]
    assert ip(dora(server, Y, now=4601.0)) == address


def test_an_address_outside_a_shrunk_range_is_not_renewed() -> None:
    server = make_server()
    for n in range(3):
        dora(server, mac(10 + n))
    address = ip(dora(server, X, now=1001.0))  # the pool is 100-103: X has one of them
    server.configure(loads(BASE.replace("10.77.0.100-10.77.0.103", "10.77.0.150-10.77.0.160")).dhcp4)
    assert kind(renew(server, X, address, 2800.0)) == "NAK"
    assert kind(renew(server, X, address, 3200.0, broadcast=True)) == "NAK"  # rebinding too


def test_a_declined_address_is_not_renewed() -> None:
    server = make_server()
    address = ip(dora(server, X))
    decline = message(codec.DECLINE, X, options={codec.SERVER_ID: SERVER.packed,
                                                 codec.REQUESTED_IP: IPv4Address(address).packed})
    server.handle(decline, SRC, at(1001.0))
    assert kind(renew(server, X, address, 1002.0)) == "NAK"


def test_a_renewal_of_a_reserved_host_on_another_address_is_naked() -> None:
    server = make_server()
    address = ip(dora(server, X))
    server.configure(loads(BASE + f'[[dhcp4.host]]\nmac = "{X.hex(":")}"\naddress = "10.77.0.60"\n').dhcp4)
    assert kind(renew(server, X, address, 2800.0)) == "NAK"
    assert ip(dora(server, X, now=2801.0)) == "10.77.0.60"


# -- item 5: authority ---------------------------------------------------------------------------------------------

@pytest.fixture(params=[True, False], ids=["authoritative", "not-authoritative"])
def authoritative(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def with_keys(keys: str) -> Dhcp4Server:
    """A server with ``keys`` added to the [dhcp4] section."""
    return make_server(base=BASE.replace("[dhcp4.options]", keys + "[dhcp4.options]"))


def server_with(authoritative: bool) -> Dhcp4Server:
    return with_keys(f"authoritative = {str(authoritative).lower()}\n")


def test_init_reboot_on_the_wrong_network_from_a_known_client_is_naked(authoritative: bool) -> None:
    """RFC 2131 4.3.2: the server SHOULD NAK a client it knows that is on the wrong net (a phone moved VLANs)."""
    server = server_with(authoritative)
    dora(server, X)
    assert kind(init_reboot(server, X, "192.168.9.9", 2000.0)) == "NAK"


def test_init_reboot_from_a_client_we_have_no_record_of(authoritative: bool) -> None:
    """No record: MUST remain silent, unless we are the only server on the segment (authoritative)."""
    server = server_with(authoritative)
    expected = "NAK" if authoritative else None
    assert kind(init_reboot(server, STRANGER, "192.168.9.9", 2000.0)) == expected
    held = ip(dora(server, X))
    assert kind(init_reboot(server, STRANGER, held, 2000.0)) == expected
    # A free address of our range: an authoritative server takes the lease over (it lost its database, say).
    assert kind(init_reboot(server, STRANGER, "10.77.0.103", 2000.0)) == ("ACK" if authoritative else None)


def test_another_servers_rebinding_client_is_left_alone_unless_authoritative(authoritative: bool) -> None:
    server = server_with(authoritative)
    held = ip(dora(server, X))
    assert kind(renew(server, STRANGER, held, 2000.0, broadcast=True)) == ("NAK" if authoritative else None)
    assert kind(renew(server, STRANGER, "10.77.0.103", 2000.0, broadcast=True)) == (
        "ACK" if authoritative else None)


def test_our_own_clients_renew_and_rebind_either_way(authoritative: bool) -> None:
    server = server_with(authoritative)
    address = ip(dora(server, X))
    assert kind(renew(server, X, address, 2800.0)) == "ACK"
    assert kind(renew(server, X, address, 4000.0, broadcast=True)) == "ACK"
    # ... and a known client asking for an address another client holds is NAKed either way.
    other = ip(dora(server, Y, now=4000.0))
    assert kind(renew(server, X, other, 4001.0, broadcast=True)) == "NAK"


# -- item 17: T1/T2, siaddr, the boot file -------------------------------------------------------------------------

def test_renew_and_rebind_times_are_configurable() -> None:
    ack = dora(with_keys("renew_time = 600\nrebind_time = 900\n"), X)
    assert ack.options[codec.RENEWAL_TIME] == (600).to_bytes(4, "big")
    assert ack.options[codec.REBINDING_TIME] == (900).to_bytes(4, "big")
    assert ack.options[codec.LEASE_TIME] == (3600).to_bytes(4, "big")


@pytest.mark.parametrize(("keys", "key", "message"), [
    ("renew_time = 3600\n", "dhcp4.renew_time", "at most 3599"),
    ("renew_time = 1000\nrebind_time = 900\n", "dhcp4.rebind_time", "greater than renew_time"),
    ('boot_file = "a\\nb"\n', "dhcp4.boot_file", "printable"),
    ('next_server = "nope"\n', "dhcp4.next_server", "IPv4 address"),
])
def test_timer_and_boot_settings_are_checked(keys: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads(BASE.replace("[dhcp4.options]", keys + "[dhcp4.options]"))
    assert info.value.key == key and message in info.value.message


def test_next_server_and_boot_file() -> None:
    plain = dora(make_server(), X)
    assert plain.siaddr == SERVER.packed and plain.file == bytes(128) and 67 not in plain.options
    server = with_keys('next_server = "10.77.0.2"\nboot_file = "pxelinux.0"\n')
    ack = dora(server, X)
    assert ack.siaddr == IPv4Address("10.77.0.2").packed
    assert ack.file.rstrip(b"\0") == b"pxelinux.0"
    assert 67 not in ack.options  # not requested
    asked = dora(server, Y, options={codec.PARAM_LIST: bytes((1, 3, 67))})
    assert asked.options[67] == b"pxelinux.0"
