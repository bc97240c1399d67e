"""The DHCPv6 server core with injected time: every message type, validation drops, relays, options, classes."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network

import pytest

from bootstrapd import config
from bootstrapd.dhcp6 import codec
from bootstrapd.dhcp6.codec import Dhcp6Error, IaAddress, IaNa, Message, RelayMessage, StatusCode
from bootstrapd.dhcp6.server import Dhcp6Server, Outgoing
from bootstrapd.dhcp6.settings import Dhcp6Settings
from bootstrapd.leases.store import ACTIVE, DECLINED, RELEASED, Lease6
from tests.unit.clock_helpers import at

SERVER_DUID = b"\x00\x01\x00\x01\x00\x00\x00\x01\x02\x77\x00\x00\x00\x01"
OTHER_SERVER = b"\x00\x01\x00\x01\x00\x00\x00\x01\x02\x99\x00\x00\x00\x01"
YEALINK = b"\x00\x03\x00\x01\x00\x15\x65\x01\x02\x03"  # DUID-LL with a Yealink OUI
OTHER = b"\x00\x03\x00\x01\x02\x00\x00\x00\x00\x09"
NOW = 1_000_000.0
CLIENT = "fe80::215:65ff:fe01:203"


def full_settings(body: str = "") -> config.Settings:
    """A configuration with DHCPv6 on (and DHCPv4 off); ``body`` adds [dhcp6] keys."""
    return config.loads(f"""
