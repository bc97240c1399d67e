"""The ``[dhcp6]`` section."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class Dhcp6Settings:
    enabled: bool


def load_dhcp6(table: Table) -> Dhcp6Settings:
    settings = Dhcp6Settings(enabled=table.flag("enabled", False))
    # Keys this version does not use yet are accepted so that files written for the full schema load.
    list(table.items())
    table.finish()
    return settings
