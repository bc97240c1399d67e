"""The ``[http]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool
    port: int


def load_http(table: Table) -> HttpSettings:
    settings = HttpSettings(enabled=table.flag("enabled", False), port=table.integer("port", 80, min=1, max=65535))
    list(table.items())
    table.finish()
    return settings
