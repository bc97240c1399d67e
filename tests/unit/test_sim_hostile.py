"""The simulated phone's parsers and client cores on arbitrary input from the wire: frames round-trip and never
raise; the DHCP, PnP and TFTP clients ignore garbage (no exception, no state change) and go on."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.net.ethernet import internet_checksum, udp4_frame
from bootstrapd.sim import frames
from bootstrapd.sim.dhcp4 import Dhcp4Client
from bootstrapd.sim.dhcp6 import Dhcp6Client
from bootstrapd.sim.pnp import PnpClient
from bootstrapd.sim.tftp import TftpGet, TftpPut

MAC = bytes.fromhex("001565aabbcc")


@given(st.binary(max_size=1400), st.integers(0, 65535), st.integers(0, 65535))
def test_udp_frames_round_trip(payload: bytes, sport: int, dport: int) -> None:
    frame = udp4_frame(MAC, b"\xff" * 6, b"\x0a\x4d\x00\x01", b"\x0a\x4d\x00\x02", sport, dport, payload)
    assert frames.udp_payload(frame) == (payload, sport, dport)
    assert frames.stray_target(frame) == b"\x0a\x4d\x00\x02"
    header = frame[14:34]
    assert internet_checksum(header) == 0  # a valid IPv4 header checksum sums to zero


@given(st.binary(max_size=200))
def test_frame_parsers_never_raise(data: bytes) -> None:
    frames.udp_payload(data)
    frames.stray_target(data)


def test_garp_is_an_arp_request_for_the_address() -> None:
    frame = frames.garp_frame(MAC, b"\x0a\x4d\x00\x64")
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == MAC and frame[12:14] == b"\x08\x06"
    assert frame[28:32] == frame[38:42] == b"\x0a\x4d\x00\x64"
    assert frames.stray_target(frame) == b"\x0a\x4d\x00\x64"


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=600), max_size=5))
def test_clients_ignore_garbage(datagrams: list[bytes]) -> None:
    dhcp = Dhcp4Client(MAC, random.Random(1))
    dhcp.start(0.0)
    reboot = Dhcp4Client(MAC, random.Random(1), previous=IPv4Address("10.77.0.100"))
    reboot.start(0.0)
    dhcp6 = Dhcp6Client(MAC, random.Random(1))
    dhcp6.start(0.0)
    pnp = PnpClient("001565aabbcc", "T46U", "108.86.0.90", "10.77.0.100", random.Random(1))
    pnp.start(0.0)
    get = TftpGet("sip.cfg")
    get.start(0.0)
    put = TftpPut("x-local.cfg", payload=b"data")
    put.start(0.0)
    for data in datagrams:
        dhcp.receive(data, 0.1)
        reboot.receive(data, 0.1)
        dhcp6.receive(data, 0.1)
        pnp.receive(data, ("10.77.0.1", 5060), 0.1)
        get.receive(data, 50000, 0.1)
        put.receive(data, 50000, 0.1)
    assert dhcp.state == "selecting" and reboot.state == "rebooting"
    assert dhcp6.state == "soliciting" and pnp.state == "subscribing"
    # A TFTP client may take a well-formed ERROR/DATA/OACK from the first port it hears: garbage never breaks it.
    assert get.result is None or get.result.status in ("ok", "not-found", "refused", "error")
