"""The PnP responder core with injected time: answers, NOTIFY transaction timers, rules, hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.configfile import Source
from bootstrapd.errors import ProtocolError
from bootstrapd.pnp.message import SipError, parse, parse_name_addr, split_params
from bootstrapd.pnp.responder import Answered, Outgoing, Responder
from bootstrapd.pnp.settings import PnpRule, PnpSettings, load_pnp
from bootstrapd.pnp.urls import mac_from_user

DATA = Path(__file__).resolve().parent.parent / "data" / "pnp"
LOCAL = ("10.77.0.1", 40000)
VARS = {"ipv4": "10.77.0.1", "ipv6": "fd77::1"}


def make(url: str = "tftp://{ipv4}/", rules: tuple[PnpRule, ...] = (), max_pending: int = 100
         ) -> tuple[Responder, list[Answered], list[str]]:
    answers: list[Answered] = []
    counted: list[str] = []
    settings = PnpSettings(enabled=True, url=url, rules=rules, max_pending=max_pending)
    return Responder(settings, LOCAL, VARS, answered=answers.append, count=counted.append), answers, counted


def sample(name: str = "yealink-w52p.sip") -> bytes:
    return (DATA / name).read_bytes()


def ok_for(notify: bytes, status: int = 200) -> bytes:
    msg = parse(notify)
    head = [f"SIP/2.0 {status} Whatever"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        head.append(f"{name}: {msg.require(name)}")
    return ("\r\n".join(head) + "\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("name,mac,vendor,model", [
    ("yealink-w52p.sip", "001565f4f9e1", "yealink", "W52P"),
    ("grandstream-grp2612w.sip", "c074ad112233", "Grandstream", "GRP2612W"),
    ("snom-720.sip", "000413410b2c", "snom", "snom720"),
])
def test_real_subscribe_gets_200_then_notify(name: str, mac: str, vendor: str, model: str) -> None:
    core, answers, _ = make("http://{ipv4}/{vendor}/{model}/{mac}/")
    source = ("10.77.0.20", 5062)
    out = core.receive(sample(name), source, now=100.0)
    assert [o.addr for o in out] == [source, source]
    sub = parse(sample(name))
    ok = parse(out[0].data)
    assert ok.status == 200
    assert ok.require("call-id") == sub.require("call-id") and ok.require("cseq") == sub.require("cseq")
    assert ok.require("from") == sub.require("from")
    to_tag = parse_name_addr(ok.require("to")).tag
    assert to_tag and ok.require("to").startswith(sub.require("to"))
    assert ok.require("expires") == "0" and ok.require("content-length") == "0"
    via = ok.vias()[0]
    assert via.branch == sub.vias()[0].branch and via.params["received"] == "10.77.0.20"
    if "rport" in sub.vias()[0].params:
        assert via.params["rport"] == "5062"
    notify = parse(out[1].data)
    assert notify.method == "NOTIFY"
    assert notify.uri == parse_name_addr(sub.require("contact")).uri
    nvia = notify.vias()[0]
    assert (nvia.host, nvia.port) == LOCAL and nvia.branch and nvia.branch.startswith("z9hG4bK")
    assert nvia.branch != sub.vias()[0].branch
    assert notify.require("from") == f"{sub.require('to')};tag={to_tag}"
    assert notify.require("to") == sub.require("from")
    assert notify.require("call-id") == sub.require("call-id")
    assert notify.cseq()[1] == "NOTIFY"
    assert notify.require("event") == sub.require("event")
    assert notify.require("subscription-state") == "terminated;reason=timeout"
    assert notify.require("content-type") == "application/url"
    assert notify.body == f"http://10.77.0.1/{vendor}/{model}/{mac}/".encode()
    assert answers == []
    assert core.receive(ok_for(out[1].data), source, now=100.1) == []
    assert len(answers) == 1
    answer = answers[0]
    assert (answer.mac, answer.ip, answer.vendor, answer.model, answer.acknowledged) == (
        mac, "10.77.0.20", vendor, model, True)
    assert core.next_deadline() is None


def test_notify_retransmission_schedule_and_give_up() -> None:
    core, answers, counted = make()
    source = ("10.77.0.20", 5060)
    notify = core.receive(sample(), source, now=0.0)[1].data
    sent_at: list[float] = []
    now = 0.0
    while (deadline := core.next_deadline()) is not None:
        now = deadline
        out = core.on_timer(now)
        for item in out:
            assert item.data == notify and item.addr == source
            sent_at.append(now)
    # Timer E: T1, then doubling to T2 = 4 s; Timer F at 64*T1 = 32 s.
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert now == 32.0
    assert len(answers) == 1 and answers[0].acknowledged is False and answers[0].status is None
    assert counted.count("pnp.notify_timeout") == 1


def test_200_stops_retransmission() -> None:
    core, answers, _ = make()
    source = ("10.77.0.20", 5060)
    notify = core.receive(sample(), source, now=0.0)[1].data
    assert core.on_timer(0.5) == [Outgoing(notify, source)]
    assert core.on_timer(1.0) == []
    core.receive(ok_for(notify), source, now=1.2)
    assert core.next_deadline() is None
    assert core.on_timer(100.0) == []
    assert answers[0].acknowledged is True and answers[0].status == 200


def test_provisional_then_final_rejection() -> None:
    core, answers, counted = make()
    notify = core.receive(sample(), ("10.77.0.20", 5060), now=0.0)[1].data
    core.receive(ok_for(notify, 100), ("10.77.0.20", 5060), now=0.1)
    assert core.next_deadline() == 0.5
    core.on_timer(0.5)
    assert core.next_deadline() == 4.5  # Proceeding: every T2
    core.receive(ok_for(notify, 481), ("10.77.0.20", 5060), now=1.0)
    assert answers[0].acknowledged is False and answers[0].status == 481
    assert "pnp.rejected" in counted


def test_duplicate_subscribe_same_200_no_second_notify() -> None:
    core, _, counted = make()
    source = ("10.77.0.20", 5060)
    first = core.receive(sample(), source, now=0.0)
    again = core.receive(sample(), source, now=0.4)
    assert again == [first[0]]
    assert core.pending == 1
    assert "pnp.retransmitted_subscribe" in counted
    # Timer E still runs for the one NOTIFY only.
    assert core.on_timer(0.5) == [Outgoing(first[1].data, source)]


def test_new_cseq_is_a_new_subscription() -> None:
    core, _, _ = make()
    core.receive(sample(), ("10.77.0.20", 5060), now=0.0)
    out = core.receive(sample().replace(b"CSeq: 1 SUBSCRIBE", b"CSeq: 2 SUBSCRIBE"), ("10.77.0.20", 5060), now=1)
    assert len(out) == 2 and core.pending == 2


@pytest.mark.parametrize("user,mac", [
    ("MAC001565F4F9E1", "001565f4f9e1"), ("MAC:001565f4f9e1", "001565f4f9e1"), ("MAC=001565F4f9e1", "001565f4f9e1"),
    ("MAC%3a001565f4f9e1", "001565f4f9e1"), ("MAC%3A001565F4F9E1", "001565f4f9e1"),
    ("MAC%3A00%3A15%3A65%3AF4%3AF9%3AE1", "001565f4f9e1"), ("mac001565f4f9e1", "001565f4f9e1"),
    ("MAC0015", None), ("MACzz1565f4f9e1", None), ("001565f4f9e1", None), (None, None), ("", None),
])
def test_mac_forms(user: str | None, mac: str | None) -> None:
    assert mac_from_user(user) == mac


def test_mac_forms_end_to_end() -> None:
    for form in ("MAC%3A001565F4F9E1", "MAC=001565f4f9e1", "MAC:001565F4F9E1"):
        core, _, _ = make("tftp://{ipv4}/{mac}.cfg")
        out = core.receive(sample().replace(b"MAC001565f4f9e1@224", f"{form}@224".encode(), 1),
                           ("10.77.0.20", 5060), 0.0)
        assert parse(out[1].data).body == b"tftp://10.77.0.1/001565f4f9e1.cfg"


def test_rules_per_model_vendor_mac_and_refuse() -> None:
    rules = (
        PnpRule(vendor="GRANDSTREAM", url="http://{ipv4}/gs/"),
        PnpRule(model="snom7*", refuse=True),
        PnpRule(mac_prefix="001565", model="W52P", url="http://{ipv4}/$PN/$MAC.cfg"),
    )
    core, _, counted = make("tftp://{ipv4}/", rules)
    src = ("10.77.0.20", 5060)
    assert parse(core.receive(sample("grandstream-grp2612w.sip"), src, 0)[1].data).body == b"http://10.77.0.1/gs/"
    assert core.receive(sample("snom-720.sip"), src, 0) == []
    assert "pnp.refused" in counted
    assert parse(core.receive(sample(), src, 0)[1].data).body == b"http://10.77.0.1/$PN/$MAC.cfg"
    other_model = sample().replace(b'model="W52P"', b'model="T46G"').replace(b"Call-ID: 1", b"Call-ID: 2")
    assert parse(core.receive(other_model, src, 0)[1].data).body == b"tftp://10.77.0.1/"


def test_phone_strings_are_percent_encoded_in_urls() -> None:
    core, _, _ = make("http://{ipv4}/{model}/")
    evil = sample().replace(b'model="W52P"', b'model="../x y"')
    assert parse(core.receive(evil, ("10.77.0.20", 5060), 0)[1].data).body == b"http://10.77.0.1/..%2Fx%20y/"


def test_other_event_gets_489_and_other_method_405() -> None:
    core, _, _ = make()
    src = ("10.77.0.20", 5060)
    out = core.receive(sample().replace(b"Event: ua-profile", b"Event: presence"), src, 0)
    assert len(out) == 1 and parse(out[0].data).status == 489 and out[0].addr == src
    options = sample().replace(b"SUBSCRIBE sip", b"OPTIONS sip").replace(b"1 SUBSCRIBE", b"1 OPTIONS")
    out = core.receive(options, src, 0)
    msg = parse(out[0].data)
    assert msg.status == 405 and msg.require("allow") == "SUBSCRIBE"
    ack = options.replace(b"OPTIONS", b"ACK")
    assert core.receive(ack, src, 0) == []
    assert core.pending == 0


def test_contact_elsewhere_notify_goes_to_source_only() -> None:
    core, _, _ = make()
    evil = sample().replace(b"Contact: <sip:MAC001565f4f9e1@10.1.3.239:5059>", b"Contact: <sip:victim@192.0.2.99:9>")
    evil = evil.replace(b"Via: SIP/2.0/UDP 10.1.3.239:5059", b"Via: SIP/2.0/UDP 198.51.100.7:7")
    out = core.receive(evil, ("10.77.0.20", 5064), 0)
    assert [o.addr for o in out] == [("10.77.0.20", 5064)] * 2
    assert parse(out[1].data).uri == "sip:victim@192.0.2.99:9"
    assert [o.addr for o in core.on_timer(0.5)] == [("10.77.0.20", 5064)]


def test_stray_responses_are_dropped_and_counted() -> None:
    core, _, counted = make()
    stray = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.77.0.1:40000;branch=z9hG4bKnothing\r\nFrom: <sip:a@b>;tag=1\r\n"
             b"To: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\n\r\n")
    with pytest.raises(SipError):
        core.receive(stray, ("10.77.0.20", 5060), 0)
    assert counted == ["pnp.stray_response"]


def _without(name: bytes) -> bytes:
    return b"\r\n".join(line for line in sample().split(b"\r\n") if not line.startswith(name))


@pytest.mark.parametrize("data", [
    b"", b"\x00", bytes(range(256)) * 4, b"\xff" * 65507, sample() + b"x" * (65507 - len(sample())),
    _without(b"Call-ID"), _without(b"CSeq"), _without(b"Via"), _without(b"Event"), _without(b"From"),
    sample().replace(b"CSeq: 1 SUBSCRIBE", b"CSeq: 1 NOTIFY"),
    sample().replace(b"Content-Length: 0", b"Content-Length: 10"),
])
def test_hostile_input_raises_sip_error_only(data: bytes) -> None:
    core, _, _ = make()
    try:
        out = core.receive(data, ("10.77.0.20", 5060), 0)
    except SipError:
        out = []
    # The 64 KB datagram with a valid head is still a valid SUBSCRIBE (its padding is a body past Content-Length 0).
    assert all(o.addr == ("10.77.0.20", 5060) for o in out)
    assert core.pending <= 1


def test_non_utf8_headers_are_answered_and_echoed() -> None:
    core, _, _ = make()
    data = sample().replace(b"User-Agent: Yealink W52P", b"User-Agent: Y\xe9alink \xff").replace(
        b'From: <sip:', b'From: "B\xfcro" <sip:')
    out = core.receive(data, ("10.77.0.20", 5060), 0)
    assert b'From: "B\xfcro" <sip:' in out[0].data
    assert b'To: "B\xfcro" <sip:' in out[1].data


def test_pending_transactions_are_capped() -> None:
    core, _, counted = make(max_pending=3)
    src = ("10.77.0.20", 5060)
    for i in range(5):
        core.receive(sample().replace(b"Call-ID: 1536537630", f"Call-ID: {i}x".encode()), src, 0)
    assert core.pending == 3 and counted.count("pnp.overload") == 2


def test_settings_rules_and_unknown_keys() -> None:
    text = """
