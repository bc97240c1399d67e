"""Configuration: typed values, and errors that name the file, the line and the key."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bootstrapd.config import ConfigError, load, loads

GOOD = """
[server]
interface = "eth1"

[dhcp4]
range = "10.77.0.100-10.77.0.199"

[dhcp4.options]
66 = "tftp://10.77.0.1/"
150 = "hex:0a 4d 00 01"
43 = { 1 = "http://acs/" }

[[dhcp4.host]]
mac = "00-15-65-AA-BB-CC"
address = "10.77.0.50"
"""


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        loads(text, "f.toml")
    return info.value


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_the_reference_file_loads() -> None:
    settings = load(Path(__file__).resolve().parents[2] / "configs" / "bootstrapd.toml")
    assert settings.server.interface == "eth1"
    assert settings.dhcp4.range_start == IPv4Address("10.77.0.100")


def test_the_lab_file_loads() -> None:
    assert load(Path(__file__).resolve().parents[2] / "configs" / "lab.toml").dhcp4.enabled


def test_values_are_typed() -> None:
    settings = loads(GOOD)
    assert settings.dhcp4.options[150] == bytes((10, 77, 0, 1))
    assert settings.dhcp4.options[43] == b"\x01\x0bhttp://acs/"
    assert settings.dhcp4.options[66] == b"tftp://10.77.0.1/"
    assert settings.dhcp4.hosts[0].mac == bytes.fromhex("001565aabbcc")
    assert {c.name for c in settings.dhcp4.classes} >= {"yealink"}


def test_option_66_defaults_to_the_server_url() -> None:
    settings = loads(GOOD.replace('66 = "tftp://10.77.0.1/"\n', "").replace('interface = "eth1"',
                                                                            'interface = "eth1"\nurl = "http://x/"'))
    assert settings.dhcp4.options[66] == b"http://x/"


@pytest.mark.parametrize(("change", "needle", "key", "message"), [
    (('lease_time = 3600', 'lease_time = "1h"'), 'lease_time = "1h"', "dhcp4.lease_time", "must be a whole number"),
    (('range = "10.77.0.100-10.77.0.199"', 'range = "10.77.0.199-10.77.0.100"'), "range =", "dhcp4.range",
     "comes before"),
    (("150 = ", "51 = "), "51 = ", "dhcp4.options.51", "set by the server itself"),
    (("150 = ", "300 = "), "300 = ", "dhcp4.options.300", "outside 1-254"),
    (('"hex:0a 4d 00 01"', '"hex:zz"'), "hex:zz", "dhcp4.options.150", "not valid hex"),
    (('mac = "00-15-65-AA-BB-CC"', 'mac = "nope"'), 'mac = "nope"', "dhcp4.host[0].mac", "not a MAC address"),
    (('address = "10.77.0.50"', 'adress = "10.77.0.50"'), "adress", "dhcp4.host[0].address", "is required"),
    (('[dhcp4]', '[dhcp4]\nleasetime = 5'), "leasetime", "dhcp4.leasetime", "unknown key"),
    (('interface = "eth1"', 'interface = 3'), "interface = 3", "server.interface", "must be a string"),
])
def test_errors_name_file_line_and_key(change: tuple[str, str], needle: str, key: str, message: str) -> None:
    text = GOOD.replace("[dhcp4]", "[dhcp4]\nlease_time = 3600", 1).replace(*change)
    exc = error(text)
    assert exc.key == key
    assert message in exc.message
    assert exc.file == "f.toml"
    if key.endswith("address") and "required" in message:
        assert exc.line == line_of(text, "[[dhcp4.host]]")
    else:
        assert exc.line == line_of(text, needle)
    assert str(exc).startswith(f"f.toml:{exc.line}: {key}: ")


def test_missing_interface_and_broken_toml() -> None:
    assert error("[dhcp4]\nrange = \"10.0.0.1-10.0.0.2\"\n").key == "server.interface"
    broken = error('[server]\ninterface = "eth1\n')
    assert broken.line == 2 and "not valid TOML" in broken.message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "missing.toml")
    assert "cannot read" in str(info.value)


def test_every_setting_is_documented_in_the_reference_file() -> None:
    """Each settings field appears as a key (set or commented) in configs/bootstrapd.toml."""
    import dataclasses
    import re

    from bootstrapd.config import ServerSettings
    from bootstrapd.dhcp4.settings import ClientClass, Dhcp4Settings, Host4
    from bootstrapd.dhcp6.settings import Class6, Dhcp6Settings
    from bootstrapd.ftp.settings import FtpSettings
    from bootstrapd.http.settings import HttpSettings
    from bootstrapd.journal.settings import CaptureSettings, JournalSettings, StatusSettings
    from bootstrapd.leases.settings import StoreSettings
    from bootstrapd.pnp.settings import PnpRule, PnpSettings
    from bootstrapd.provisioning.auth import AuthEntry
    from bootstrapd.provisioning.settings import EncryptSettings, ProvisioningSettings
    from bootstrapd.tftp.settings import TftpSettings

    text = (Path(__file__).resolve().parents[2] / "configs" / "bootstrapd.toml").read_text()
    keys = {"range_start": "range", "range_end": "range", "hosts": "dhcp4.host", "rules": "pnp.rule",
            "prefix": "path"}
    derived = {"warnings", "ftp", "provisioning", "auth", "store"}  # not keys: computed, or whole sections
    for cls in (ServerSettings, Dhcp4Settings, Host4, ClientClass, Dhcp6Settings, Class6, PnpSettings, PnpRule,
                TftpSettings, HttpSettings, FtpSettings, ProvisioningSettings, EncryptSettings, AuthEntry,
                JournalSettings, CaptureSettings, StatusSettings, StoreSettings):
        for field in dataclasses.fields(cls):
            if field.name in derived:
                continue
            key = keys.get(field.name, field.name)
            assert re.search(rf"\b{re.escape(key)}\b", text), f"{cls.__name__}.{field.name} ({key}) is not documented"
