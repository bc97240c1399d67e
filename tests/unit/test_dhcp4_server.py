"""The DHCPv4 server core, with injected time and no sockets."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bootstrapd.config import loads
from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Dhcp4Error
from bootstrapd.dhcp4.server import Dhcp4Server
from bootstrapd.leases.store import Lease4
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import BASE, NETWORK, SERVER, dora, mac, make_server, message

SRC = ("0.0.0.0", 68)


def ip(packet: codec.Packet) -> str:
    return str(IPv4Address(packet.yiaddr))


def test_dora_hands_out_an_address_with_every_configured_option() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    assert ip(ack) == "10.77.0.100"
    opts = ack.options
    assert opts[codec.SERVER_ID] == SERVER.packed
    assert opts[codec.LEASE_TIME] == (3600).to_bytes(4, "big")
    assert opts[codec.RENEWAL_TIME] == (1800).to_bytes(4, "big")
    assert opts[codec.REBINDING_TIME] == (3150).to_bytes(4, "big")
    assert opts[codec.SUBNET_MASK] == bytes((255, 255, 255, 0))
    assert opts[codec.ROUTER] == SERVER.packed
    assert opts[codec.DNS] == bytes((10, 77, 0, 1, 10, 77, 0, 2))
    # Provisioning options go out although the client did not ask for them (no option 55 at all).
    assert opts[66] == b"tftp://10.77.0.1/"
    assert opts[160] == b"http://10.77.0.1/p/"


def test_unicast_reply_is_framed_for_chaddr_and_broadcast_flag_broadcasts() -> None:
    """RFC 2131 4.1: no relay, no ciaddr, no broadcast flag: unicast to yiaddr at chaddr, as a frame we build (the
    kernel cannot resolve yiaddr); the broadcast flag: a plain broadcast."""
    server = make_server()
    reply = server.handle(message(codec.DISCOVER, mac(1)), SRC, at(1000.0))
    assert reply is not None
    assert reply.destination == ("10.77.0.100", 68)
    assert reply.link == mac(1)
    reply = server.handle(message(codec.DISCOVER, mac(2), flags=codec.BROADCAST_FLAG), SRC, at(1000.0))
    assert reply is not None and reply.destination == ("255.255.255.255", 68) and reply.link is None
    relayed = server.handle(message(codec.DISCOVER, mac(3), giaddr="10.77.0.5"), ("10.77.0.5", 67), at(1000.0))
    assert relayed is not None and relayed.destination == ("10.77.0.5", 67) and relayed.link is None


def test_relay_gets_the_reply_on_port_67_with_option_82_last() -> None:
    server = make_server()
    agent = bytes((1, 4)) + b"port" + bytes((2, 3)) + b"sw1"
    reply = server.handle(message(codec.DISCOVER, mac(1), giaddr="10.77.0.5", options={codec.RELAY_AGENT: agent}),
                          ("10.77.0.5", 67), at(1000.0))
    assert reply is not None and reply.data is not None
    assert reply.destination == ("10.77.0.5", 67)
    packet = codec.decode(reply.data)
    assert packet.options[codec.RELAY_AGENT] == agent
    assert list(packet.options)[-1] == codec.RELAY_AGENT
    assert packet.giaddr == IPv4Address("10.77.0.5").packed


def test_relay_from_another_subnet_is_refused() -> None:
    with pytest.raises(Dhcp4Error):
        make_server().handle(message(codec.DISCOVER, mac(1), giaddr="192.0.2.1"), ("192.0.2.1", 67), at(1000.0))


def test_option_82_is_echoed_last_even_when_configured_options_must_yield_to_it() -> None:
    """RFC 3046 2.2: the server SHALL echo option 82; its room is reserved, an unrequested option is left out."""
    server = make_server('[dhcp4.class.big]\nmac_prefix = ["02:00:00"]\n[dhcp4.class.big.options]\n'
                         f'224 = "{"x" * 200}"\n')
    agent = b"\x01\xf0" + b"a" * 240
    reply = server.handle(message(codec.DISCOVER, mac(1), giaddr="10.77.0.5",
                                  options={codec.RELAY_AGENT: agent, codec.MAX_SIZE: (576).to_bytes(2, "big")}),
                          ("10.77.0.5", 67), at(1000.0))
    assert reply is not None and reply.data is not None
    assert len(reply.data) <= 576 - 28
    packet = codec.decode(reply.data)
    assert packet.options[codec.RELAY_AGENT] == agent
    assert 224 not in packet.options
    assert reply.event["left_out"] == (224,) and 224 not in reply.event["options"]


def test_options_over_the_clients_max_size_overflow_into_file_and_sname() -> None:
    """RFC 2132 9.3: with max size 576 the provisioning options still all arrive, through option overload."""
    urls = {code: f"http://10.77.0.1/{code}/{'x' * 30}" for code in (43, 150, 161, 162, 163, 164)}
    body = "".join(f'{code} = "{url}"\n' for code, url in urls.items())
    server = make_server(f"[dhcp4.class.big]\nmac_prefix = [\"02:00:00\"]\n[dhcp4.class.big.options]\n{body}")
    reply = server.handle(message(codec.DISCOVER, mac(1), options={codec.MAX_SIZE: (576).to_bytes(2, "big")}),
                          SRC, at(1000.0))
    assert reply is not None and reply.data is not None
    assert len(reply.data) <= 576 - 28
    packet = codec.decode(reply.data)
    assert packet.options[codec.OVERLOAD] in (b"\x01", b"\x03")
    for code, url in urls.items():
        assert packet.options[code] == url.encode()
    assert packet.options[66] == b"tftp://10.77.0.1/" and packet.msg_type() == codec.OFFER
    # Without a max size option the client may take 576 too (RFC 2131): same answer; a larger one needs no overload.
    big = server.handle(message(codec.DISCOVER, mac(2), options={codec.MAX_SIZE: (1500).to_bytes(2, "big")}),
                        SRC, at(1000.0))
    assert big is not None and big.data is not None
    assert codec.OVERLOAD not in codec.decode(big.data).options


def test_client_id_is_echoed_and_keys_the_lease() -> None:
    server = make_server()
    client_id = b"\xff\x00\x01\x02\x03weird"
    ack = dora(server, mac(1), options={codec.CLIENT_ID: client_id})
    assert ack.options[codec.CLIENT_ID] == client_id
    # Same client id from another MAC is the same client (RFC 2131 4.2) ...
    again = dora(server, mac(2), options={codec.CLIENT_ID: client_id}, now=1001.0)
    assert ip(again) == ip(ack)


def test_clients_of_one_model_share_a_reply_template_but_each_gets_its_own_fields_and_options() -> None:
    """Replies are built from one template per reply type, option 55 and size: what is the client's own (xid,
    flags, chaddr, giaddr, yiaddr, its identifier, its option 82) must never leak from one client's reply into
    another's."""
    server = make_server()
    params = {codec.PARAM_LIST: bytes([1, 3, 6, 66])}
    asked = [
        (mac(1), 0x1111, "0.0.0.0", 0x8000, {**params, codec.CLIENT_ID: b"\x01first"}),
        (mac(2), 0x2222, "10.77.0.5", 0, {**params, codec.RELAY_AGENT: b"\x01\x04port"}),
        (mac(3), 0x3333, "0.0.0.0", 0, dict(params)),
    ]
    offers = []
    for hw, xid, giaddr, flags, options in asked:
        reply = server.handle(message(codec.DISCOVER, hw, xid=xid, giaddr=giaddr, flags=flags, options=options),
                              (giaddr, 67) if giaddr != "0.0.0.0" else SRC, at(1000.0))
        assert reply is not None and reply.data is not None
        offers.append(codec.decode(reply.data))
    assert [p.xid for p in offers] == [0x1111, 0x2222, 0x3333]
    assert [p.mac for p in offers] == [mac(1), mac(2), mac(3)]
    assert [p.flags for p in offers] == [0x8000, 0, 0]
    assert [str(IPv4Address(p.giaddr)) for p in offers] == ["0.0.0.0", "10.77.0.5", "0.0.0.0"]
    assert len({p.yiaddr for p in offers}) == 3
    assert [p.options.get(codec.CLIENT_ID) for p in offers] == [b"\x01first", None, None]
    assert [p.options.get(codec.RELAY_AGENT) for p in offers] == [None, b"\x01\x04port", None]
    assert all(p.options[66] == b"tftp://10.77.0.1/" and p.msg_type() == codec.OFFER for p in offers)


