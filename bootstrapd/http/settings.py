"""The ``[http]`` section. The HTTP(S) server is not part of this version: the section is read so that files
written for it load, but enabling it is an error rather than a silent no-op."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool
    port: int


def load_http(table: Table) -> HttpSettings:
    settings = HttpSettings(enabled=table.flag("enabled", False), port=table.integer("port", 80, min=1, max=65535))
    if settings.enabled:
        raise table.error("enabled", "the HTTP server is not available in this version of bootstrapd; use TFTP")
    table.finish()
    return settings
