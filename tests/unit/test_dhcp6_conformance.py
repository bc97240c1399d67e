"""DHCPv6 conformance (issue #8 items 6-8, 10, 17): how a message was addressed (RFC 8415 16, 18.4), the relay's
link-address (13.1), Release/Decline without a binding (18.3.7, 18.3.8), IA_TA and IA_PD, option 32 (21.23), bounded
IAs, configurable T1/T2."""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest

from bootstrapd.dhcp6 import codec
from bootstrapd.dhcp6.codec import Dhcp6Error, IaAddress, IaNa, IaPd, IaTa, Message, RelayMessage, StatusCode
from bootstrapd.dhcp6.server import Dhcp6Server, Outgoing
from tests.unit.clock_helpers import at
from tests.unit.test_dhcp6_server import (
    CLIENT,
    NOW,
    OTHER,
    SERVER_DUID,
    YEALINK,
    handle,
    ia,
    ias,
    msg,
    obtain,
    oro,
    server,
    status,
)

SERVED_RELAY = IPv6Address("fd77::2")  # a relay on the served link (fd77::/64)
FOREIGN_LINK = IPv6Address("2001:db8:99::1")  # a relay on a link bootstrapd has no addresses for


def status_in(ia_option: IaNa | IaTa | IaPd) -> int | None:
    return ia_option.status.code if ia_option.status is not None else None


# -- item 6: unicast (RFC 8415 16, 18.4) ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", [codec.SOLICIT, codec.CONFIRM, codec.REBIND, codec.INFORMATION_REQUEST])
def test_messages_that_must_be_multicast_are_discarded_when_sent_by_unicast(kind: int) -> None:
    srv = server()
    data = msg(kind, YEALINK, ia(1, "fd77::100"))
    if kind == codec.INFORMATION_REQUEST:
        data = msg(kind, YEALINK)
    assert srv.handle(data, CLIENT, at(NOW)) is not None or kind == codec.CONFIRM  # multicast: answered
    with pytest.raises(Dhcp6Error, match="unicast"):
        srv.handle(data, CLIENT, at(NOW), unicast=True)


@pytest.mark.parametrize("kind", [codec.REQUEST, codec.RENEW, codec.RELEASE, codec.DECLINE])
def test_unicast_request_renew_release_decline_get_use_multicast(kind: int) -> None:
    srv = server()
    address = obtain(srv)
    out = srv.handle(msg(kind, YEALINK, ia(1, str(address)), server_id=SERVER_DUID), CLIENT, at(NOW + 10),
                     unicast=True)
    assert out is not None and out.leases == []  # nothing changed, nothing to commit
    reply = codec.parse(out.data)
    assert isinstance(reply, Message) and reply.msg_type == codec.REPLY
    assert [code for code, _ in reply.options] == [codec.OPT_CLIENTID, codec.OPT_SERVERID, codec.OPT_STATUS_CODE]
    assert status(reply) == StatusCode(codec.USE_MULTICAST, "use multicast")
    assert srv.pool.binding(YEALINK + (1).to_bytes(4, "big")).state == "active"  # type: ignore[union-attr]


def test_a_unicast_message_for_another_server_is_still_dropped() -> None:
    srv = server()
    with pytest.raises(Dhcp6Error, match="another server"):
        srv.handle(msg(codec.RENEW, YEALINK, ia(1), server_id=b"\x00\x03\x00\x01" + bytes(6)), CLIENT, at(NOW),
                   unicast=True)


def test_relayed_messages_are_not_subject_to_the_unicast_rules() -> None:
    """A relay sends to the server's unicast address; the client itself multicast to the relay."""
    srv = server()
    relay = RelayMessage(codec.RELAY_FORW, 0, SERVED_RELAY, IPv6Address("fe80::9"),
                         Message(codec.SOLICIT, 5, [(codec.OPT_CLIENTID, YEALINK), ia(1)]))
    out = srv.handle(relay.encode(), "fd77::2", at(NOW), unicast=True)
    assert out is not None and out.addresses


# -- item 7: the relay's link-address (RFC 8415 13.1) ---------------------------------------------------------------

def relayed(srv: Dhcp6Server, inner: bytes, *links: IPv6Address) -> tuple[Message | None, Outgoing | None]:
    """``inner`` relayed through relays with the given link-addresses, the one closest to the client first."""
    message: Message | RelayMessage = codec.parse(inner)
    for hops, link in enumerate(links):
        message = RelayMessage(codec.RELAY_FORW, hops, link, IPv6Address("fe80::9"), message)
    out = srv.handle(message.encode(), "fd77::2", at(NOW))
    if out is None:
        return None, None
    reply = codec.parse(out.data)
    while isinstance(reply, RelayMessage):
        reply = reply.inner
    return reply, out


