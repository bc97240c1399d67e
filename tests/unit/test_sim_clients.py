"""The simulated phone's protocol clients against the project's own server cores, with injected time: DHCPv4
(DISCOVER to ACK, retransmission, give-up, NAK), SIP PnP (SUBSCRIBE, NOTIFY answered, retransmissions, give-up) and
TFTP (the guide's blksize 1432 lock-step, lost packets retried, timeout, ERROR, a stranger's datagram)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

from bootstrapd.clock import Now
from bootstrapd.dhcp4 import codec as dhcp
from bootstrapd.pnp.message import parse
from bootstrapd.pnp.responder import Responder
from bootstrapd.pnp.settings import PnpSettings
from bootstrapd.sim import result as results
from bootstrapd.sim.dhcp4 import PARAMETER_REQUEST, Dhcp4Client
from bootstrapd.sim.pnp import GROUP, PnpClient
from bootstrapd.sim.tftp import BLKSIZE, TftpGet, TftpPut
from bootstrapd.tftp import codec as tftp
from bootstrapd.tftp.transfer import Limits, ReadTransfer, negotiate
from tests.unit.dhcp4_helpers import make_server
from tests.unit.test_tftp_transfer import Mem

MAC = bytes.fromhex("001565aabbcc")


def client(**kw: object) -> Dhcp4Client:
    return Dhcp4Client(MAC, random.Random(7), hostname="SIP-T46U", **kw)  # type: ignore[arg-type]


# -- DHCPv4 -----------------------------------------------------------------------------------------------------------

def test_dhcp_discover_is_a_yealink_s_and_reaches_an_ack_from_the_real_server_core() -> None:
    server = make_server()
    phone = client(custom_option=160)
    [discover] = phone.start(0.0)
    sent = dhcp.decode(discover)
    assert sent.msg_type() == dhcp.DISCOVER and sent.mac == MAC and sent.xid == phone.xid
    assert sent.vendor_class() == b"yealink" and sent.client_id() == b"\x01" + MAC
    assert list(sent.param_list()) == [*PARAMETER_REQUEST, 160]
    offer = server.handle(discover, ("0.0.0.0", 68), Now(0.1, 0.1))
    assert offer is not None and offer.data is not None
    [request] = phone.receive(offer.data, 0.1)
    assert phone.state == "requesting"
    req = dhcp.decode(request)
    assert req.msg_type() == dhcp.REQUEST and req.requested_ip() == IPv4Address(dhcp.decode(offer.data).yiaddr)
    ack = server.handle(request, ("0.0.0.0", 68), Now(0.2, 0.2))
    assert ack is not None and ack.data is not None
    assert phone.receive(ack.data, 0.2) == []
    assert phone.state == "bound" and phone.lease is not None and phone.deadline is None
    assert str(phone.lease.interface) == f"{phone.lease.address}/24"
    assert phone.lease.options[66] == b"tftp://10.77.0.1/" and phone.lease.server == IPv4Address("10.77.0.1")


def test_dhcp_retransmits_on_rfc2131_backoff_and_gives_up_with_the_reason() -> None:
    phone = client(tries=4)
    first = phone.start(0.0)
    deadlines = []
    now = 0.0
    while phone.state == "selecting":
        assert phone.deadline is not None
        deadlines.append(phone.deadline - now)
        assert phone.on_timer(phone.deadline - 0.01) == []  # nothing before the deadline
        now = phone.deadline
        again = phone.on_timer(now)
        if phone.state == "selecting":
            assert again == first  # the same DISCOVER again (same xid)
    # 4 s, 8 s, 16 s, 32 s, each within +-1 s.
    assert len(deadlines) == 4
    assert all(abs(d - 4 * 2 ** i) <= 1.0 for i, d in enumerate(deadlines))
    assert phone.state == "failed" and phone.failure == "no OFFER after 4 DISCOVERs"
    assert phone.retransmissions == 3 and phone.sent == 4


def test_a_lost_offer_is_retried_not_fatal() -> None:
    server = make_server()
    phone = client()
    phone.start(0.0)
    assert phone.deadline is not None
    t = phone.deadline
    [again] = phone.on_timer(t)  # the OFFER was lost: DISCOVER again
    offer = server.handle(again, ("0.0.0.0", 68), Now(t, t))
    assert offer is not None and offer.data is not None
    [request] = phone.receive(offer.data, t + 0.1)
    ack = server.handle(request, ("0.0.0.0", 68), Now(t + 0.2, t + 0.2))
    assert ack is not None and ack.data is not None
    phone.receive(ack.data, t + 0.2)
    assert phone.state == "bound" and phone.retransmissions == 1


def test_replies_for_another_phone_or_garbage_are_ignored() -> None:
    server = make_server()
    phone = client()
    [_discover] = phone.start(0.0)
    other = client()
    other.mac = bytes.fromhex("001565000001")
    [theirs] = other.start(0.0)
    reply = server.handle(theirs, ("0.0.0.0", 68), Now(0.1, 0.1))
    assert reply is not None and reply.data is not None
    assert phone.receive(reply.data, 0.1) == [] and phone.state == "selecting"
    assert phone.receive(b"\x02garbage", 0.1) == []


def test_a_nak_starts_over_from_discover_after_a_pause() -> None:
    server = make_server()
    phone = client()
    [discover] = phone.start(0.0)
    offer = server.handle(discover, ("0.0.0.0", 68), Now(0.1, 0.1))
    assert offer is not None and offer.data is not None
    phone.receive(offer.data, 0.1)
    offered = dhcp.decode(offer.data)
    nak = dhcp.Packet(op=dhcp.BOOTREPLY, xid=phone.xid, chaddr=MAC,
                      options={dhcp.MESSAGE_TYPE: bytes((dhcp.NAK,)),
                               dhcp.SERVER_ID: offered.options[dhcp.SERVER_ID]})
    assert phone.receive(dhcp.encode(nak), 0.2) == [] and phone.state == "init" and phone.naks == 1
    assert phone.deadline is not None and 3.2 <= phone.deadline <= 4.2  # a pause before starting over
    assert phone.on_timer(phone.deadline - 0.01) == []
    [again] = phone.on_timer(phone.deadline)
    assert dhcp.decode(again).msg_type() == dhcp.DISCOVER and phone.state == "selecting"


def test_no_ack_goes_back_to_init_once_then_gives_up() -> None:
    server = make_server()
    phone = client(tries=2)
    [discover] = phone.start(0.0)
    offer = server.handle(discover, ("0.0.0.0", 68), Now(0.1, 0.1))
    assert offer is not None and offer.data is not None
    kinds = [dhcp.decode(d).msg_type() for d in phone.receive(offer.data, 0.1)]
    while phone.state not in ("failed", "bound"):  # every ACK is lost
        assert phone.deadline is not None
        now = phone.deadline
        for datagram in phone.on_timer(now):
            kinds.append(dhcp.decode(datagram).msg_type())
            if kinds[-1] == dhcp.DISCOVER:
                again = server.handle(datagram, ("0.0.0.0", 68), Now(now, now))
                assert again is not None and again.data is not None
                kinds += [dhcp.decode(d).msg_type() for d in phone.receive(again.data, now)]
    assert kinds == [dhcp.REQUEST, dhcp.REQUEST, dhcp.DISCOVER, dhcp.REQUEST, dhcp.REQUEST]
    assert phone.state == "failed" and phone.failure == "no ACK after 2 REQUESTs"


def bind(server: object, phone: Dhcp4Client, now: float) -> None:
    """Run the phone's exchange against the server core until it is bound."""
    pending = phone.start(now)
    while phone.state != "bound":
        assert pending, phone.state
        reply = server.handle(pending[0], ("0.0.0.0", 68), Now(now, now))  # type: ignore[attr-defined]
        assert reply is not None and reply.data is not None
        pending = phone.receive(reply.data, now)


