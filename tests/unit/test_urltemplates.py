"""URL templates are expanded in one place, from the interface, for every URL handed out (issue #8 item 2)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path

import pytest

from bootstrapd import cli
from bootstrapd.config import ConfigError, loads
from bootstrapd.dhcp4.server import Dhcp4Server
from bootstrapd.dhcp6 import codec as codec6
from bootstrapd.dhcp6.server import Dhcp6Server
from bootstrapd.dhcpconf import Text
from bootstrapd.net.interfaces import Interface
from bootstrapd.pnp import urls
from bootstrapd.urltemplates import expand, interface_variables
from tests.unit import test_dhcp6_server as v6
from tests.unit.dhcp4_helpers import dora, mac

IFACE = Interface(
    name="eth1", index=2, mac=bytes.fromhex("027700000001"), mtu=1500, up=True,
    ipv4=(IPv4Interface("192.0.2.1/24"), IPv4Interface("10.77.0.1/24")),
    ipv6=(IPv6Interface("fe80::77:1/64"), IPv6Interface("2001:db8::1/64"), IPv6Interface("fd77::1/64")),
)

CONFIG = """
[server]
interface = "eth1"
url = "tftp://{ipv4}/"
[dhcp4]
range = "10.77.0.100-10.77.0.110"
[dhcp4.options]
160 = "http://{ipv4}/p160/"
43 = { 1 = "http://{ipv4}:7547/", 2 = "plain" }
[dhcp4.class.yealink.options]
161 = "http://{ipv4}/yealink/$PN/{mac}"
[[dhcp4.host]]
mac = "02:00:00:00:00:09"
address = "10.77.0.9"
[dhcp4.host.options]
162 = "tftp://{ipv4}/host/"
[dhcp6]
enabled = true
range = "fd77::100-fd77::1ff"
force_bootfile_url = true
[dhcp6.options]
300 = "http://[{ipv6}]/300/"
[dhcp6.vendor_options]
4491 = { 1 = "http://[{ipv6}]/vendor/" }
[pnp]
enabled = true
"""


def test_the_addresses_come_from_the_served_subnet_and_prefix() -> None:
    settings = loads(CONFIG)
    variables = interface_variables(IFACE, settings.dhcp4.range_start, settings.dhcp6.range_start)
    assert variables == {"ipv4": "10.77.0.1", "ipv6": "fd77::1", "interface": "eth1"}
    # Without a served range: the first address (the global IPv6 one before the link-local one).
    assert interface_variables(IFACE) == {"ipv4": "192.0.2.1", "ipv6": "2001:db8::1", "interface": "eth1"}


def test_unknown_placeholders_and_yealink_wildcards_pass_through() -> None:
    assert expand("http://{ipv4}/$PN/{mac}/{x}", {"ipv4": "10.0.0.1"}) == "http://10.0.0.1/$PN/{mac}/{x}"


def test_default_option_66_is_server_url_expanded_like_every_dhcp4_template() -> None:
    settings = loads(CONFIG)
    assert settings.dhcp4.options[66] == Text("tftp://{ipv4}/")  # kept as a template until the server starts
    variables = interface_variables(IFACE, settings.dhcp4.range_start, settings.dhcp6.range_start)
    server = Dhcp4Server(settings.dhcp4, IPv4Address("10.77.0.1"), IPv4Network("10.77.0.0/24"), variables=variables)
    options = dora(server, mac(1)).options
    assert options[66] == b"tftp://10.77.0.1/"
    assert options[160] == b"http://10.77.0.1/p160/"
    assert options[43] == b"\x01\x16http://10.77.0.1:7547/\x02\x05plain"  # sub-option lengths after expansion
    yealink = dora(server, mac(2, "00:15:65")).options
    assert yealink[161] == b"http://10.77.0.1/yealink/$PN/{mac}"
    host = dora(server, mac(9)).options
    assert host[162] == b"tftp://10.77.0.1/host/"
    # A reload re-renders with the (same) interface.
    server.configure(loads(CONFIG.replace("/p160/", "/reloaded/")).dhcp4, variables)
    assert dora(server, mac(3)).options[160] == b"http://10.77.0.1/reloaded/"


def test_dhcp6_option_59_options_and_vendor_options_are_expanded() -> None:
    settings = loads(CONFIG)
    variables = interface_variables(IFACE, settings.dhcp4.range_start, settings.dhcp6.range_start)
    srv = Dhcp6Server(settings.dhcp6, v6.SERVER_DUID, [], variables=variables,
                      link_prefixes=[IPv6Network("fd77::/64")])
    reply, _ = v6.handle(srv, v6.msg(codec6.INFORMATION_REQUEST, v6.YEALINK))
    assert reply.get(codec6.OPT_BOOTFILE_URL) == b"tftp://[fd77::1]/"
    assert reply.get(300) == b"http://[fd77::1]/300/"
    vendor = reply.get(codec6.OPT_VENDOR_OPTS)
    assert vendor is not None
    assert codec6.decode_vendor_opts(vendor) == (4491, [(1, b"http://[fd77::1]/vendor/")])


def test_pnp_url_uses_the_same_expansion() -> None:
    settings = loads(CONFIG)
    variables = interface_variables(IFACE, settings.dhcp4.range_start, settings.dhcp6.range_start)
    url = urls.expand(settings.pnp.url, variables, mac="001565aabbcc", vendor="Yealink", model="T46U")
    assert url == "tftp://10.77.0.1/"


def test_a_sub_option_that_could_outgrow_255_bytes_once_expanded_is_refused() -> None:
    long = "x" * 240
    with pytest.raises(ConfigError) as info:
        loads(CONFIG.replace('2 = "plain"', f'2 = "http://[{{ipv6}}]/{long}"'))
    assert "longer than 255 bytes" in str(info.value) and info.value.key == "dhcp4.options.43"


def _check_config(tmp_path: Path, text: str, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "b.toml"
    path.write_text(text)
    assert cli.main(["check-config", "--config", str(path), *args]) == 0
    return capsys.readouterr().out


def test_check_config_prints_the_effective_urls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "lo" exists in every network namespace: its addresses fill the templates.
    out = _check_config(tmp_path, CONFIG.replace('interface = "eth1"', 'interface = "lo"'), capsys=capsys)
    assert "OK" in out and "with the addresses of lo" in out
    assert "dhcp4.options.66" in out and "tftp://127.0.0.1/  (tftp://{ipv4}/)" in out
    assert "dhcp4.options.43.1" in out and "http://127.0.0.1:7547/" in out
    assert "dhcp6.bootfile_url" in out and "pnp.url" in out
    data = json.loads(_check_config(tmp_path, CONFIG.replace('interface = "eth1"', 'interface = "lo"'), "--json",
                                    capsys=capsys))
    by_key = {u["key"]: u for u in data["urls"]}
    assert data["expanded"] is True
    assert by_key["dhcp4.class.yealink.options.161"]["value"] == "http://127.0.0.1/yealink/$PN/{mac}"
    assert by_key["dhcp6.vendor_options.4491.1"]["template"] == "http://[{ipv6}]/vendor/"


def test_check_config_shows_templates_when_the_interface_is_not_here(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = _check_config(tmp_path, CONFIG.replace('interface = "eth1"', 'interface = "bdtnosuch0"'), capsys=capsys)
    assert "as templates" in out and "no interface 'bdtnosuch0' here" in out
    assert "tftp://{ipv4}/" in out
