"""The ``[provisioning]`` section (the MAC-file rule, uploads) and the ``[[auth]]`` entries."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table
from bootstrapd.provisioning.access import ANY, OWNER
from bootstrapd.provisioning.auth import AuthEntry, is_hashed, parse_hash
from bootstrapd.provisioning.paths import Refused, normalize
from bootstrapd.provisioning.uploads import DEFAULT_PATTERNS, compile_pattern


@dataclass(frozen=True)
class ProvisioningSettings:
    mac_files: str = ANY  # "owner": a phone's own files only to the address leased to that MAC
    uploads: bool = False  # accept phone uploads (TFTP WRQ, HTTP PUT/POST, FTP STOR) into state_dir/uploads
    upload_patterns: tuple[str, ...] = DEFAULT_PATTERNS
    upload_max_size: int = 1 << 20
    upload_total_max_size: int = 256 << 20
    warnings: tuple[str, ...] = ()  # what check-config reports without failing (plain passwords)


def load_provisioning(table: Table, dhcp_enabled: bool) -> ProvisioningSettings:
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
        mac_files=mac_files,
        uploads=table.flag("uploads", False),
        upload_patterns=patterns,
        upload_max_size=table.integer("upload_max_size", 1 << 20, min=0, max=1 << 30),
        upload_total_max_size=table.integer("upload_total_max_size", 256 << 20, min=0),
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
