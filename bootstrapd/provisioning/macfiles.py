"""Which names are a phone's own files: a last component that starts with the phone's MAC (12 hex digits).

``00156574b150.cfg``, ``00156574B150.boot``, ``00156574b150-local.cfg``, ``00156574b150-contact.xml`` … belong to
the phone 00:15:65:74:b1:50. ``000000000000`` is not a MAC (some vendors' common file), and ``y000000000000.boot``
does not start with hex digits. MAC file names are matched case-insensitively everywhere.
"""

from __future__ import annotations

import re

_MAC_NAME = re.compile(r"([0-9a-fA-F]{12})(?:$|[.\-_])")
NOT_A_MAC = "000000000000"


def mac_of(component: str) -> str | None:
    """The MAC (12 lower-case hex digits) a file name belongs to, or None."""
    match = _MAC_NAME.match(component)
    if match is None:
        return None
    mac = match.group(1).lower()
    return None if mac == NOT_A_MAC else mac


def canonical(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The name with a MAC file's last component in lower case: how overlays and uploads are keyed."""
    if parts and mac_of(parts[-1]) is not None:
        return (*parts[:-1], parts[-1].lower())
    return parts


def format_mac(mac: str) -> str:
    return ":".join(mac[i:i + 2] for i in range(0, 12, 2))
