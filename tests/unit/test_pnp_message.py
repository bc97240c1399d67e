"""The SIP parser/builder: RFC 3261 header rules, the real SUBSCRIBEs, round trips and hostile bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.errors import ProtocolError
from bootstrapd.pnp.message import (
    SipError,
    SipMessage,
    parse,
    parse_name_addr,
    parse_uri,
    parse_via,
    request,
    response_to,
    split_params,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "pnp"


@pytest.mark.parametrize("name", ["yealink-w52p.sip", "grandstream-grp2612w.sip", "snom-720.sip"])
def test_real_subscribes_parse(name: str) -> None:
    msg = parse((DATA / name).read_bytes())
    assert msg.method == "SUBSCRIBE"
    assert msg.cseq() == (1, "SUBSCRIBE")
    assert msg.get("content-length") == "0"
    event, params = split_params(msg.require("event"))
    assert event == "ua-profile"
    assert params["profile-type"] == "device"
    assert params["vendor"] and params["model"] and params["version"]
    assert len(msg.vias()) == 1
    branch = msg.vias()[0].branch
    assert branch is not None and branch.startswith("z9hG4bK")


def test_snom_rport_and_grandstream_rport() -> None:
    snom = parse((DATA / "snom-720.sip").read_bytes()).vias()[0]
    assert snom.host == "192.168.0.37" and snom.port == 1036 and "rport" in snom.params
    assert snom.params["rport"] is None
    yealink = parse((DATA / "yealink-w52p.sip").read_bytes()).vias()[0]
    assert "rport" not in yealink.params and yealink.port == 5059


COMPACT = (
    b"SUBSCRIBE sip:MAC%3a001565aabbcc@224.0.1.75 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport\r\n"
    b"f: <sip:a@b>;tag=x\r\n"
    b"t: <sip:a@b>\r\n"
    b"i: abc@10.0.0.5\r\n"
    b"CSeq: 7 SUBSCRIBE\r\n"
    b"m: <sip:10.0.0.5:5060>\r\n"
    b"o: ua-profile;vendor=\"Yealink\"\r\n"
    b"l: 0\r\n\r\n"
)


def test_compact_header_names() -> None:
    msg = parse(COMPACT)
    assert msg.get("Call-ID") == "abc@10.0.0.5"
    assert msg.get("call-id") == msg.get("i")
    assert msg.get("Contact") == "<sip:10.0.0.5:5060>"
    assert msg.get("EVENT") == 'ua-profile;vendor="Yealink"'
    assert msg.vias()[0].port == 5060
    assert parse_name_addr(msg.require("from")).tag == "x"


def test_reordered_and_case_insensitive_headers() -> None:
    lines = COMPACT.split(b"\r\n")
    shuffled = [lines[0], *reversed(lines[1:9]), b"", b""]
    msg = parse(b"\r\n".join(shuffled).replace(b"CSeq", b"cSEQ"))
    assert msg.cseq() == (7, "SUBSCRIBE")
    assert msg.get("from") == "<sip:a@b>;tag=x"


def test_several_via_values_comma_and_repeated() -> None:
    data = (
        b"SUBSCRIBE sip:x@y SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP a.example:5070;branch=z9hG4bKa , SIP / 2.0 / UDP b.example;branch=z9hG4bKb\r\n"
        b"via: SIP/2.0/UDP [fd00::1]:5080 ; branch = z9hG4bKc ; received=1.2.3.4\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n"
    )
    vias = parse(data).vias()
    assert [(v.host, v.port, v.branch) for v in vias] == [
        ("a.example", 5070, "z9hG4bKa"), ("b.example", None, "z9hG4bKb"), ("[fd00::1]", 5080, "z9hG4bKc")]
    assert vias[2].params["received"] == "1.2.3.4"


def test_folded_header_and_whitespace_around_colon() -> None:
    data = (
        b"SUBSCRIBE sip:x@y SIP/2.0\r\n"
        b"Via   :   SIP/2.0/UDP 10.0.0.1:5060\r\n  ;branch=z9hG4bKf\r\n"
        b"Event: ua-profile\r\n\t;vendor=\"snom\" ; model = \"snom720\"\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\n\r\n"
    )
    msg = parse(data)
    assert msg.vias()[0].branch == "z9hG4bKf"
    event, params = split_params(msg.require("event"))
    assert (event, params["vendor"], params["model"]) == ("ua-profile", "snom", "snom720")


def test_bare_lf_line_ends_and_body_cut_to_content_length() -> None:
    msg = parse(b"SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nCSeq: 1 NOTIFY\nContent-Length: 3\n\nabcdef")
    assert msg.status == 200 and msg.reason == "OK" and msg.body == b"abc"


def test_uri_forms() -> None:
    uri = parse_uri("sip:MAC%3AC074AD112233@224.0.1.75")
    assert uri.user == "MAC%3AC074AD112233" and uri.host == "224.0.1.75" and uri.port is None
    uri = parse_uri("sip:192.168.1.2:5080;transport=udp")
    assert uri.user is None and uri.port == 5080 and uri.params == {"transport": "udp"}
    with pytest.raises(SipError):
        parse_uri("http://x/")


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\n", b"\x00\xff" * 50, b"SUBSCRIBE\r\n\r\n", b"SIP/2.0 abc OK\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\n no header before\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nBad Header Name: x\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\nContent-Length: 99\r\n\r\nshort",
    b"INVITE sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
    b"INVITE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 300 + b"\r\n",
])
def test_crash_packets_raise_sip_error(data: bytes) -> None:
    with pytest.raises(SipError):
        parse(data)


def test_bad_via_cseq_and_quotes() -> None:
    for value in ("SIP/2.0/UDP", "garbage", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host:x"):
        with pytest.raises(SipError):
            parse_via(value)
    msg = parse(b"SUBSCRIBE sip:x@y SIP/2.0\r\nCSeq: one SUBSCRIBE\r\nEvent: a;b=\"unterminated\r\n\r\n")
    with pytest.raises(SipError):
        msg.cseq()
    with pytest.raises(SipError):
        split_params(msg.require("event"))
    with pytest.raises(SipError):
        msg.require("call-id")


def test_non_utf8_header_survives_echo() -> None:
    data = (b"SUBSCRIBE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: \"J\xf6rg\" <sip:a@b>;tag=1\r\n"
            b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\n\r\n")
    req = parse(data)
    out = response_to(req, 200, "OK", to_tag="t").encode()
    assert b"From: \"J\xf6rg\" <sip:a@b>;tag=1\r\n" in out
    assert b"To: <sip:a@b>;tag=t\r\n" in out


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1,
                 max_size=20)
_value = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=60).map(str.strip)


@settings(max_examples=300, deadline=None)
@given(
    is_request=st.booleans(),
    method=_token,
    status=st.integers(100, 699),
    reason=_value,
    headers=st.lists(st.tuples(_token.filter(lambda n: n.lower() not in ("l", "content-length")), _value),
                     max_size=12),
    body=st.binary(max_size=200),
)
def test_build_then_parse_round_trip(is_request: bool, method: str, status: int, reason: str,
                                     headers: list[tuple[str, str]], body: bytes) -> None:
    if is_request:
        built = request(method, "sip:user@host", headers, body)
    else:
        built = SipMessage(status=status, reason=reason, headers=list(headers), body=body)
    parsed = parse(built.encode())
    if is_request:
        assert (parsed.method, parsed.uri) == (method.upper(), "sip:user@host")
    else:
        assert (parsed.status, parsed.reason) == (status, reason)
    assert parsed.headers[:-1] == [(n, v) for n, v in headers]
    assert parsed.headers[-1] == ("Content-Length", str(len(body)))
    assert parsed.body == body


def _exercise(msg: SipMessage) -> None:
    msg.vias()
    msg.cseq()
    for name in ("from", "to", "contact"):
        value = msg.get(name)
        if value is not None:
            parse_name_addr(value)
    split_params(msg.require("event"))
    if msg.uri:
        parse_uri(msg.uri)
    response_to(msg, 200, "OK", to_tag="x").encode()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_sip_error(data: bytes) -> None:
    try:
        _exercise(parse(data))
    except ProtocolError as exc:
        assert isinstance(exc, SipError)


_lines = st.sampled_from([
    b"SUBSCRIBE sip:MAC%3a001565aabbcc@224.0.1.75 SIP/2.0", b"SIP/2.0 200 OK", b"Via: SIP/2.0/UDP 1.2.3.4:5;rport",
    b"v: SIP/2.0/UDP [::1]:5;branch=z9hG4bK", b"Call-ID: x", b"CSeq: 1 SUBSCRIBE", b"CSeq: 99999999999 X",
    b"From: <sip:a@b>;tag=1", b"t: \"q\\\"\" <sip:x>", b"m: <sip:", b"o: ua-profile;vendor=\"", b"l: 5", b" ;x=y",
    b"\t", b"", b"Event: ua-profile", b"Contact: sip:a@b:0", b"\xff\xfe: \x80",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(_lines, max_size=12), st.binary(max_size=20))
def test_plausible_garbage_raises_only_sip_error(lines: list[bytes], tail: bytes) -> None:
    try:
        _exercise(parse(b"\r\n".join(lines) + tail))
    except ProtocolError as exc:
        assert isinstance(exc, SipError)


def test_bare_cr_inside_a_header_is_refused() -> None:
    with pytest.raises(SipError):
        parse(b"SUBSCRIBE sip:x@y SIP/2.0\r\nFrom: <sip:a@b>\rX-Injected: 1\r\nCall-ID: c\r\n\r\n")