def test_init_reboot_asks_for_the_last_address_and_is_bound_by_the_ack() -> None:
    server = make_server()
    first = client()
    bind(server, first, 0.0)
    assert first.lease is not None and first.init_reboot == ""
    again = client(previous=first.lease.address)
    [request] = again.start(100.0)
    sent = dhcp.decode(request)
    # RFC 2131 4.4.2 / table 5: REQUEST, option 50 = the remembered address, no server identifier, ciaddr 0.
    assert sent.msg_type() == dhcp.REQUEST and again.state == "rebooting"
    assert sent.requested_ip() == first.lease.address and dhcp.SERVER_ID not in sent.options
    assert sent.ciaddr == bytes(4) and sent.vendor_class() == b"yealink"
    ack = server.handle(request, ("0.0.0.0", 68), Now(100.1, 100.1))
    assert ack is not None and ack.data is not None
    assert again.receive(ack.data, 100.1) == []
    assert again.state == "bound" and again.init_reboot == "ack" and again.sent == 1
    assert again.lease is not None and again.lease.address == first.lease.address
    assert again.lease.options[66] == b"tftp://10.77.0.1/" and again.lease.server == IPv4Address("10.77.0.1")


def test_init_reboot_nak_goes_to_discover_at_once() -> None:
    server = make_server()
    first = client()
    bind(server, first, 0.0)
    moved = client(previous=IPv4Address("192.168.9.9"))  # the phone was moved from another network
    [request] = moved.start(100.0)
    nak = server.handle(request, ("0.0.0.0", 68), Now(100.1, 100.1))
    assert nak is not None and nak.data is not None and dhcp.decode(nak.data).msg_type() == dhcp.NAK
    [discover] = moved.receive(nak.data, 100.1)
    assert dhcp.decode(discover).msg_type() == dhcp.DISCOVER and moved.state == "selecting"
    assert moved.init_reboot == "nak" and moved.naks == 1
    offer = server.handle(discover, ("0.0.0.0", 68), Now(100.2, 100.2))
    assert offer is not None and offer.data is not None
    [req] = moved.receive(offer.data, 100.2)
    ack = server.handle(req, ("0.0.0.0", 68), Now(100.3, 100.3))
    assert ack is not None and ack.data is not None
    moved.receive(ack.data, 100.3)
    assert moved.state == "bound" and moved.lease is not None
    assert first.lease is not None and moved.lease.address == first.lease.address  # the same MAC: its lease


