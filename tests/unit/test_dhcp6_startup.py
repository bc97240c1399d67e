"""The daemon's IPv6 start-up check for DHCPv6, and the server DUID the adapter creates."""

from __future__ import annotations

from ipaddress import IPv6Interface

import pytest

from bootstrapd import config
from bootstrapd.daemon import StartupError, check_interface
from bootstrapd.dhcp6.adapter import make_duid
from bootstrapd.dhcp6.codec import duid_mac
from bootstrapd.net.interfaces import Interface
from tests.unit.test_dhcp6_server import full_settings


def _settings(range_: str = "fd77::100-fd77::1ff") -> config.Settings:
    return full_settings(f'range = "{range_}"')


def _iface(*addresses: str) -> Interface:
    return Interface("eth1", 3, bytes.fromhex("027700000001"), 1500, True, (),
                     tuple(IPv6Interface(a) for a in addresses))


def test_good_interface_passes() -> None:
    check_interface(_settings(), _iface("fd77::1/64", "fe80::77:ff:fe00:1/64"))


@pytest.mark.parametrize("addresses, range_, message", [
    (("fd77::1/64",), "fd77::100-fd77::1ff", "no IPv6 link-local"),
    (("fe80::1/64",), "fd77::100-fd77::1ff", r"not inside a prefix .*\(none\)"),
    (("fd78::1/64", "fe80::1/64"), "fd77::100-fd77::1ff", "not inside a prefix"),
    (("fd77::1/120", "fe80::1/64"), "fd77::100-fd77::1ff", "not inside a prefix"),
    (("fd77::150/64", "fe80::1/64"), "fd77::100-fd77::1ff", "own address fd77::150"),
])
def test_bad_interface_is_refused(addresses: tuple[str, ...], range_: str, message: str) -> None:
    with pytest.raises(StartupError, match=message):
        check_interface(_settings(range_), _iface(*addresses))


def test_server_duid() -> None:
    mac = bytes.fromhex("027700000001")
    duid = make_duid(mac, 946684800 + 1000)
    assert duid == b"\x00\x01\x00\x01" + (1000).to_bytes(4, "big") + mac  # DUID-LLT
    assert duid_mac(duid) == mac
    assert make_duid(mac, 0) == b"\x00\x03\x00\x01" + mac  # clock before 2000: DUID-LL
    assert make_duid(b"\x00" * 6, 946684800 + 1000)[:2] == b"\x00\x04"  # no MAC: DUID-UUID