def test_a_relayed_client_on_a_link_we_do_not_serve_gets_no_address() -> None:
    srv = server()
    for kind in (codec.SOLICIT, codec.REQUEST):
        server_id = SERVER_DUID if kind == codec.REQUEST else None
        reply, out = relayed(srv, msg(kind, YEALINK, ia(1), server_id=server_id), FOREIGN_LINK)
        assert reply is not None and out is not None
        [given] = ias(reply)
        assert given.addresses == [] and status_in(given) == codec.NO_ADDRS_AVAIL
        assert out.leases == [] and out.unserved_link == FOREIGN_LINK
    assert not list(srv.pool.bindings())


def test_the_link_is_the_innermost_specified_link_address() -> None:
    srv = server()
    reply, _ = relayed(srv, msg(codec.SOLICIT, YEALINK, ia(1)), SERVED_RELAY)
    assert reply is not None and ias(reply)[0].addresses  # a relay on our link: served
    # The relay closest to the client leaves link-address unspecified: the next one out names the link.
    reply, _ = relayed(srv, msg(codec.SOLICIT, OTHER, ia(1)), IPv6Address("::"), FOREIGN_LINK)
    assert reply is not None and status_in(ias(reply)[0]) == codec.NO_ADDRS_AVAIL
    reply, _ = relayed(srv, msg(codec.SOLICIT, OTHER, ia(2)), FOREIGN_LINK, SERVED_RELAY)
    assert reply is not None and status_in(ias(reply)[0]) == codec.NO_ADDRS_AVAIL  # innermost wins


def test_confirm_is_judged_against_the_clients_link() -> None:
    srv = server()
    # Relayed from our link: our addresses are on link, others are not.
    reply, _ = relayed(srv, msg(codec.CONFIRM, YEALINK, ia(1, "fd77::100")), SERVED_RELAY)
    assert reply is not None and status(reply) == StatusCode(codec.SUCCESS, "all addresses on link")
    reply, _ = relayed(srv, msg(codec.CONFIRM, YEALINK, ia(1, "2001:db8:99::5")), SERVED_RELAY)
    assert reply is not None and status(reply).code == codec.NOT_ON_LINK  # type: ignore[union-attr]
    # From a link we know nothing about we cannot judge: RFC 8415 18.3.3 says no reply at all (it used to say
    # NotOnLink for the link's own addresses and Success for ours).
    assert relayed(srv, msg(codec.CONFIRM, YEALINK, ia(1, "2001:db8:99::5")), FOREIGN_LINK) == (None, None)
    assert relayed(srv, msg(codec.CONFIRM, YEALINK, ia(1, "fd77::100")), FOREIGN_LINK) == (None, None)


def test_renew_from_a_link_we_do_not_serve_zeroes_our_addresses() -> None:
    srv = server()
    address = obtain(srv)
    reply, out = relayed(srv, msg(codec.RENEW, YEALINK, ia(1, str(address)), server_id=SERVER_DUID), FOREIGN_LINK)
    assert reply is not None and out is not None and out.leases == []
    [renewed] = ias(reply)
    assert [(a.address, a.preferred, a.valid) for a in renewed.addresses] == [(address, 0, 0)]
    reply, _ = relayed(srv, msg(codec.REBIND, YEALINK, ia(1, "2001:db8:99::7")), FOREIGN_LINK)
    assert reply is not None and status_in(ias(reply)[0]) == codec.NO_BINDING  # that link's own address


# -- item 8: Release/Decline without a binding, IA_TA, IA_PD, option 32 ---------------------------------------------

@pytest.mark.parametrize("kind", [codec.RELEASE, codec.DECLINE])
def test_release_or_decline_of_an_address_only_advertised_is_nobinding_inside_the_ia(kind: int) -> None:
    srv = server()
    advertise, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)))
    offered = ias(advertise)[0].addresses[0].address
    reply, out = handle(srv, msg(kind, YEALINK, ia(1, str(offered)), server_id=SERVER_DUID))
    assert status(reply) is not None and status(reply).code == codec.SUCCESS  # type: ignore[union-attr]
    [answer] = ias(reply)
    assert answer.iaid == 1 and status_in(answer) == codec.NO_BINDING and answer.addresses == []
    assert out.leases == []