def test_init_reboot_unanswered_falls_back_to_discover() -> None:
    phone = client(previous=IPv4Address("10.77.0.100"))
    [request] = phone.start(0.0)
    assert phone.deadline is not None and 3.0 <= phone.deadline <= 5.0
    t = phone.deadline
    assert phone.on_timer(t) == [request]  # sent again, once (4 s, then 8 s, each +-1 s)
    assert phone.deadline is not None and 7.0 <= phone.deadline - t <= 9.0
    [discover] = phone.on_timer(phone.deadline)
    assert dhcp.decode(discover).msg_type() == dhcp.DISCOVER and phone.state == "selecting"
    assert phone.init_reboot == "no answer" and phone.retransmissions == 1


# -- SIP PnP ----------------------------------------------------------------------------------------------------------

def responder(url: str = "tftp://{ipv4}/") -> Responder:
    return Responder(PnpSettings(enabled=True, url=url), ("10.77.0.1", 40000), {"ipv4": "10.77.0.1"})


def pnp_client(wait: float = 5.0) -> PnpClient:
    return PnpClient("001565aabbcc", "T46U", "108.86.0.90", "10.77.0.120", random.Random(3), wait=wait)


def test_pnp_subscribe_gets_the_url_and_the_notify_is_answered() -> None:
    server = responder()
    phone = pnp_client()
    [(subscribe, dest)] = phone.start(0.0)
    assert dest == GROUP
    sub = parse(subscribe)
    assert sub.method == "SUBSCRIBE" and sub.uri == "sip:MAC001565aabbcc@224.0.1.75"
    assert 'model="T46U"' in (sub.get("event") or "") and sub.get("expires") == "0"
    out = server.receive(subscribe, ("10.77.0.120", 5060), 0.01)
    assert [o.addr for o in out] == [("10.77.0.120", 5060)] * 2
    assert phone.receive(out[0].data, ("10.77.0.1", 40000), 0.02) == []  # 200 OK
    assert phone.state == "waiting" and phone.status == 200
    [(ok, to)] = phone.receive(out[1].data, ("10.77.0.1", 40000), 0.03)  # NOTIFY
    assert to == ("10.77.0.1", 40000) and parse(ok).status == 200
    assert phone.state == "done" and phone.url == "tftp://10.77.0.1/"
    assert server.receive(ok, ("10.77.0.120", 5060), 0.04) == []
    assert server.pending == 0  # the responder's NOTIFY transaction is complete
    # A retransmitted NOTIFY gets the same 200 again.
    assert phone.receive(out[1].data, ("10.77.0.1", 40000), 0.6) == [(ok, ("10.77.0.1", 40000))]