def test_returning_client_gets_its_previous_address_even_after_expiry() -> None:
    server = make_server()
    first = dora(server, mac(1))
    dora(server, mac(2))
    later = dora(server, mac(1), now=1000.0 + 7200)  # lease long expired, nobody took the address
    assert ip(later) == ip(first)


def test_offered_address_is_held_so_two_clients_never_get_the_same_one() -> None:
    server = make_server()
    offers = set()
    for n in range(4):
        reply = server.handle(message(codec.DISCOVER, mac(n)), SRC, at(1000.0))
        assert reply is not None and reply.data is not None
        offers.add(ip(codec.decode(reply.data)))
    assert len(offers) == 4
    # The pool (4 addresses) is now held by offers: a fifth client gets nothing ...
    assert server.handle(message(codec.DISCOVER, mac(9)), SRC, at(1000.0)).data is None  # type: ignore[union-attr]
    assert server.stats["pool_exhausted"] == 1
    # ... until the offers expire (offer_time 30 s).
    reply = server.handle(message(codec.DISCOVER, mac(9)), SRC, at(1031.0))
    assert reply is not None and reply.data is not None


def test_expired_leases_are_reused_when_the_pool_is_full() -> None:
    server = make_server()
    for n in range(4):
        dora(server, mac(n))
    assert server.handle(message(codec.DISCOVER, mac(9)), SRC, at(1000.0)).data is None  # type: ignore[union-attr]
    ack = dora(server, mac(9), now=1000.0 + 3601)
    assert ip(ack) in {"10.77.0.100", "10.77.0.101", "10.77.0.102", "10.77.0.103"}