[server]
interface = "eth1"
[dhcp4]
enabled = false
[dhcp6]
enabled = true
{body}
""")


def settings(body: str = "") -> Dhcp6Settings:
    return full_settings(body).dhcp6


def server(body: str = "", leases: list[Lease6] | None = None) -> Dhcp6Server:
    return Dhcp6Server(settings(body), SERVER_DUID, leases or [], variables={"ipv6": "fd77::1"},
                       link_prefixes=[IPv6Network("fd77::/64")])


def msg(kind: int, duid: bytes | None = YEALINK, *options: codec.Option, server_id: bytes | None = None,
        xid: int = 0x123456) -> bytes:
    opts: list[codec.Option] = []
    if duid is not None:
        opts.append((codec.OPT_CLIENTID, duid))
    if server_id is not None:
        opts.append((codec.OPT_SERVERID, server_id))
    opts.extend(options)
    return Message(kind, xid, opts).encode()


def ia(iaid: int = 1, *addresses: str) -> codec.Option:
    return (codec.OPT_IA_NA, IaNa(iaid, 0, 0, [IaAddress(IPv6Address(a), 0, 0) for a in addresses]).encode())


def oro(*codes: int) -> codec.Option:
    return (codec.OPT_ORO, codec.encode_oro(list(codes)))


def handle(srv: Dhcp6Server, data: bytes, now: float = NOW, source: str = CLIENT) -> tuple[Message, Outgoing]:
    out = srv.handle(data, source, at(now))
    assert out is not None
    parsed = codec.parse(out.data)
    assert isinstance(parsed, Message)
    return parsed, out


def ias(reply: Message) -> list[IaNa]:
    return [IaNa.decode(v) for c, v in reply.options if c == codec.OPT_IA_NA]


def status(reply: Message) -> StatusCode | None:
    raw = reply.get(codec.OPT_STATUS_CODE)
    return StatusCode.decode(raw) if raw is not None else None


def obtain(srv: Dhcp6Server, duid: bytes = YEALINK, iaid: int = 1, now: float = NOW) -> IPv6Address:
    advertise, out = handle(srv, msg(codec.SOLICIT, duid, ia(iaid)), now)
    assert advertise.msg_type == codec.ADVERTISE and out.leases == []
    offered = ias(advertise)[0].addresses[0].address
    reply, out = handle(srv, msg(codec.REQUEST, duid, ia(iaid, str(offered)), server_id=SERVER_DUID), now)
    assert reply.msg_type == codec.REPLY
    assert [lease.address for lease in out.leases] == [offered]
    return offered


def test_solicit_advertise_request_reply() -> None:
    srv = server()
    advertise, out = handle(srv, msg(codec.SOLICIT, YEALINK, ia(7)))
    assert advertise.msg_type == codec.ADVERTISE
    assert advertise.transaction_id == 0x123456
    assert advertise.get(codec.OPT_CLIENTID) == YEALINK
    assert advertise.get(codec.OPT_SERVERID) == SERVER_DUID
    [adv_ia] = ias(advertise)
    assert adv_ia.iaid == 7 and adv_ia.t1 == 1800 and adv_ia.t2 == 2880
    assert adv_ia.addresses[0].address == IPv6Address("fd77::100")
    assert (adv_ia.addresses[0].preferred, adv_ia.addresses[0].valid) == (3600, 7200)
    assert out.destination == (CLIENT, 546) and out.leases == [] and out.kind == "advertise"

    reply, out = handle(srv, msg(codec.REQUEST, YEALINK, ia(7, "fd77::100"), server_id=SERVER_DUID), NOW + 1)
    assert reply.msg_type == codec.REPLY
    assert ias(reply)[0].addresses[0].address == IPv6Address("fd77::100")
    [lease] = out.leases
    assert (lease.address, lease.duid, lease.iaid, lease.state) == (IPv6Address("fd77::100"), YEALINK, 7, ACTIVE)
    assert lease.expires == NOW + 1 + 7200
    assert lease.mac == b"\x00\x15\x65\x01\x02\x03"  # derived from the DUID-LL
    assert out.mac == lease.mac and out.request == "request"


def test_two_clients_never_get_the_same_address() -> None:
    srv = server()
    first, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)))
    second, _ = handle(srv, msg(codec.SOLICIT, OTHER, ia(1)))
    assert ias(first)[0].addresses[0].address != ias(second)[0].addresses[0].address
    # The same client soliciting again is offered the same address.
    again, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)))
    assert ias(again)[0].addresses[0].address == ias(first)[0].addresses[0].address


def test_no_addrs_avail_inside_the_ia_with_same_t1_t2() -> None:
    srv = server('range = "fd77::100-fd77::100"')
    obtain(srv, YEALINK)
    advertise, _ = handle(srv, msg(codec.SOLICIT, OTHER, ia(1), ia(2)))
    both = ias(advertise)
    assert [x.status.code if x.status else None for x in both] == [codec.NO_ADDRS_AVAIL] * 2
    assert all(not x.addresses for x in both)
    assert status(advertise) is None  # not at the top level
    assert len({(x.t1, x.t2) for x in both}) == 1


def test_same_t1_t2_across_ias() -> None:
    srv = server("preferred_lifetime = 1000\nvalid_lifetime = 2000")
    advertise, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1), ia(2)))
    pairs = {(x.t1, x.t2) for x in ias(advertise)}
    assert pairs == {(500, 800)}
    assert len({x.addresses[0].address for x in ias(advertise)}) == 2


def test_rapid_commit_only_when_configured() -> None:
    rapid = (codec.OPT_RAPID_COMMIT, b"")
    advertise, out = handle(server(), msg(codec.SOLICIT, YEALINK, ia(1), rapid))
    assert advertise.msg_type == codec.ADVERTISE and out.leases == []
    assert advertise.get(codec.OPT_RAPID_COMMIT) is None

    reply, out = handle(server("rapid_commit = true"), msg(codec.SOLICIT, YEALINK, ia(1), rapid))
    assert reply.msg_type == codec.REPLY
    assert reply.get(codec.OPT_RAPID_COMMIT) == b""
    assert [lease.state for lease in out.leases] == [ACTIVE]  # the adapter commits before sending
    # Without the client's Rapid Commit option, even a rapid-commit server advertises.
    advertise, _ = handle(server("rapid_commit = true"), msg(codec.SOLICIT, OTHER, ia(1)))
    assert advertise.msg_type == codec.ADVERTISE


@pytest.mark.parametrize("data, reason", [
    (msg(codec.SOLICIT, YEALINK, ia(1), server_id=SERVER_DUID), "solicit carrying a server ID"),
    (msg(codec.REQUEST, YEALINK, ia(1), server_id=OTHER_SERVER), "request for another server"),
    (msg(codec.REQUEST, YEALINK, ia(1)), "request without a server ID"),
    (msg(codec.RENEW, YEALINK, ia(1, "fd77::100"), server_id=OTHER_SERVER), "renew for another server"),
    (msg(codec.RELEASE, YEALINK, ia(1, "fd77::100"), server_id=OTHER_SERVER), "release for another server"),
    (msg(codec.DECLINE, YEALINK, ia(1, "fd77::100"), server_id=OTHER_SERVER), "decline for another server"),
    (msg(codec.REBIND, YEALINK, ia(1, "fd77::100"), server_id=SERVER_DUID), "rebind carrying a server ID"),
    (msg(codec.CONFIRM, YEALINK, ia(1, "fd77::100"), server_id=SERVER_DUID), "confirm carrying a server ID"),
    (msg(codec.INFORMATION_REQUEST, YEALINK, ia(1)), "information-request carrying an IA"),
    (msg(codec.INFORMATION_REQUEST, None, server_id=OTHER_SERVER), "information-request for another server"),
    (msg(codec.SOLICIT, None, ia(1)), "solicit without a client ID"),
    (msg(codec.REPLY, YEALINK), "reply is not a client message"),
    (msg(codec.ADVERTISE, YEALINK), "advertise is not a client message"),
])
def test_validation_drops(data: bytes, reason: str) -> None:
    with pytest.raises(Dhcp6Error, match=reason):
        server().handle(data, CLIENT, at(NOW))


def test_renew_and_rebind_keep_the_address() -> None:
    srv = server()
    address = obtain(srv)
    reply, out = handle(srv, msg(codec.RENEW, YEALINK, ia(1, str(address)), server_id=SERVER_DUID), NOW + 1800)
    assert ias(reply)[0].addresses[0].address == address
    assert out.leases[0].expires == NOW + 1800 + 7200
    reply, out = handle(srv, msg(codec.REBIND, YEALINK, ia(1, str(address))), NOW + 2900)
    assert ias(reply)[0].addresses[0].address == address
    assert out.leases[0].state == ACTIVE


def test_renew_without_binding() -> None:
    srv = server()
    # A free address in the range is taken back (e.g. leases lost); one held by another client is not.
    reply, out = handle(srv, msg(codec.RENEW, YEALINK, ia(1, "fd77::150"), server_id=SERVER_DUID))
    assert ias(reply)[0].addresses[0].address == IPv6Address("fd77::150") and out.leases
    taken = obtain(srv, OTHER)
    reply, out = handle(srv, msg(codec.RENEW, YEALINK, ia(2, str(taken)), server_id=SERVER_DUID))
    assert ias(reply)[0].status == StatusCode(codec.NO_BINDING, "no binding") and not out.leases
    reply, _ = handle(srv, msg(codec.REBIND, YEALINK, ia(2, str(taken))))
    assert [(a.address, a.valid) for a in ias(reply)[0].addresses] == [(taken, 0)]
    reply, _ = handle(srv, msg(codec.REBIND, YEALINK, ia(3, "2001:db8::1")))
    assert [(a.address, a.preferred, a.valid) for a in ias(reply)[0].addresses] == [
        (IPv6Address("2001:db8::1"), 0, 0)]


def test_returning_client_keeps_its_address_after_release() -> None:
    srv = server()
    first = obtain(srv, YEALINK)
    second = obtain(srv, OTHER)
    assert first != second
    reply, out = handle(srv, msg(codec.RELEASE, YEALINK, ia(1, str(first)), server_id=SERVER_DUID), NOW + 5)
    assert reply.msg_type == codec.REPLY and status(reply) == StatusCode(codec.SUCCESS, "release received")
    assert [(lease.address, lease.state) for lease in out.leases] == [(first, RELEASED)]
    assert first not in [lease.address for lease in srv.leases(NOW + 6)]
    assert obtain(srv, YEALINK, now=NOW + 10) == first


def test_release_frees_for_others() -> None:
    srv = server('range = "fd77::100-fd77::100"')
    address = obtain(srv, YEALINK)
    handle(srv, msg(codec.RELEASE, YEALINK, ia(1, str(address)), server_id=SERVER_DUID))
    assert obtain(srv, OTHER, now=NOW + 1) == address


def test_release_of_unknown_binding() -> None:
    reply, out = handle(server(), msg(codec.RELEASE, YEALINK, ia(1, "fd77::123"), server_id=SERVER_DUID))
    assert status(reply) == StatusCode(codec.SUCCESS, "release received")
    assert ias(reply)[0].status == StatusCode(codec.NO_BINDING, "no binding")
    assert out.leases == []


def test_decline_quarantines_the_address() -> None:
    srv = server('range = "fd77::100-fd77::101"\ndecline_time = 600')
    address = obtain(srv, YEALINK)
    reply, out = handle(srv, msg(codec.DECLINE, YEALINK, ia(1, str(address)), server_id=SERVER_DUID), NOW + 1)
    assert status(reply) is not None and status(reply).code == codec.SUCCESS  # type: ignore[union-attr]
    assert [(lease.address, lease.state, lease.expires) for lease in out.leases] == [(address, DECLINED, NOW + 601)]
    # The decliner and everyone else get the other address; after the quarantine it comes back.
    assert obtain(srv, YEALINK, now=NOW + 2) != address
    advertise, _ = handle(srv, msg(codec.SOLICIT, OTHER, ia(1)), NOW + 3)
    assert ias(advertise)[0].status is not None  # pool of two: one declined, one taken
    advertise, _ = handle(srv, msg(codec.SOLICIT, OTHER, ia(1)), NOW + 700)
    assert ias(advertise)[0].addresses[0].address == address


def test_confirm() -> None:
    srv = server()
    reply, out = handle(srv, msg(codec.CONFIRM, YEALINK, ia(1, "fd77::100")))
    assert status(reply) == StatusCode(codec.SUCCESS, "all addresses on link") and out.leases == []
    assert ias(reply) == []
    reply, _ = handle(srv, msg(codec.CONFIRM, YEALINK, ia(1, "2001:db8::5")))
    assert status(reply) is not None and status(reply).code == codec.NOT_ON_LINK  # type: ignore[union-attr]
    assert srv.handle(msg(codec.CONFIRM, YEALINK, ia(1)), CLIENT, at(NOW)) is None  # nothing to confirm: silence


def test_information_request_is_stateless() -> None:
    srv = server('dns = ["fd77::1"]\ndomain = ["lab.example"]')
    reply, out = handle(srv, msg(codec.INFORMATION_REQUEST, YEALINK, oro(59, 23)))
    assert reply.msg_type == codec.REPLY and ias(reply) == [] and out.leases == []
    assert reply.get(codec.OPT_BOOTFILE_URL) == b"tftp://[fd77::1]/"
    assert codec.decode_addresses(reply.get(codec.OPT_DNS_SERVERS) or b"") == [IPv6Address("fd77::1")]
    assert codec.decode_domains(reply.get(codec.OPT_DOMAIN_LIST) or b"") == ["lab.example"]
    # Without a client ID too, and with our own server ID.
    reply, _ = handle(srv, msg(codec.INFORMATION_REQUEST, None, oro(59), server_id=SERVER_DUID))
    assert reply.get(codec.OPT_CLIENTID) is None and reply.get(codec.OPT_SERVERID) == SERVER_DUID


def test_bootfile_url_when_requested_or_forced() -> None:
    srv = server('bootfile_url = "tftp://[{ipv6}]/phones/"')
    advertise, _ = handle(srv, msg(codec.SOLICIT, OTHER, ia(1)))
    assert advertise.get(codec.OPT_BOOTFILE_URL) is None
    advertise, out = handle(srv, msg(codec.SOLICIT, OTHER, ia(1), oro(23, 59)))
    assert advertise.get(codec.OPT_BOOTFILE_URL) == b"tftp://[fd77::1]/phones/"
    assert codec.OPT_BOOTFILE_URL in out.options
    forced = server('bootfile_url = "http://[{ipv6}]:8080/$MAC.cfg"\nforce_bootfile_url = true')
    advertise, _ = handle(forced, msg(codec.SOLICIT, OTHER, ia(1)))
    assert advertise.get(codec.OPT_BOOTFILE_URL) == b"http://[fd77::1]:8080/$MAC.cfg"


def test_class_options_by_oui_and_vendor_class() -> None:
    body = """