[pnp]
enabled = true
url = "tftp://{ipv4}/"
[[pnp.rule]]
vendor = "yealink"
model = "T4*"
mac_prefix = "00:15:65"
url = "http://{ipv4}/$PN/"
[[pnp.rule]]
vendor = "snom"
refuse = true
"""
    source = Source("t.toml", text)
    settings = load_pnp(source.root().table("pnp"), "tftp://x/")
    assert settings.rules[0] == PnpRule("yealink", "T4*", "001565", "http://{ipv4}/$PN/", False)
    assert settings.rules[1].refuse
    for bad, message in [("[pnp]\nurll = 'x'\n", "unknown key"),
                         ("[[pnp.rule]]\nvendor = 'x'\n", "required"),
                         ("[[pnp.rule]]\nmac_prefix = 'zz'\nrefuse = true\n", "MAC prefix"),
                         ("[[pnp.rule]]\nurl = 'x'\nrefuse = true\n", "not both")]:
        with pytest.raises(Exception, match=message):
            load_pnp(Source("t.toml", bad).root().table("pnp"), "tftp://x/")


def test_event_parameters_from_notify_echo() -> None:
    core, _, _ = make()
    out = core.receive(sample("grandstream-grp2612w.sip"), ("10.77.0.20", 5080), 0)
    _, params = split_params(parse(out[1].data).require("event"))
    assert params["vendor"] == "Grandstream" and params["version"] == "1.0.5.33"


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["yealink-w52p.sip", "grandstream-grp2612w.sip", "snom-720.sip"]),
       st.lists(st.tuples(st.integers(0, 600), st.binary(min_size=0, max_size=4)), max_size=6))
def test_mutated_subscribes_raise_only_sip_error(name: str, edits: list[tuple[int, bytes]]) -> None:
    data = bytearray(sample(name))
    for where, what in edits:
        where %= len(data) + 1
        data[where: where + len(what)] = what
    core, _, _ = make()
    try:
        out = core.receive(bytes(data), ("10.77.0.20", 5060), 0.0)
    except ProtocolError as exc:
        assert isinstance(exc, SipError)
        return
    assert all(o.addr == ("10.77.0.20", 5060) for o in out)
    for item in out:
        parse(item.data)  # whatever we send parses again
    core.on_timer(100.0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_into_the_core_raise_only_sip_error(data: bytes) -> None:
    core, _, _ = make()
    try:
        core.receive(data, ("10.77.0.20", 5060), 0.0)
    except ProtocolError as exc:
        assert isinstance(exc, SipError)


def test_only_the_phone_itself_can_acknowledge_its_notify() -> None:
    # The NOTIFY went to the SUBSCRIBE's source: a 200 for it from any other address is not that phone's answer
    # (it could only come from someone who saw the NOTIFY's branch on the way). It is dropped as stray, and Timer E
    # goes on until the phone answers or Timer F ends the exchange unacknowledged.
    core, answers, counted = make()
    phone = ("10.77.0.20", 5060)
    notify = core.receive(sample(), phone, now=0.0)[1].data
    with pytest.raises(SipError):
        core.receive(ok_for(notify), ("10.77.0.66", 5060), now=0.2)
    assert counted.count("pnp.stray_response") == 1 and answers == [] and core.pending == 1
    core.receive(ok_for(notify), ("10.77.0.20", 5099), now=0.3)  # the phone, from another port of its own
    assert [(a.acknowledged, a.status) for a in answers] == [(True, 200)]