@pytest.mark.parametrize("kind", [codec.RELEASE, codec.DECLINE])
def test_release_or_decline_of_an_address_the_ia_does_not_hold_is_nobinding(kind: int) -> None:
    srv = server()
    obtain(srv)
    reply, out = handle(srv, msg(kind, YEALINK, ia(1, "fd77::1ff"), server_id=SERVER_DUID))
    assert [status_in(x) for x in ias(reply)] == [codec.NO_BINDING] and out.leases == []
    # The IA's real address is released (no IA in the reply for it).
    held = obtain(srv, now=NOW + 1)
    reply, out = handle(srv, msg(kind, YEALINK, ia(1, str(held)), server_id=SERVER_DUID))
    assert ias(reply) == [] and [lease.address for lease in out.leases] == [held]


def ta(iaid: int) -> codec.Option:
    return (codec.OPT_IA_TA, IaTa(iaid).encode())


def pd(iaid: int) -> codec.Option:
    return (codec.OPT_IA_PD, IaPd(iaid).encode())


def test_ia_ta_and_ia_pd_get_their_status_instead_of_silence() -> None:
    srv = server()
    advertise, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1), ta(2), pd(3)))
    [na] = ias(advertise)
    assert na.addresses  # the IA_NA is served as before
    [ta_answer] = [IaTa.decode(v) for c, v in advertise.options if c == codec.OPT_IA_TA]
    [pd_answer] = [IaPd.decode(v) for c, v in advertise.options if c == codec.OPT_IA_PD]
    assert ta_answer.iaid == 2 and status_in(ta_answer) == codec.NO_ADDRS_AVAIL
    assert pd_answer.iaid == 3 and status_in(pd_answer) == codec.NO_PREFIX_AVAIL
    reply, _ = handle(srv, msg(codec.RENEW, YEALINK, ta(2), pd(3), server_id=SERVER_DUID))
    assert [status_in(IaTa.decode(v)) for c, v in reply.options if c == codec.OPT_IA_TA] == [codec.NO_BINDING]
    assert [status_in(IaPd.decode(v)) for c, v in reply.options if c == codec.OPT_IA_PD] == [
        codec.NO_BINDING]


def test_information_request_replies_carry_a_configurable_refresh_time() -> None:
    reply, _ = handle(server(), msg(codec.INFORMATION_REQUEST, YEALINK, oro(59)))
    assert reply.get(codec.OPT_INFORMATION_REFRESH_TIME) == (3600).to_bytes(4, "big")
    reply, _ = handle(server("information_refresh_time = 900"), msg(codec.INFORMATION_REQUEST, YEALINK))
    assert reply.get(codec.OPT_INFORMATION_REFRESH_TIME) == (900).to_bytes(4, "big")
    # Only there (RFC 8415 21.23): not in an Advertise or a stateful Reply.
    advertise, _ = handle(server(), msg(codec.SOLICIT, YEALINK, ia(1)))
    assert advertise.get(codec.OPT_INFORMATION_REFRESH_TIME) is None


def test_information_refresh_time_has_the_rfc_minimum() -> None:
    from bootstrapd.config import ConfigError

    with pytest.raises(ConfigError) as info:
        server("information_refresh_time = 60")
    assert info.value.key == "dhcp6.information_refresh_time" and "at least 600" in info.value.message


# -- items 10 and 17 ---------------------------------------------------------------------------------------------------

def test_an_ia_with_too_many_addresses_is_dropped() -> None:
    addresses = [IaAddress(IPv6Address(f"fd77::{n:x}"), 0, 0) for n in range(1, 10)]
    data = msg(codec.RENEW, YEALINK, (codec.OPT_IA_NA, IaNa(1, 0, 0, addresses).encode()), server_id=SERVER_DUID)
    with pytest.raises(Dhcp6Error, match="more than 8 addresses"):
        server().handle(data, CLIENT, at(NOW))


def test_t1_and_t2_are_configurable() -> None:
    srv = server("preferred_lifetime = 3000\nrenew_time = 1000\nrebind_time = 2000")
    advertise, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)))
    [given] = ias(advertise)
    assert (given.t1, given.t2) == (1000, 2000)
    assert given.addresses[0].preferred == 3000
    defaults = ias(handle(server("preferred_lifetime = 3000"), msg(codec.SOLICIT, YEALINK, ia(1)))[0])[0]
    assert (defaults.t1, defaults.t2) == (1500, 2400)
