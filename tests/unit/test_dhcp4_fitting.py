"""Which options fit a DHCPv4 reply, and where (issue #8 item 3): RFC 2132 9.8 (requested options first, in option
55 order), 9.3 (overload into file/sname, never option 52 with value 0), 9.10 (the client's maximum size), RFC 3046
2.2 (option 82 echoed, last, its room reserved), RFC 3396 (long options split, also across fields); what does not
fit is named in the event."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Packet
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import WITHOUT_OPTIONS, mac, make_server, message

SRC = ("0.0.0.0", 68)


def tlvs(block: bytes) -> list[tuple[int, bytes]]:
    """The options of one field as they are on the wire (instances not joined), up to END."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(block) and block[i] != codec.END:
        if block[i] == codec.PAD:
            i += 1
            continue
        out.append((block[i], block[i + 2: i + 2 + block[i + 1]]))
        i += 2 + block[i + 1]
    return out


def fields(data: bytes) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The options field, the file field and the sname field of an encoded message."""
    return tlvs(data[240:]), tlvs(data[108:236]), tlvs(data[44:108])


def offer(configured: str, *, keys: str = "", options: dict[int, bytes] | None = None,
          giaddr: str = "0.0.0.0") -> tuple[bytes, dict[str, Any]]:
    """The OFFER for a DISCOVER, with ``configured`` lines under [dhcp4.options] and ``keys`` under [dhcp4]."""
    server = make_server(base=WITHOUT_OPTIONS + keys + '[dhcp4.options]\n66 = "tftp://10.77.0.1/"\n160 = "http://10.77.0.1/p/"\n'
                         + configured)
    reply = server.handle(message(codec.DISCOVER, mac(1), options=options, giaddr=giaddr),
                          (giaddr, 67) if giaddr != "0.0.0.0" else SRC, at(1000.0))
    assert reply is not None and reply.data is not None
    return reply.data, reply.event


def test_a_220_byte_option_43_reaches_a_client_that_sends_no_option_57() -> None:
    """The issue's case: 333 of 548 bytes used, and 43 was left out although the event said it was sent."""
    data, event = offer(f'43 = "hex:{"ab" * 220}"\n')
    assert len(data) <= 576 - 28
    packet = codec.decode(data)
    assert packet.options[43] == bytes.fromhex("ab" * 220)
    assert 43 in event["options"] and "left_out" not in event
    assert packet.options[66] == b"tftp://10.77.0.1/" and packet.options[160] == b"http://10.77.0.1/p/"


def test_requested_options_come_first_in_option_55_order_and_are_kept_over_unrequested_ones() -> None:
    extra = "".join(f'{code} = "{chr(96 + code - 220) * 200}"\n' for code in (221, 222, 223))
    data, event = offer(extra, options={codec.PARAM_LIST: bytes((223, 1, 3, 222))})
    packet = codec.decode(data)
    assert 223 in packet.options and 222 in packet.options  # asked for: sent
    assert 221 not in packet.options and 221 in event["left_out"]  # not asked for, no room: left out
    assert set(event["left_out"]) <= {221, 160, 66}  # only unrequested options yield
    main, in_file, in_sname = fields(data)
    order = [code for code, _ in main + in_file + in_sname if code in (223, 1, 3, 222)]
    assert list(dict.fromkeys(order)) == [223, 1, 3, 222]  # (222 is split over the three fields: RFC 3396)


def test_option_55_order_on_the_wire_when_everything_fits() -> None:
    data, _ = offer("", options={codec.PARAM_LIST: bytes((160, 6, 66, 1, 3))})
    main, _, _ = fields(data)
    codes = [code for code, _ in main]
    assert codes[:2] == [codec.MESSAGE_TYPE, codec.SERVER_ID]
    requested = [c for c in codes if c in (160, 6, 66, 1, 3)]
    assert requested == [160, 6, 66, 1, 3]


