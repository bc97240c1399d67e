"""The ``[pnp]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class PnpSettings:
    enabled: bool
    url: str


def load_pnp(table: Table, server_url: str) -> PnpSettings:
    settings = PnpSettings(enabled=table.flag("enabled", False), url=table.text("url", server_url))
    list(table.items())
    table.finish()
    return settings
