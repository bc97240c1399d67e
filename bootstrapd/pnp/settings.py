"""The ``[pnp]`` section: the URL phones are sent to, per-phone rules, and the transaction limits."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class PnpRule:
    """First matching rule wins; an unset criterion matches anything."""

    vendor: str | None = None  # fnmatch pattern, case-insensitive ("yealink", "snom*")
    model: str | None = None  # fnmatch pattern, case-insensitive ("T4*", "W52P")
    mac_prefix: str | None = None  # hex digits the MAC starts with, separators ignored ("00:15:65")
    url: str | None = None
    refuse: bool = False


@dataclass(frozen=True)
class PnpSettings:
    enabled: bool
    url: str
    port: int = 5060
    source_port: int = 0
    max_pending: int = 10000
    max_pending_per_source: int = 8
    max_message_size: int = 2048
    rules: tuple[PnpRule, ...] = ()


def normalise_mac_prefix(text: str) -> str:
    digits = "".join(ch for ch in text if ch not in ":-. ").lower()
    if not digits or len(digits) > 12 or any(ch not in "0123456789abcdef" for ch in digits):
        raise ValueError(f"{text!r} is not a MAC prefix (hex digits, 12 at most)")
    return digits


def _load_rule(table: Table) -> PnpRule:
    rule = PnpRule(
        vendor=table.text("vendor", None),
        model=table.text("model", None),
        mac_prefix=table.parse("mac_prefix", normalise_mac_prefix, None, "hex digits such as \"00:15:65\""),
        url=table.text("url", None),
        refuse=table.flag("refuse", False),
    )
    if rule.refuse and rule.url is not None:
        raise table.error("refuse", "a rule either refuses or gives a url, not both")
    if not rule.refuse and rule.url is None:
        raise table.error("url", "is required (or refuse = true)")
    table.finish()
    return rule


def load_pnp(table: Table, server_url: str) -> PnpSettings:
    settings = PnpSettings(
        enabled=table.flag("enabled", False),
        url=table.text("url", server_url),
        port=table.integer("port", 5060, min=1, max=65535),
        source_port=table.integer("source_port", 0, min=0, max=65535),
        max_pending=table.integer("max_pending", 10000, min=1, max=1_000_000),
        max_pending_per_source=table.integer("max_pending_per_source", 8, min=1, max=1_000_000),
        max_message_size=table.integer("max_message_size", 2048, min=512, max=65535),
        rules=tuple(_load_rule(t) for t in table.tables("rule")),
    )
    table.finish()
    return settings