def test_pnp_retransmits_on_timer_e_and_gives_up_with_the_reason() -> None:
    phone = pnp_client(wait=5.0)
    phone.start(0.0)
    times = []
    while phone.state == "subscribing":
        assert phone.deadline is not None
        now = phone.deadline
        if phone.on_timer(now):
            times.append(now)
    assert times == [0.5, 1.5, 3.5]  # 0.5, 1, 2 s apart; the 4th would be at 7.5 s, after the wait
    assert phone.state == "failed" and phone.subscribes == 4
    assert phone.failure == "PnP: no answer to 4 SUBSCRIBEs in 5 s"


def test_pnp_a_lost_notify_is_retransmitted_by_the_server_and_still_taken() -> None:
    server = responder()
    phone = pnp_client()
    [(subscribe, _)] = phone.start(0.0)
    ok, _notify = server.receive(subscribe, ("10.77.0.120", 5060), 0.01)
    phone.receive(ok.data, ("10.77.0.1", 40000), 0.02)
    resent = server.on_timer(0.51)  # Timer E: the NOTIFY again
    assert resent
    phone.receive(resent[0].data, ("10.77.0.1", 40000), 0.52)
    assert phone.state == "done"


def test_pnp_200_without_notify_fails_after_the_wait() -> None:
    phone = pnp_client(wait=2.0)
    [(subscribe, _)] = phone.start(0.0)
    ok, _ = responder().receive(subscribe, ("10.77.0.120", 5060), 0.01)
    phone.receive(ok.data, ("10.77.0.1", 40000), 0.02)
    assert phone.deadline == 2.0
    phone.on_timer(2.0)
    assert phone.state == "failed" and phone.failure == "PnP: 200 to the SUBSCRIBE but no NOTIFY in 2 s"


# -- TFTP -------------------------------------------------------------------------------------------------------------

SERVER = ("10.77.0.1", 50000)
PHONE = ("10.77.0.120", 40000)
LIMITS = Limits(blksize_max=1468, windowsize_max=64, timeout=1.0, retries=5, first_ack_retries=3,
                session_lifetime=100.0)


def serve(request: bytes, data: bytes, now: float = 0.0) -> tuple[ReadTransfer, list[bytes]]:
    packet = tftp.decode(request)
    assert isinstance(packet, tftp.Request)
    transfer = ReadTransfer(PHONE, packet.filename, Mem(data), LIMITS, negotiate(packet.options, LIMITS, len(data)),
                            now)
    return transfer, transfer.start(now)