def test_option_82_is_echoed_last_in_the_options_field_when_overload_is_used() -> None:
    """RFC 3046 2.2: the server SHALL echo it; with overload and room left it used to be dropped."""
    agent = b"\x01\x08circuit1\x02\x04sw01"
    extra = "".join(f'{code} = "http://10.77.0.1/{code}/{"y" * 60}"\n' for code in (161, 162, 163, 164))
    data, event = offer(extra, options={codec.RELAY_AGENT: agent}, giaddr="10.77.0.5")
    main, in_file, in_sname = fields(data)
    assert dict(main)[codec.OVERLOAD] in (b"\x01", b"\x03")  # overload is in use ...
    assert main[-1] == (codec.RELAY_AGENT, agent)  # ... and 82 is there, the last option of the options field
    assert all(code != codec.RELAY_AGENT for code, _ in in_file + in_sname)
    assert "left_out" not in event
    packet = codec.decode(data)
    assert all(packet.options[code].startswith(b"http://10.77.0.1/") for code in (161, 162, 163, 164))


def test_an_option_too_long_for_any_one_field_is_split_across_them() -> None:
    """RFC 3396: a 300-byte option in a 576-byte reply: instances in the options field and in file."""
    value = bytes(range(256)) + bytes(44)
    data, event = offer(f'224 = "hex:{value.hex()}"\n')
    packet = codec.decode(data)
    assert packet.options[224] == value and "left_out" not in event
    main, in_file, in_sname = fields(data)
    pieces = [v for c, v in main + in_file + in_sname if c == 224]
    assert len(pieces) >= 2 and b"".join(pieces) == value


def test_the_boot_file_keeps_the_file_field_and_overflow_uses_sname_only() -> None:
    extra = "".join(f'{code} = "http://10.77.0.1/{code}/{"z" * 40}"\n' for code in (161, 162, 163, 164, 165))
    data, event = offer(extra, keys='boot_file = "y000000000000.boot"\n',
                        options={codec.PARAM_LIST: bytes((1, 3, 67))})
    packet = codec.decode(data)
    assert packet.file.rstrip(b"\0") == b"y000000000000.boot"
    assert packet.options[67] == b"y000000000000.boot"  # requested: option 67 too
    main, _, _ = fields(data)
    assert dict(main).get(codec.OVERLOAD) in (None, b"\x02")  # never the file field
    assert len(data) <= 576 - 28
    sent = [code for code in (161, 162, 163, 164, 165) if code in packet.options]
    assert sorted(sent + list(event.get("left_out", ()))) == [161, 162, 163, 164, 165]


option_sets = st.dictionaries(st.integers(128, 254), st.binary(min_size=0, max_size=400), max_size=8)


@settings(max_examples=300, deadline=None)
@given(configured=option_sets, requested=st.lists(st.integers(1, 254), max_size=20),
       max_size=st.integers(576, 1500), agent=st.none() | st.binary(min_size=1, max_size=255),
       client_id=st.none() | st.binary(min_size=2, max_size=255), file_used=st.booleans())
