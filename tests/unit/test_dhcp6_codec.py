"""The DHCPv6 codec: round trips, typed options, and nothing but Dhcp6Error on hostile bytes."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.dhcp6 import codec
from bootstrapd.dhcp6.codec import Dhcp6Error, IaAddress, IaNa, IaPd, IaTa, Message, RelayMessage, StatusCode
from bootstrapd.errors import ProtocolError

DUID = b"\x00\x03\x00\x01\x00\x15\x65\x01\x02\x03"

# Options whose content parse() checks: generate only valid contents for them, anything for the rest.
_FREE_CODES = st.integers(0, 0xFFFF).filter(
    lambda c: c not in (1, 2, 3, 4, 6, 8, 9, 13, 14, 15, 16, 17, 25))
_ADDR = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


def _ia() -> st.SearchStrategy[IaNa]:
    addr = st.builds(IaAddress, _ADDR, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.just([]))
    status = st.one_of(st.none(), st.builds(StatusCode, st.integers(0, 0xFFFF), st.text(max_size=20)))
    return st.builds(IaNa, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                     st.lists(addr, max_size=3), status, st.just([]))


_OPTION = st.one_of(
    st.tuples(_FREE_CODES, st.binary(max_size=40)),
    st.tuples(st.sampled_from([1, 2]), st.binary(min_size=3, max_size=130)),
    st.tuples(st.just(3), _ia().map(lambda ia: ia.encode())),
    st.tuples(st.just(6), st.lists(st.integers(0, 0xFFFF), max_size=8).map(codec.encode_oro)),
    st.tuples(st.just(8), st.binary(min_size=2, max_size=2)),
    st.tuples(st.just(14), st.just(b"")),
    st.tuples(st.just(16), st.builds(codec.encode_vendor_class, st.integers(0, 2**32 - 1),
                                     st.lists(st.binary(max_size=10), max_size=3))),
)

_CLIENT_TYPES = [1, 3, 4, 5, 6, 8, 9]


@st.composite
def messages(draw: st.DrawFn) -> Message:
    return Message(draw(st.sampled_from([*_CLIENT_TYPES, 2, 7])), draw(st.integers(0, 2**24 - 1)),
                   draw(st.lists(_OPTION, max_size=8)))


@st.composite
def relayed(draw: st.DrawFn) -> Message | RelayMessage:
    inner: Message | RelayMessage = draw(messages().filter(lambda m: m.msg_type in _CLIENT_TYPES))
    for _ in range(draw(st.integers(0, 4))):
        opts = draw(st.lists(st.tuples(st.sampled_from([18, 37, 79, 300]), st.binary(max_size=12)), max_size=3))
        inner = RelayMessage(codec.RELAY_FORW, draw(st.integers(0, 255)), draw(_ADDR), draw(_ADDR), inner, opts)
    return inner


@given(messages())
def test_message_round_trip(msg: Message) -> None:
    assert codec.parse(msg.encode()) == msg


@given(relayed())
def test_relay_round_trip(msg: Message | RelayMessage) -> None:
    data = msg.encode()
    assert codec.parse(data) == msg
    assert codec.parse(data).encode() == data


@given(messages())
def test_parse_keeps_what_it_decoded(msg: Message) -> None:
    """The server reads the IAs, the option request and the vendor class parse() decoded: they must be what decoding
    the options themselves gives (the first option request and vendor class, as ``get`` finds them)."""
    parsed = codec.parse(msg.encode())
    assert isinstance(parsed, Message)
    assert parsed.ia_na == [IaNa.decode(v) for c, v in msg.options if c == codec.OPT_IA_NA]
    assert parsed.ia_other == [IaTa.decode(v) if c == codec.OPT_IA_TA else IaPd.decode(v)
                               for c, v in msg.options if c in (codec.OPT_IA_TA, codec.OPT_IA_PD)]
    oro = msg.get(codec.OPT_ORO)
    assert parsed.oro == (codec.decode_oro(oro) if oro is not None else [])
    vendor = msg.get(codec.OPT_VENDOR_CLASS)
    assert parsed.vendor_class == (codec.decode_vendor_class(vendor) if vendor is not None else None)


def test_tail_follows_the_options_on_the_wire() -> None:
    options = [(codec.OPT_CLIENTID, DUID), (300, b"x"), (codec.OPT_BOOTFILE_URL, b"tftp://[fd77::1]/")]
    whole = Message(codec.REPLY, 7, options).encode()
    split = Message(codec.REPLY, 7, options[:1], tail=codec.encode_options(options[1:])).encode()
    assert split == whole
    assert codec.parse(split) == Message(codec.REPLY, 7, options)


@given(_ia())
def test_ia_na_round_trip(ia: IaNa) -> None:
    assert IaNa.decode(ia.encode()) == ia


@given(st.lists(st.integers(0, 0xFFFF), max_size=40))
def test_option_request_round_trip(codes: list[int]) -> None:
    assert codec.decode_oro(codec.encode_oro(codes)) == codes
    encoded = codec.encode_oro(codes)
    assert codec.decode_oro(encoded) == [c for (c,) in struct.iter_unpack("!H", encoded)]


_STATUS = st.one_of(st.none(), st.builds(StatusCode, st.integers(0, 0xFFFF), st.text(max_size=20)))


@given(st.builds(IaTa, st.integers(0, 2**32 - 1), st.lists(
    st.builds(IaAddress, _ADDR, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.just([])), max_size=3),
    _STATUS))
def test_ia_ta_round_trip(ia: IaTa) -> None:
    assert IaTa.decode(ia.encode()) == ia


@given(st.builds(IaPd, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), _STATUS))
def test_ia_pd_round_trip(ia: IaPd) -> None:
    assert IaPd.decode(ia.encode()) == ia


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_arbitrary_bytes_raise_only_dhcp6_error(data: bytes) -> None:
    try:
        codec.parse(data)
    except Dhcp6Error:
        pass


@given(relayed(), st.data())
@settings(max_examples=400)
def test_mutated_messages_raise_only_dhcp6_error(msg: Message | RelayMessage, data: st.DataObject) -> None:
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
        elif action == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)):]
        else:
            i = data.draw(st.integers(0, len(raw)))
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        codec.parse(bytes(raw))
    except Dhcp6Error:
        pass


def _solicit(*options: codec.Option) -> bytes:
    return Message(codec.SOLICIT, 0xABCDEF, [(codec.OPT_CLIENTID, DUID), *options]).encode()


def test_dhcp6_error_is_a_protocol_error() -> None:
    assert issubclass(Dhcp6Error, ProtocolError)


@pytest.mark.parametrize("data", [
    b"",
    b"\x01",
    b"\x01\x00\x00",  # shorter than the 4-byte header
    _solicit()[:-3],  # truncated option body
    _solicit() + b"\x00\x03\x00",  # truncated option header
    b"\x01\x00\x00\x01" + struct.pack("!HH", 1, 200) + DUID,  # option length past the end
    _solicit((codec.OPT_IA_NA, b"\x00\x00\x00\x01\x00\x00")),  # IA_NA shorter than 12 bytes
    _solicit((codec.OPT_IA_NA, b"\x00" * 12 + struct.pack("!HH", 5, 40) + b"\x00" * 10)),  # IAADDR past IA end
    _solicit((codec.OPT_IA_NA, b"\x00" * 12 + struct.pack("!HH", 5, 4) + b"\x00" * 4)),  # IAADDR too short
    _solicit((codec.OPT_ORO, b"\x00\x17\x00")),  # odd ORO
    _solicit((codec.OPT_ELAPSED_TIME, b"\x00")),
    _solicit((codec.OPT_RAPID_COMMIT, b"x")),
    _solicit((codec.OPT_VENDOR_CLASS, b"\x00\x00")),
    _solicit((codec.OPT_VENDOR_CLASS, b"\x00\x00\x00\x01\x00\x09abc")),
    _solicit((codec.OPT_USER_CLASS, b"\x00")),
    _solicit((codec.OPT_RELAY_MSG, b"")),  # relay message option in a client message
    bytes([99, 0, 0, 1]),  # unknown message type
    bytes([codec.RELAY_FORW, 0]) + b"\x00" * 20,  # relay header truncated
    bytes([codec.RELAY_FORW, 0]) + b"\x00" * 32,  # relay without a relay message option
])
def test_malformed_packets_are_rejected(data: bytes) -> None:
    with pytest.raises(Dhcp6Error):
        codec.parse(data)


def test_duid_over_128_bytes_is_rejected() -> None:
    codec.parse(Message(codec.SOLICIT, 1, [(codec.OPT_CLIENTID, b"\x00\x02" + b"x" * 128)]).encode())
    for code in (codec.OPT_CLIENTID, codec.OPT_SERVERID):
        with pytest.raises(Dhcp6Error, match="longer than 128"):
            codec.parse(Message(codec.SOLICIT, 1, [(code, b"\x00\x02" + b"x" * 129)]).encode())
    with pytest.raises(Dhcp6Error, match="too short"):
        codec.parse(Message(codec.SOLICIT, 1, [(codec.OPT_CLIENTID, b"\x00")]).encode())


def _nest(depth: int) -> bytes:
    inner: Message | RelayMessage = Message(codec.SOLICIT, 1, [(codec.OPT_CLIENTID, DUID)])
    for i in range(depth):
        inner = RelayMessage(codec.RELAY_FORW, i, IPv6Address("fd77::2"), IPv6Address("fe80::1"), inner, [])
    return inner.encode()


def test_relay_nesting_limit() -> None:
    parsed = codec.parse(_nest(codec.MAX_RELAY_DEPTH))
    assert isinstance(parsed, RelayMessage)
    assert parsed.innermost().msg_type == codec.SOLICIT
    with pytest.raises(Dhcp6Error, match="nested"):
        codec.parse(_nest(codec.MAX_RELAY_DEPTH + 1))
    with pytest.raises(Dhcp6Error, match="nested"):
        codec.parse(_nest(200))  # deep nesting never reaches Python's recursion limit


def test_information_request_with_an_ia_is_rejected() -> None:
    ok = Message(codec.INFORMATION_REQUEST, 1, [(codec.OPT_ORO, codec.encode_oro([59]))])
    codec.parse(ok.encode())
    for code in (codec.OPT_IA_NA, codec.OPT_IA_TA, codec.OPT_IA_PD):
        body = IaNa(1).encode() if code == codec.OPT_IA_NA else b"\x00" * 12
        bad = Message(codec.INFORMATION_REQUEST, 1, [(code, body)])
        with pytest.raises(Dhcp6Error, match="information-request carrying an IA"):
            codec.parse(bad.encode())


def test_typed_helpers() -> None:
    assert codec.decode_domains(codec.encode_domains(["example.com", "lab.example.org"])) == [
        "example.com", "lab.example.org"]
    assert codec.decode_vendor_opts(codec.encode_vendor_opts(4491, [(1, b"x"), (2, b"yz")])) == (
        4491, [(1, b"x"), (2, b"yz")])
    assert codec.decode_user_class(codec.encode_user_class([b"a", b"bc"])) == [b"a", b"bc"]
    assert codec.decode_addresses(codec.encode_addresses([IPv6Address("fd77::1")])) == [IPv6Address("fd77::1")]
    assert codec.duid_mac(DUID) == b"\x00\x15\x65\x01\x02\x03"
    assert codec.duid_mac(b"\x00\x01\x00\x01\x00\x00\x00\x01\x00\x15\x65\x01\x02\x03") == b"\x00\x15\x65\x01\x02\x03"
    assert codec.duid_mac(b"\x00\x02\x00\x00\x00\x09abc") is None
    with pytest.raises(Dhcp6Error):
        codec.decode_domains(b"\x03abc")
    with pytest.raises(Dhcp6Error):
        codec.decode_addresses(b"\x00" * 15)
    with pytest.raises(ValueError):
        codec.encode_domains(["a..b"])