def test_tftp_download_as_the_guide_captures_it() -> None:
    data = bytes(range(256)) * 12  # 3072 bytes: blocks of 1432, 1432, 208
    phone = TftpGet("y000000000000.boot")
    [(rrq, port)] = phone.start(0.0)
    request = tftp.decode(rrq)
    assert port == 69 and isinstance(request, tftp.Request)
    assert request.filename == "y000000000000.boot" and request.mode == "octet"
    assert request.options == {"blksize": str(BLKSIZE)}
    server, out = serve(rrq, data)
    sizes = []
    while phone.result is None:
        assert len(out) == 1  # lock-step: one datagram at a time
        for datagram in out:
            packet = tftp.decode(datagram)
            if isinstance(packet, tftp.Data):
                sizes.append(len(packet.payload))
            replies = phone.receive(datagram, SERVER[1], 0.1)
        out = [d for reply, _ in replies for d, _to in server.receive(reply, PHONE, 0.1)]
    assert sizes == [1432, 1432, 208]
    assert phone.result.status == results.OK and phone.result.data == data and phone.peer == SERVER[1]


def test_tftp_a_lost_reply_is_retried_not_fatal() -> None:
    phone = TftpGet("sip.cfg", timeout=5.0, tries=5)
    [(rrq, _)] = phone.start(0.0)
    assert phone.deadline == 5.0
    assert phone.on_timer(4.9) == []
    assert phone.on_timer(5.0) == [(rrq, 69)]  # the RRQ again, to port 69
    server, out = serve(rrq, b"#!version:1.0.0.1\n", 5.0)
    [(ack0, _)] = phone.receive(out[0], SERVER[1], 5.1)  # OACK -> ACK 0
    assert tftp.decode(ack0) == tftp.Ack(0)
    # DATA 1 is lost: ACK 0 again after the timeout, to the server's transfer ID.
    assert phone.on_timer(10.1) == [(ack0, None)]
    [(data, _to)] = server.receive(ack0, PHONE, 10.2)
    phone.receive(data, SERVER[1], 10.3)
    assert phone.result is not None and phone.result.status == results.OK and phone.result.retries == 2


def test_tftp_times_out_after_its_tries() -> None:
    phone = TftpGet("sip.cfg", timeout=5.0, tries=3)
    phone.start(0.0)
    sent = 0
    while phone.result is None:
        assert phone.deadline is not None
        sent += len(phone.on_timer(phone.deadline))
    assert sent == 2 and phone.result.status == results.TIMEOUT
    assert phone.result.detail == "TFTP timeout: no answer after 3 tries of 5 s"


def test_tftp_error_not_found_and_access_violation() -> None:
    for code, status in ((tftp.ERR_NOT_FOUND, results.NOT_FOUND), (tftp.ERR_ACCESS, results.REFUSED)):
        phone = TftpGet("001565aabbcc.boot")
        phone.start(0.0)
        phone.receive(tftp.encode_error(code, "Could not open requested file for reading"), 50000, 0.1)
        assert phone.result is not None and phone.result.status == status
        assert phone.result.detail == f"TFTP error {code}: Could not open requested file for reading"


def test_tftp_a_stranger_gets_error_5_and_the_transfer_goes_on() -> None:
    phone = TftpGet("sip.cfg")
    phone.start(0.0)
    phone.receive(tftp.encode_oack({"blksize": "1432"}), 50000, 0.1)
    answer = phone.receive(tftp.encode_data(1, b"evil"), 50001, 0.2)
    assert [(tftp.decode(d), p) for d, p in answer] == [(tftp.Error(5, "unknown transfer ID"), 50001)]
    assert phone.result is None
    phone.receive(tftp.encode_data(1, b"ok"), 50000, 0.3)
    assert phone.result is not None and phone.result.data == b"ok"


def test_tftp_a_duplicate_data_is_acknowledged_again() -> None:
    phone = TftpGet("f", blksize=8)
    phone.start(0.0)
    phone.receive(tftp.encode_oack({"blksize": "8"}), 50000, 0.1)
    [(ack1, _)] = phone.receive(tftp.encode_data(1, b"12345678"), 50000, 0.2)
    assert phone.receive(tftp.encode_data(1, b"12345678"), 50000, 0.3) == [(ack1, None)]
    phone.receive(tftp.encode_data(2, b"9"), 50000, 0.4)
    assert phone.result is not None and phone.result.data == b"123456789"