def test_every_reply_fits_decodes_and_accounts_for_every_option(configured: dict[int, bytes], requested: list[int],
                                                                max_size: int, agent: bytes | None,
                                                                client_id: bytes | None, file_used: bool) -> None:
    reply = Packet(op=codec.BOOTREPLY, xid=7, chaddr=mac(1).ljust(16, b"\0"),
                   file=b"boot.file".ljust(128, b"\0") if file_used else bytes(128))
    reply.options = {codec.MESSAGE_TYPE: b"\x05", codec.SERVER_ID: b"\x0a\x4d\x00\x01",
                     codec.LEASE_TIME: bytes(4), codec.RENEWAL_TIME: bytes(4), codec.REBINDING_TIME: bytes(4)}
    if client_id is not None:
        reply.options[codec.CLIENT_ID] = client_id
    first = [c for c in dict.fromkeys(requested) if c in configured]
    extra = [(c, configured[c]) for c in first] + [(c, v) for c, v in sorted(configured.items()) if c not in first]
    data, left_out = codec.encode_reply(reply, max_size=max_size, extra=extra, relay=agent)
    assert len(data) <= max_size - 28
    packet = codec.decode(data)  # our decoder rejects option 52 with value 0, so this also checks RFC 2132 9.3
    for code, value in [*reply.options.items(), *extra]:
        assert (code in left_out) != (packet.options.get(code) == value), code
    if agent is not None:
        assert codec.RELAY_AGENT not in left_out and packet.options[codec.RELAY_AGENT] == agent
        assert fields(data)[0][-1] == (codec.RELAY_AGENT, agent)
    assert not {53, 54, 51, 58, 59} & set(left_out)
    if file_used:
        assert packet.file.rstrip(b"\0") == b"boot.file"
    # Priority: nothing requested is left out while something unrequested is sent.
    unrequested_sent = [c for c in configured if c not in first and c in packet.options]
    if unrequested_sent:
        big_enough = [c for c in first if c in left_out and len(configured[c]) <= min(
            len(configured[u]) for u in unrequested_sent)]
        assert not big_enough


@settings(max_examples=400, deadline=None)
@given(configured=option_sets, requested=st.lists(st.integers(1, 254), max_size=20),
       max_size=st.integers(576, 1500), agent=st.none() | st.binary(min_size=0, max_size=255),
       client_id=st.none() | st.binary(min_size=2, max_size=255), hostname=st.none() | st.binary(max_size=64),
       file_used=st.booleans(), xid=st.integers(0, 2**32 - 1), flags=st.integers(0, 65535),
       addresses=st.lists(st.binary(min_size=4, max_size=4), min_size=3, max_size=3),
       hw=st.binary(min_size=16, max_size=16))
def test_a_template_reply_is_the_bytes_encode_reply_gives(configured: dict[int, bytes], requested: list[int],
                                                          max_size: int, agent: bytes | None,
                                                          client_id: bytes | None, hostname: bytes | None,
                                                          file_used: bool, xid: int, flags: int,
                                                          addresses: list[bytes], hw: bytes) -> None:
    """The server's replies are templates (one per reply type, option 55 and size) with the client's header fields
    and own options put in: every one must be the message encode_reply builds for that client, or None (the server
    then encodes it with encode_reply itself)."""
    head = {codec.MESSAGE_TYPE: b"\x05", codec.SERVER_ID: b"\x0a\x4d\x00\x01", codec.LEASE_TIME: bytes(4),
            codec.RENEWAL_TIME: bytes(4), codec.REBINDING_TIME: bytes(4)}
    siaddr = b"\x0a\x4d\x00\x02"
    file = b"boot.file".ljust(128, b"\0") if file_used else bytes(128)
    first = [c for c in dict.fromkeys(requested) if c in configured]
    extra = [(c, configured[c]) for c in first] + [(c, v) for c, v in sorted(configured.items()) if c not in first]
    template = codec.Template(Packet(op=codec.BOOTREPLY, siaddr=siaddr, file=file, options=dict(head)),
                              max_size=max_size, extra=extra)
    own = [(code, value) for code, value in ((codec.HOSTNAME, hostname), (codec.CLIENT_ID, client_id))
           if value is not None]
    ciaddr, yiaddr, giaddr = addresses
    data = template.reply(xid, flags, ciaddr, yiaddr, giaddr, hw, codec.encode_options(own), agent)
    reply = Packet(op=codec.BOOTREPLY, xid=xid, flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr,
                   giaddr=giaddr, chaddr=hw, file=file, options={**head, **dict(own)})
    expected, left_out = codec.encode_reply(reply, max_size=max_size, extra=extra, relay=agent)
    if data is None:
        assert own or agent is not None  # only the client's own options can make a template not fit
    else:
        assert data == expected
        assert template.left_out == left_out if not own and agent is None else left_out == ()
