"""The ``[tftp]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class TftpSettings:
    enabled: bool
    port: int


def load_tftp(table: Table) -> TftpSettings:
    settings = TftpSettings(enabled=table.flag("enabled", False), port=table.integer("port", 69, min=1, max=65535))
    list(table.items())
    table.finish()
    return settings
