"""The ``[ftp]`` section: the provisioning tree over FTP, passive mode only."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class FtpSettings:
    enabled: bool = False
    port: int = 21
    passive_ports: tuple[int, int] = (30000, 30099)  # first, last: data connections listen here only
    anonymous: bool = True  # anonymous (or "ftp") login sees the tree minus the [[auth]] folders
    idle_timeout: float = 60.0  # seconds without a command before the control connection is closed
    data_timeout: float = 30.0  # seconds a data connection may stall (and to wait for it to be opened)
    transfer_timeout: float = 600.0  # seconds one transfer may last at most
    max_connections: int = 256
    max_connections_per_client: int = 4
    login_fail_delay: float = 1.0  # seconds before answering a wrong password
    max_command_size: int = 1024  # bytes of one command line


def _ports(value: object) -> tuple[int, int]:
    if not isinstance(value, str) or value.count("-") != 1:
        raise ValueError("must be a range \"first-last\", e.g. \"30000-30099\"")
    first, last = (int(x) for x in value.split("-"))
    if not 1024 <= first <= last <= 65535:
        raise ValueError("ports must be 1024-65535, first <= last")
    return first, last


def load_ftp(table: Table) -> FtpSettings:
    settings = FtpSettings(
        enabled=table.flag("enabled", False),
        port=table.integer("port", 21, min=1, max=65535),
        passive_ports=table.parse("passive_ports", _ports, (30000, 30099), "a port range"),
        anonymous=table.flag("anonymous", True),
        idle_timeout=table.number("idle_timeout", 60.0, min=1),
        data_timeout=table.number("data_timeout", 30.0, min=1),
        transfer_timeout=table.number("transfer_timeout", 600.0, min=1),
        max_connections=table.integer("max_connections", 256, min=1, max=100_000),
        max_connections_per_client=table.integer("max_connections_per_client", 4, min=1),
        login_fail_delay=table.number("login_fail_delay", 1.0, min=0),
        max_command_size=table.integer("max_command_size", 1024, min=128, max=65536),
    )
    table.finish()
    return settings
