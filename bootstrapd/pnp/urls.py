"""Which URL a phone is sent to: the ``[[pnp.rule]]`` list, then ``pnp.url``; and filling in the placeholders.

A template may use ``{mac}`` (12 lower-case hex digits), ``{model}``, ``{vendor}``, ``{ipv4}``, ``{ipv6}``. Unknown
braces and Yealink's own wildcards ``$PN`` / ``$MAC`` stay as they are: the phone substitutes those itself. Model and
vendor come from the phone's SUBSCRIBE, so they are percent-encoded before they enter a URL.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from urllib.parse import quote

from bootstrapd import urltemplates
from bootstrapd.pnp.settings import PnpRule

_HEX = set("0123456789abcdef")


def mac_from_user(user: str | None) -> str | None:
    """The MAC in a Request-URI user part: ``MAC``, ``MAC:``, ``MAC=``, ``MAC%3a``, ``MAC%3A`` + 12 hex digits."""
    if not user or user[:3].upper() != "MAC":
        return None
    rest = user[3:]
    for prefix in (":", "=", "%3a", "%3A"):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    digits = rest.replace("%3a", "").replace("%3A", "").replace(":", "").replace("-", "").lower()
    if len(digits) != 12 or not set(digits) <= _HEX:
        return None
    return digits


def _matches(pattern: str | None, value: str | None) -> bool:
    if pattern is None:
        return True
    return value is not None and fnmatchcase(value.lower(), pattern.lower())


def select(rules: tuple[PnpRule, ...], default: str, *, vendor: str | None, model: str | None,
           mac: str | None) -> str | None:
    """The URL template for this phone, or None when a rule refuses it (no answer at all)."""
    for rule in rules:
        if not _matches(rule.vendor, vendor) or not _matches(rule.model, model):
            continue
        if rule.mac_prefix is not None and (mac is None or not mac.startswith(rule.mac_prefix)):
            continue
        return None if rule.refuse else rule.url
    return default


def expand(template: str, variables: dict[str, str], *, mac: str | None, vendor: str | None,
           model: str | None) -> str:
    values = dict(variables)
    values["mac"] = mac or ""
    # surrogateescape: header bytes that were not UTF-8 come back as the same bytes, percent-encoded.
    values["vendor"] = quote((vendor or "").encode("utf-8", "surrogateescape"), safe="")
    values["model"] = quote((model or "").encode("utf-8", "surrogateescape"), safe="")
    return urltemplates.expand(template, values)
