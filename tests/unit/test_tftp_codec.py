"""TFTP codec: round trips, hostile datagrams, and never anything but TftpError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.errors import ProtocolError
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import Ack, Data, Error, OAck, Request, TftpError

names = st.text(st.characters(min_codepoint=0x20, blacklist_characters="\x7f", blacklist_categories=["Cs"]),
                min_size=1, max_size=60)
option_names = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)
option_values = st.text("0123456789abc", max_size=8)
options = st.dictionaries(option_names, option_values, max_size=5)
packets = st.one_of(
    st.builds(Request, st.sampled_from([codec.RRQ, codec.WRQ]), names, st.sampled_from(["octet", "netascii"]),
              options),
    st.builds(Data, st.integers(0, 65535), st.binary(max_size=1500)),
    st.builds(Ack, st.integers(0, 65535)),
    st.builds(Error, st.integers(0, 8), st.text(st.characters(blacklist_characters="\0",
                                                              blacklist_categories=["Cs"]), max_size=40)),
    st.builds(OAck, st.dictionaries(option_names, option_values, min_size=1, max_size=5)),  # never empty
)


@given(packets)
def test_round_trip(packet: codec.Packet) -> None:
    assert codec.decode(codec.encode(packet)) == packet


@given(st.binary(max_size=600))
def test_never_raises_anything_but_tftp_error(data: bytes) -> None:
    try:
        codec.decode(data)
    except TftpError as exc:
        assert isinstance(exc, ProtocolError)


@given(st.binary(max_size=200))
def test_request_prefix_never_crashes(tail: bytes) -> None:
    for opcode in (b"\0\1", b"\0\2", b"\0\6"):
        try:
            codec.decode(opcode + tail)
        except TftpError:
            pass


@pytest.mark.parametrize("data", [
    b"", b"\0", b"\0\4\0",  # 1- and 3-byte datagrams
    b"\0\x09\0\0",  # unknown opcode
    b"\0\0\0\0",
    b"\0\1file",  # no NUL terminator
    b"\0\1file\0",  # no mode
    b"\0\1\xff\xfe\0octet\0",  # non-UTF-8 file name
    b"\0\1a\x01b\0octet\0",  # control character
    b"\0\1\0octet\0",  # empty name
    b"\0\1x\0oct\xffet\0",
])
def test_crash_packets(data: bytes) -> None:
    with pytest.raises(TftpError):
        codec.decode(data)


def test_options_lower_case_first_wins_and_bad_ones_ignored() -> None:
    packet = codec.decode(b"\0\1f.cfg\0OCTET\0BlkSize\0abc\0blksize\x00512\0tsize\0\xff\0dangling\0")
    assert packet == Request(codec.RRQ, "f.cfg", "octet", {"blksize": "abc"})


def test_wire_formats() -> None:
    assert codec.encode_data(65536 + 3, b"x") == b"\0\3\0\3x"
    assert codec.encode_ack(7) == b"\0\4\0\7"
    assert codec.encode_error(5, "unknown transfer ID") == b"\0\5\0\5unknown transfer ID\0"
    assert codec.encode_oack({"blksize": "1428"}) == b"\0\6blksize\x001428\0"


@given(st.binary(max_size=2000))
def test_netascii_round_trip(data: bytes) -> None:
    # What a download converts (LF -> CR LF, CR -> CR NUL) an upload converts back, whatever the bytes.
    from bootstrapd.tftp.transfer import Netascii

    assert Netascii.decode(Netascii.convert(data)) == data


@given(st.binary(max_size=2000))
def test_netascii_decode_takes_any_bytes(data: bytes) -> None:
    # Not every upload is valid netascii (a bare CR, a CR before another byte): decoding never fails, never grows.
    from bootstrapd.tftp.transfer import Netascii

    assert len(Netascii.decode(data)) <= len(data)