[dhcp6.options]
300 = "everyone"
[dhcp6.vendor_options.4491]
1 = "global"
[dhcp6.class.yealink]
bootfile_url = "tftp://[{ipv6}]/yealink/"
options = { 300 = "yealink", 301 = "hex:0102" }
[dhcp6.class.panasonic]
vendor_class = ["panasonic"]
vendor_options = { 4491 = { 1 = "http://prov/" } }
"""
    srv = server(body)
    # Yealink by the OUI inside its DUID-LL.
    advertise, out = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1), oro(59)))
    assert out.classes == ("yealink",)
    assert advertise.get(300) == b"yealink" and advertise.get(301) == b"\x01\x02"
    assert advertise.get(codec.OPT_BOOTFILE_URL) == b"tftp://[fd77::1]/yealink/"
    assert codec.decode_vendor_opts(advertise.get(codec.OPT_VENDOR_OPTS) or b"") == (4491, [(1, b"global")])
    # Panasonic by vendor class (option 16), and Yealink's by the vendor class alone (DUID-EN, no MAC).
    vc = (codec.OPT_VENDOR_CLASS, codec.encode_vendor_class(1234, [b"Panasonic KX-HDV130"]))
    duid_en = b"\x00\x02\x00\x00\x09\x99serial"
    advertise, out = handle(srv, msg(codec.SOLICIT, duid_en, ia(1), vc, oro(59)))
    assert out.classes == ("panasonic",)
    assert advertise.get(300) == b"everyone"
    assert advertise.get(codec.OPT_BOOTFILE_URL) == b"tftp://[fd77::1]/"
    assert codec.decode_vendor_opts(advertise.get(codec.OPT_VENDOR_OPTS) or b"") == (4491, [(1, b"http://prov/")])
    vc = (codec.OPT_VENDOR_CLASS, codec.encode_vendor_class(0, [b"Yealink SIP-T46U"]))
    _, out = handle(srv, msg(codec.SOLICIT, b"\x00\x02\x00\x00\x09\x99other", ia(1), vc))
    assert out.classes == ("yealink",)


def test_relay_reply_copies_interface_id_and_goes_to_the_relay() -> None:
    srv = server()
    duid_en = b"\x00\x02\x00\x00\x09\x99relayed"
    client = Message(codec.SOLICIT, 42, [(codec.OPT_CLIENTID, duid_en), ia(1), oro(59)])
    relay1 = RelayMessage(codec.RELAY_FORW, 0, IPv6Address("fd77::2"), IPv6Address("fe80::9"), client,
                          [(codec.OPT_INTERFACE_ID, b"port7"),
                           (codec.OPT_CLIENT_LINKLAYER_ADDR, b"\x00\x01\x00\x15\x65\xaa\xbb\xcc")])
    relay2 = RelayMessage(codec.RELAY_FORW, 1, IPv6Address("::"), IPv6Address("fd77::2"), relay1,
                          [(codec.OPT_INTERFACE_ID, b"uplink"), (37, b"remote-id")])
    out = srv.handle(relay2.encode(), "fd77::3", at(NOW))
    assert out is not None
    assert out.destination == ("fd77::3", 547)
    outer = codec.parse(out.data)
    assert isinstance(outer, RelayMessage) and outer.msg_type == codec.RELAY_REPL
    assert (outer.hop_count, outer.link_address, outer.peer_address) == (1, IPv6Address("::"), IPv6Address("fd77::2"))
    assert outer.options == [(codec.OPT_INTERFACE_ID, b"uplink")]
    inner = outer.inner
    assert isinstance(inner, RelayMessage) and inner.msg_type == codec.RELAY_REPL
    assert inner.options == [(codec.OPT_INTERFACE_ID, b"port7")]
    assert inner.peer_address == IPv6Address("fe80::9")
    advertise = inner.inner
    assert isinstance(advertise, Message) and advertise.msg_type == codec.ADVERTISE
    assert advertise.transaction_id == 42 and advertise.get(codec.OPT_BOOTFILE_URL) == b"tftp://[fd77::1]/"
    # The MAC from the relay's option 79 puts the DUID-less client into the yealink class and onto its lease.
    assert out.mac == b"\x00\x15\x65\xaa\xbb\xcc" and out.classes == ("yealink",)
    request = Message(codec.REQUEST, 43, [(codec.OPT_CLIENTID, duid_en), (codec.OPT_SERVERID, SERVER_DUID), ia(1)])
    relay1.inner = request
    out = srv.handle(relay2.encode(), "fd77::3", at(NOW))
    assert out is not None and out.leases[0].mac == b"\x00\x15\x65\xaa\xbb\xcc"


def test_relay_reply_to_a_relay_is_dropped() -> None:
    reply = RelayMessage(codec.RELAY_REPL, 0, IPv6Address("::"), IPv6Address("::"),
                         Message(codec.REPLY, 1, [(codec.OPT_CLIENTID, OTHER)]), [])
    with pytest.raises(Dhcp6Error):
        server().handle(reply.encode(), "fd77::3", at(NOW))


def test_leases_restored_from_the_store() -> None:
    stored = [Lease6(IPv6Address("fd77::150"), YEALINK, 1, NOW + 100, ACTIVE, b"\x00\x15\x65\x01\x02\x03"),
              Lease6(IPv6Address("fd77::100"), OTHER, 9, NOW + 100, DECLINED)]
    srv = server(leases=stored)
    advertise, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)))
    assert ias(advertise)[0].addresses[0].address == IPv6Address("fd77::150")
    advertise, _ = handle(srv, msg(codec.SOLICIT, OTHER, ia(1)))
    assert ias(advertise)[0].addresses[0].address == IPv6Address("fd77::101")  # ::100 is declined, ::150 taken


def test_rate_limit_per_client() -> None:
    srv = server("rate_limit = 1\nrate_burst = 2")
    handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)))
    handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)))
    with pytest.raises(Dhcp6Error, match="rate limited"):
        srv.handle(msg(codec.SOLICIT, YEALINK, ia(1)), CLIENT, at(NOW))
    handle(srv, msg(codec.SOLICIT, OTHER, ia(1)))  # another client is not affected
    handle(srv, msg(codec.SOLICIT, YEALINK, ia(1)), NOW + 1.5)  # refilled


def test_reconfigure_keeps_leases() -> None:
    srv = server()
    address = obtain(srv)
    srv.reconfigure(settings('bootfile_url = "tftp://new/"'))
    advertise, _ = handle(srv, msg(codec.SOLICIT, YEALINK, ia(1), oro(59)), NOW + 1)
    assert ias(advertise)[0].addresses[0].address == address
    assert advertise.get(codec.OPT_BOOTFILE_URL) == b"tftp://new/"


def test_settings_errors_name_the_key() -> None:
    for body, key in [('range = "fd77::1ff-fd77::100"', "dhcp6.range"),
                      ("[dhcp6.options]\n59 = \"x\"", "dhcp6.options.59"),
                      ("valid_lifetime = 100\npreferred_lifetime = 200", "dhcp6.valid_lifetime"),
                      ('dns = ["10.0.0.1"]', "dhcp6.dns"),
                      ("bogus = 1", "dhcp6.bogus"),
                      ("[dhcp6.vendor_options]\n4491 = \"x\"", "dhcp6.vendor_options.4491")]:
        with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
            settings(body)


def test_rebind_of_an_on_link_address_we_do_not_manage_is_not_revoked() -> None:
    # RFC 8415 18.3.5: no binding but the address is appropriate for the link (another server's pool on the same
    # link, e.g. during a migration): NoBinding, never lifetimes 0 that would make the phone drop a working address.
    srv = server()
    reply, out = handle(srv, msg(codec.REBIND, YEALINK, ia(4, "fd77::5")))
    answer = ias(reply)[0]
    assert answer.status is not None and answer.status.code == codec.NO_BINDING and not answer.addresses
    assert not out.leases
