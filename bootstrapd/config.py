"""The TOML configuration file -> typed, validated settings.

Each service owns the schema of its own section (``bootstrapd/<service>/settings.py``); this module reads the file,
the ``[server]`` section, and hands every other section to its loader. A :class:`ConfigError` names the file, the
line and the key at fault; the CLI turns it into exit status 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from bootstrapd import cpus
from bootstrapd.configfile import ConfigError, Source, Table
from bootstrapd.dhcp4.settings import Dhcp4Settings, load_dhcp4
from bootstrapd.dhcp6.settings import Dhcp6Settings, load_dhcp6
from bootstrapd.ftp.settings import FtpSettings, load_ftp
from bootstrapd.http.settings import HttpSettings, load_http
from bootstrapd.journal.settings import (
    CaptureSettings,
    JournalSettings,
    StatusSettings,
    load_capture,
    load_journal,
    load_status,
)
from bootstrapd.leases.settings import StoreSettings, load_store
from bootstrapd.pnp.settings import PnpSettings, load_pnp
from bootstrapd.provisioning.auth import AuthEntry
from bootstrapd.provisioning.settings import ProvisioningSettings, load_auth, load_provisioning
from bootstrapd.tftp.settings import TftpSettings, load_tftp

__all__ = ["ConfigError", "ServerSettings", "Settings", "load", "loads"]


@dataclass(frozen=True)
class ServerSettings:
    interface: str
    root: Path
    state_dir: Path
    url: str  # template: {ipv4} / {ipv6} become the interface's addresses
    cpu: cpus.Setting = cpus.AUTO  # where the event loop and its writer threads run (bootstrapd.cpus)


@dataclass(frozen=True)
class Settings:
    file: str
    server: ServerSettings
    dhcp4: Dhcp4Settings
    dhcp6: Dhcp6Settings
    pnp: PnpSettings
    tftp: TftpSettings
    http: HttpSettings
    provisioning: ProvisioningSettings
    ftp: FtpSettings = field(default_factory=FtpSettings)
    auth: tuple[AuthEntry, ...] = ()
    journal: JournalSettings = field(default_factory=JournalSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    store: StoreSettings = field(default_factory=StoreSettings)

    @property
    def warnings(self) -> tuple[str, ...]:
        """What check-config reports without failing."""
        return self.provisioning.warnings


def _load_server(table: Table) -> ServerSettings:
    interface = table.text("interface")
    if not interface or len(interface) > 15 or "/" in interface or " " in interface:
        raise table.error("interface", f"{interface!r} is not a valid interface name")
    settings = ServerSettings(
        interface=interface,
        root=Path(table.text("root", "/srv/bootstrapd")),
        state_dir=Path(table.text("state_dir", "/var/lib/bootstrapd")),
        url=table.text("url", "tftp://{ipv4}/"),
        cpu=table.parse("cpu", cpus.parse, cpus.AUTO),
    )
    table.finish()
    return settings


def _from_source(source: Source) -> Settings:
    root = source.root()
    server = _load_server(root.table("server"))
    dhcp4 = load_dhcp4(root.table("dhcp4"), server.url)
    dhcp6 = load_dhcp6(root.table("dhcp6"))
    provisioning = load_provisioning(root.table("provisioning"), server.root, source.file,
                                     dhcp4.enabled or dhcp6.enabled)
    auth, warnings = load_auth(root.tables("auth"))
    settings = Settings(
        file=source.file,
        server=server,
        dhcp4=dhcp4,
        dhcp6=dhcp6,
        pnp=load_pnp(root.table("pnp"), server.url),
        # The TFTP core caps a WRQ by the one upload store's per-file size.
        tftp=replace(load_tftp(root.table("tftp")), upload_max_size=provisioning.upload_max_size),
        http=load_http(root.table("http")),
        ftp=load_ftp(root.table("ftp")),
        provisioning=replace(provisioning, warnings=warnings),
        auth=auth,
        journal=load_journal(root.table("journal")),
        capture=load_capture(root.table("capture")),
        status=load_status(root.table("status")),
        store=load_store(root.table("store")),
    )
    root.finish()
    return settings


def load(path: str | Path) -> Settings:
    """Read and validate a configuration file; raises ConfigError."""
    return _from_source(Source.read(path))


def loads(text: str, file: str = "<string>") -> Settings:
    return _from_source(Source(file, text))
