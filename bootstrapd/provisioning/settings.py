"""The ``[provisioning]`` section (inventory, templates, ``[provisioning.encrypt]``, the MAC-file rule, uploads) and
the ``[[auth]]`` entries."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bootstrapd.configfile import Table
from bootstrapd.provisioning.access import ANY, OWNER
from bootstrapd.provisioning.auth import AuthEntry, is_hashed, parse_hash
from bootstrapd.provisioning.paths import Refused, normalize
from bootstrapd.provisioning.uploads import DEFAULT_PATTERNS, compile_pattern
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
    mac_files: str = ANY  # "owner": a phone's own files only to the address leased to that MAC
    uploads: bool = False  # accept phone uploads (TFTP WRQ, HTTP PUT/POST, FTP STOR) into state_dir/uploads
    upload_patterns: tuple[str, ...] = DEFAULT_PATTERNS
    upload_max_size: int = 1 << 20
    upload_total_max_size: int = 256 << 20
    max_uploads: int = 16  # HTTP and FTP uploads received at once (each in memory up to upload_max_size)
    warnings: tuple[str, ...] = ()  # what check-config reports without failing (plain passwords)


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


def load_provisioning(table: Table, root: Path, config_file: str, dhcp_enabled: bool = False) -> ProvisioningSettings:
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
    mac_files = table.text("mac_files", OWNER if dhcp_enabled else ANY)
    if mac_files not in (OWNER, ANY):
        raise table.error("mac_files", f'must be "{OWNER}" or "{ANY}", not {mac_files!r}')
    patterns = tuple(table.text_list("upload_patterns", list(DEFAULT_PATTERNS)))
    for pattern in patterns:
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise table.error("upload_patterns", str(exc)) from None
    settings = ProvisioningSettings(
        inventory=inventory,
        watch_interval=table.number("watch_interval", 2.0, min=0),
        server_names=tuple(names),
        encrypt=_load_encrypt(table.table("encrypt")),
        mac_files=mac_files,
        uploads=table.flag("uploads", False),
        upload_patterns=patterns,
        upload_max_size=table.integer("upload_max_size", 1 << 20, min=0, max=1 << 30),
        upload_total_max_size=table.integer("upload_total_max_size", 256 << 20, min=0),
        max_uploads=table.integer("max_uploads", 16, min=1, max=100_000),
    )
    table.finish()
    return settings


def load_auth(tables: list[Table]) -> tuple[tuple[AuthEntry, ...], tuple[str, ...]]:
    """The ``[[auth]]`` entries, and a warning for each password given in plain text."""
    entries: list[AuthEntry] = []
    warnings: list[str] = []
    for table in tables:
        path = table.text("path")
        stripped = path.strip("/")
        try:
            prefix = normalize(stripped) if stripped else ()
        except Refused as exc:
            raise table.error("path", f"{path!r} is not a folder of the tree ({exc.reason.value})") from None
        if not prefix:
            raise table.error("path", "must name a folder of the tree, not the root")
        user = table.text("user")
        if not user or any(ord(c) < 0x21 or ord(c) == 0x7F for c in user) or ":" in user:
            raise table.error("user", "must be non-empty, without spaces, control characters or ':'")
        if user.lower() in ("anonymous", "ftp"):
            raise table.error("user", f"{user!r} is the anonymous FTP login")
        password = table.text("password")
        if not password:
            raise table.error("password", "must not be empty")
        if is_hashed(password):
            try:
                parse_hash(password)
            except ValueError as exc:
                raise table.error("password", str(exc)) from None
        else:
            warnings.append(str(table.error("password", "is plain text: store a hash from "
                                                       "`bootstrapd hash-password` instead")))
        for other in entries:
            if other.prefix == prefix:
                raise table.error("path", f"{path!r} has an [[auth]] entry already")
            if other.user == user:
                raise table.error("user", f"{user!r} has an [[auth]] entry already (one folder per user)")
        table.finish()
        entries.append(AuthEntry(prefix, user, password))
    return tuple(entries), tuple(warnings)