def test_reservation_is_honoured_and_kept_out_of_the_pool() -> None:
    server = make_server('[[dhcp4.host]]\nmac = "02:00:00:00:00:05"\naddress = "10.77.0.50"\nhostname = "desk5"\n'
                         '[dhcp4.host.options]\n66 = "tftp://10.77.0.1/desk5/"\n'
                         '[[dhcp4.host]]\nmac = "02:00:00:00:00:06"\naddress = "10.77.0.101"\n')
    ack = dora(server, mac(5))
    assert ip(ack) == "10.77.0.50"
    assert ack.options[codec.HOSTNAME] == b"desk5"
    assert ack.options[66] == b"tftp://10.77.0.1/desk5/"
    # 10.77.0.101 is reserved for another MAC: dynamic clients never get it.
    got = {ip(dora(server, mac(n))) for n in (1, 2, 3)}
    assert "10.77.0.101" not in got
    # A reserved client asking for another address is refused it.
    wanted = {codec.REQUESTED_IP: IPv4Address("10.77.0.103").packed}
    reply = server.handle(message(codec.REQUEST, mac(5), options=wanted), SRC, at(1001.0))
    assert reply is not None and reply.data is not None and codec.decode(reply.data).msg_type() == codec.NAK


def test_release_frees_the_address() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    reply = server.handle(message(codec.RELEASE, mac(1), ciaddr=ip(ack), options={codec.SERVER_ID: SERVER.packed}),
                          SRC, at(1010.0))
    assert reply is not None and reply.data is None
    assert reply.commit[0].state == "released"
    for n in range(2, 6):  # the pool has 4 addresses: the released one is handed out again
        dora(server, mac(n), now=1020.0)


def test_decline_quarantines_the_address() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    reply = server.handle(message(codec.DECLINE, mac(1), options={codec.SERVER_ID: SERVER.packed,
                                                                  codec.REQUESTED_IP: ack.yiaddr}), SRC, at(1001.0))
    assert reply is not None and reply.commit[0].state == "declined"
    again = dora(server, mac(1), now=1002.0)
    assert ip(again) != ip(ack)
    others = {ip(dora(server, mac(n), now=1003.0)) for n in (2, 3)}
    assert ip(ack) not in others
    # After the quarantine (decline_time 600 s) it comes back.
    assert server.handle(message(codec.DISCOVER, mac(4)), SRC, at(1003.0)).data is None  # type: ignore[union-attr]
    assert ip(dora(server, mac(4), now=1700.0)) == ip(ack)


def test_decline_by_a_stranger_is_ignored() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    reply = server.handle(message(codec.DECLINE, mac(2), options={codec.SERVER_ID: SERVER.packed,
                                                                  codec.REQUESTED_IP: ack.yiaddr}), SRC, at(1001.0))
    assert reply is None


def test_inform_gets_options_without_lease_time_unicast_to_ciaddr() -> None:
    server = make_server()
    reply = server.handle(message(codec.INFORM, mac(1), ciaddr="10.77.0.30"), ("10.77.0.30", 68), at(1000.0))
    assert reply is not None and reply.data is not None and not reply.commit
    assert reply.destination == ("10.77.0.30", 68)
    packet = codec.decode(reply.data)
    assert packet.msg_type() == codec.ACK
    assert packet.yiaddr == b"\0\0\0\0"
    assert codec.LEASE_TIME not in packet.options
    assert packet.options[66] == b"tftp://10.77.0.1/"


def test_renewing_and_rebinding_extend_the_lease() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    renew = server.handle(message(codec.REQUEST, mac(1), ciaddr=ip(ack)), (ip(ack), 68), at(2800.0))
    assert renew is not None and renew.data is not None
    assert renew.destination == (ip(ack), 68)
    assert codec.decode(renew.data).msg_type() == codec.ACK
    assert renew.commit[0].expires == 2800.0 + 3600
    rebind = server.handle(message(codec.REQUEST, mac(1), ciaddr=ip(ack), flags=codec.BROADCAST_FLAG), SRC, at(4000.0))
    assert rebind is not None and codec.decode(rebind.data or b"").msg_type() == codec.ACK


