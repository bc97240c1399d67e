"""Values from the wire are kept and echoed only within the protocol's limits (issue #8 item 10): a DHCPv4 option
the server keeps or echoes is one instance of at most 255 bytes (RFC 3396 concatenation is not meant for them), text
that is stored has no control characters, a DHCPv6 IA holds a bounded number of addresses."""

from __future__ import annotations

import pytest

from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp4.codec import Dhcp4Error, Packet
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import dora, mac, make_server

SRC = ("0.0.0.0", 68)


def raw_message(kind: int, hw: bytes, options: bytes) -> bytes:
    """A client message with options given as raw TLVs (so a test can repeat one code)."""
    header = codec.encode(Packet(op=codec.BOOTREQUEST, xid=1, chaddr=hw.ljust(16, b"\0")))[:240]
    return header + bytes((codec.MESSAGE_TYPE, 1, kind)) + options + bytes((codec.END,))


def repeated(code: int, total: int) -> bytes:
    chunks = []
    for offset in range(0, total, 255):
        size = min(255, total - offset)
        chunks.append(bytes((code, size)) + b"x" * size)
    return b"".join(chunks)


@pytest.mark.parametrize("code", [codec.CLIENT_ID, codec.VENDOR_CLASS, codec.HOSTNAME, codec.USER_CLASS,
                                  codec.RELAY_AGENT, codec.PARAM_LIST])
def test_a_concatenated_value_over_255_bytes_of_a_kept_or_echoed_option_is_malformed(code: int) -> None:
    data = raw_message(codec.DISCOVER, mac(1), repeated(code, 60_000 // 255 * 255 // 4))
    with pytest.raises(Dhcp4Error, match=f"option {code} of"):
        codec.decode(data)
    with pytest.raises(Dhcp4Error):
        make_server().handle(data, SRC, at(1000.0))  # dropped and counted as malformed by the endpoint


def test_a_255_byte_client_identifier_is_kept_and_echoed_whole() -> None:
    server = make_server()
    client_id = b"\x00" + b"i" * 254
    data = raw_message(codec.DISCOVER, mac(1), bytes((codec.CLIENT_ID, 255)) + client_id)
    reply = server.handle(data, SRC, at(1000.0))
    assert reply is not None and reply.data is not None
    assert codec.decode(reply.data).options[codec.CLIENT_ID] == client_id


def test_options_the_server_does_not_keep_may_still_be_concatenated() -> None:
    """RFC 3396 is for options like 124/125: those are read whole."""
    packet = codec.decode(raw_message(codec.DISCOVER, mac(1), repeated(125, 600)))
    assert packet.options[125] == b"x" * 600


def test_stored_text_has_no_control_characters() -> None:
    server = make_server()
    dora(server, mac(1), options={codec.HOSTNAME: b"desk\r\nInjected: yes\x1b[31m",
                                  codec.VENDOR_CLASS: b"yealink\nEvil\x00"})
    binding = server.lease_for(mac(1))
    assert binding is not None
    lease = server._lease(binding)
    assert lease.hostname == "desk??Injected: yes?[31m"
    assert lease.vendor_class == "yealink?Evil"