def test_tftp_a_server_without_options_gets_512_byte_blocks() -> None:
    phone = TftpGet("f")
    phone.start(0.0)
    phone.receive(tftp.encode_data(1, b"x" * 512), 50000, 0.1)
    assert phone.result is None
    phone.receive(tftp.encode_data(2, b""), 50000, 0.2)
    assert phone.result is not None and phone.result.data == b"x" * 512


def test_tftp_upload_lock_step_ends_on_the_last_ack() -> None:
    payload = b"#!version:1.0.0.1\n" + b"k = v\n" * 300  # 1818 bytes: blocks of 1432 and 386
    phone = TftpPut("001565aabbcc-local.cfg", payload=payload)
    [(wrq, _)] = phone.start(0.0)
    request = tftp.decode(wrq)
    assert isinstance(request, tftp.Request) and request.opcode == tftp.WRQ
    assert request.options == {"blksize": "1432", "tsize": str(len(payload))}
    [(d1, _)] = phone.receive(tftp.encode_oack({"blksize": "1432"}), 50000, 0.1)
    [(d2, _)] = phone.receive(tftp.encode_ack(1), 50000, 0.2)
    got = [tftp.decode(d1), tftp.decode(d2)]
    assert all(isinstance(p, tftp.Data) for p in got)
    assert b"".join(p.payload for p in got if isinstance(p, tftp.Data)) == payload
    assert phone.receive(tftp.encode_ack(2), 50000, 0.3) == []
    assert phone.result is not None and phone.result.status == results.OK


# -- DHCPv6 -----------------------------------------------------------------------------------------------------------

def test_dhcp6_solicit_to_reply_against_the_real_server_core_gets_option_59() -> None:
    from bootstrapd.dhcp6 import codec as v6
    from bootstrapd.sim.dhcp6 import Dhcp6Client
    from tests.unit.test_dhcp6_server import CLIENT, server

    srv = server('range = "fd77::100-fd77::1ff"\nbootfile_url = "tftp://[{ipv6}]/"')
    phone = Dhcp6Client(MAC, random.Random(2))
    [solicit] = phone.start(0.0)
    sent = v6.parse(solicit)
    assert isinstance(sent, v6.Message) and sent.msg_type == v6.SOLICIT
    assert v6.duid_mac(sent.get(v6.OPT_CLIENTID) or b"") == MAC
    assert v6.OPT_BOOTFILE_URL in v6.decode_oro(sent.get(v6.OPT_ORO) or b"")
    advertise = srv.handle(solicit, CLIENT, Now(0.1, 0.1))
    assert advertise is not None
    [request] = phone.receive(advertise.data, 0.1)
    assert phone.state == "requesting"
    reply = srv.handle(request, CLIENT, Now(0.2, 0.2))
    assert reply is not None
    phone.receive(reply.data, 0.2)
    assert phone.state == "bound" and phone.address is not None and str(phone.address).startswith("fd77::1")
    assert phone.bootfile_url == "tftp://[fd77::1]/"


def test_dhcp6_retransmits_doubling_and_gives_up() -> None:
    from bootstrapd.sim.dhcp6 import Dhcp6Client

    phone = Dhcp6Client(MAC, random.Random(2), tries=4)
    [solicit] = phone.start(0.0)
    gaps = []
    last = 0.0
    while phone.state == "soliciting":
        assert phone.deadline is not None
        gaps.append(phone.deadline - last)
        last = phone.deadline
        again = phone.on_timer(last)
        assert again in ([solicit], [])
    assert [round(g) for g in gaps] == [1, 2, 4, 8]  # +-10 % each
    assert phone.state == "failed" and phone.failure == "no ADVERTISE after 4 tries"