def test_init_reboot_on_the_wrong_network_is_naked_by_broadcast() -> None:
    server = make_server()
    reply = server.handle(message(codec.REQUEST, mac(1), options={codec.REQUESTED_IP: bytes((192, 168, 1, 5))}),
                          SRC, at(1000.0))
    assert reply is not None and reply.data is not None
    assert reply.destination == ("255.255.255.255", 68)
    nak = codec.decode(reply.data)
    assert nak.msg_type() == codec.NAK and nak.options[codec.SERVER_ID] == SERVER.packed


def test_init_reboot_for_an_address_held_by_another_client_is_naked() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    reply = server.handle(message(codec.REQUEST, mac(2), options={codec.REQUESTED_IP: ack.yiaddr}), SRC, at(1001.0))
    assert reply is not None and codec.decode(reply.data or b"").msg_type() == codec.NAK


def test_choosing_another_server_frees_the_offer() -> None:
    server = make_server()
    reply = server.handle(message(codec.DISCOVER, mac(1)), SRC, at(1000.0))
    assert reply is not None and reply.data is not None
    offered = codec.decode(reply.data).yiaddr
    other = server.handle(message(codec.REQUEST, mac(1), options={codec.SERVER_ID: bytes((10, 77, 0, 9)),
                                                                  codec.REQUESTED_IP: offered}), SRC, at(1000.5))
    assert other is None
    # All four addresses of the pool go to four other clients: the one we had offered was freed at once.
    got = {ip(dora(server, mac(n), now=1001.0)) for n in (2, 3, 4, 5)}
    assert str(IPv4Address(offered)) in got


def test_vendor_class_with_trailing_nul_and_oui_select_classes() -> None:
    server = make_server('[dhcp4.class.yealink.options]\n43 = "http://yl/"\n'
                         '[dhcp4.class.cisco]\nvendor_class_contains = ["cp-7"]\n[dhcp4.class.cisco.options]\n'
                         '150 = "hex:0a4d0001"\n'
                         '[dhcp4.class.lab]\nuser_class = ["floor3"]\n[dhcp4.class.lab.options]\n66 = "tftp://f3/"\n')
    by_vendor = dora(server, mac(1), options={codec.VENDOR_CLASS: b"Yealink\0"})
    assert by_vendor.options[43] == b"http://yl/"
    by_oui = dora(server, mac(2, "80:5e:c0"))
    assert by_oui.options[43] == b"http://yl/"
    cisco = dora(server, mac(3), options={codec.VENDOR_CLASS: b"Cisco Systems, Inc. IP Phone CP-7841\0"})
    assert cisco.options[150] == bytes((10, 77, 0, 1)) and 43 not in cisco.options
    floor = dora(server, mac(4), options={codec.USER_CLASS: b"\x06floor3"})
    assert floor.options[66] == b"tftp://f3/"


def test_encapsulated_option_43_from_a_table() -> None:
    server = make_server('[dhcp4.class.yealink.options.43]\n1 = "http://acs/"\n2 = "hex:ff"\n')
    ack = dora(server, mac(1, "00:15:65"))
    assert ack.options[43] == bytes((1, 11)) + b"http://acs/" + bytes((2, 1, 0xFF))


def test_rate_limit_drops_a_flooding_mac() -> None:
    server = make_server(base=BASE.replace("rate_limit = 1000.0", "rate_limit = 1.0").replace("rate_burst = 1000",
                                                                                                "rate_burst = 5"))
    answered = sum(1 for _ in range(50)
                   if server.handle(message(codec.DISCOVER, mac(1)), SRC, at(1000.0)) is not None)
    assert answered == 5
    assert server.stats["rate_limited"] == 45
    assert server.handle(message(codec.DISCOVER, mac(2)), SRC, at(1000.0)) is not None  # others unaffected


def test_reload_keeps_bindings() -> None:
    server = make_server()
    ack = dora(server, mac(1))
    server.configure(loads(BASE.replace('66 = "tftp://10.77.0.1/"', '66 = "tftp://new/"')).dhcp4)
    renew = server.handle(message(codec.REQUEST, mac(1), ciaddr=ip(ack)), (ip(ack), 68), at(1500.0))
    assert renew is not None and renew.data is not None
    packet = codec.decode(renew.data)
    assert packet.msg_type() == codec.ACK and packet.options[66] == b"tftp://new/"


def test_leases_from_the_store_are_respected_after_restart() -> None:
    settings = loads(BASE).dhcp4
    stored = [Lease4(IPv4Address("10.77.0.100"), mac(1), None, 5000.0),
              Lease4(IPv4Address("10.77.0.101"), mac(2), None, 5000.0, state="declined")]
    server = Dhcp4Server(settings, SERVER, NETWORK, stored)
    assert ip(dora(server, mac(1))) == "10.77.0.100"
    got = {ip(dora(server, mac(n))) for n in (3, 4)}
    assert got == {"10.77.0.102", "10.77.0.103"}
