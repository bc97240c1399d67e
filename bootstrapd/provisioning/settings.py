"""The ``[provisioning]`` section: the inventory, how templates are watched, and ``[provisioning.encrypt]``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bootstrapd.configfile import Table
from bootstrapd.provisioning.yealink_aes import key_problem


@dataclass(frozen=True)
class EncryptSettings:
    common: bool = False  # Yealink AES for common CFG files (every .cfg but <mac>.cfg and <mac>-local.cfg) ...
    mac: bool = False  # ... and for <mac>.cfg
    key_files: bool = True  # serve <name>_Security.enc beside every encrypted file
    common_key: str = field(default="", repr=False)  # "" = generated per file from state_dir's secret
    mac_key: str = field(default="", repr=False)

    @property
    def enabled(self) -> bool:
        return self.common or self.mac


@dataclass(frozen=True)
class ProvisioningSettings:
    inventory: Path | None = None  # relative to the configuration file's folder
    watch_interval: float = 2.0  # seconds between looks at the inventory and templates; 0 = only on SIGHUP
    server_names: tuple[str, ...] = ()  # other host names phones use for this server (check, explain)
    encrypt: EncryptSettings = field(default_factory=EncryptSettings)


def _load_encrypt(table: Table) -> EncryptSettings:
    settings = EncryptSettings(
        common=table.flag("common", False),
        mac=table.flag("mac", False),
        key_files=table.flag("key_files", True),
        common_key=table.text("common_key", ""),
        mac_key=table.text("mac_key", ""),
    )
    for key, value, used in (("common_key", settings.common_key, settings.common),
                             ("mac_key", settings.mac_key, settings.mac)):
        if value:
            problem = key_problem(value)
            if problem:
                raise table.error(key, f"an AES key {problem}")  # the key itself is never shown
        elif used and not settings.key_files:
            raise table.error(key, "is required with key_files = false: phones cannot learn a generated key")
    table.finish()
    return settings


def load_provisioning(table: Table, root: Path, config_file: str) -> ProvisioningSettings:
    inventory: Path | None = None
    text = table.text("inventory", "")
    if text:
        inventory = Path(text)
        if not inventory.is_absolute():
            inventory = Path(os.path.dirname(os.path.abspath(config_file))) / inventory
        real_root = os.path.realpath(root)
        real = os.path.realpath(inventory)
        if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
            raise table.error("inventory", f"{inventory} is inside server.root: it would be served to anyone "
                                           f"(it holds the phones' accounts)")
    names = table.text_list("server_names", [])
    for name in names:
        if not name or any(c in name for c in "/ ") or any(ord(c) < 0x21 for c in name):
            raise table.error("server_names", f"{name!r} is not a host name")
    settings = ProvisioningSettings(
        inventory=inventory,
        watch_interval=table.number("watch_interval", 2.0, min=0),
        server_names=tuple(names),
        encrypt=_load_encrypt(table.table("encrypt")),
    )
    table.finish()
    return settings
