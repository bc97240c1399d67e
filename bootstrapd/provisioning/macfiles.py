"""Which names are a phone's own files: a last component that starts with the phone's MAC (12 hex digits).

Broader on purpose than :func:`bootstrapd.provisioning.names.mac_of` (the MAC-oriented files of the phone model:
``<mac>.cfg``, ``<mac>.boot`` …): anything named after a phone is kept from other phones, whatever its suffix.

``00156574b150.cfg``, ``00156574B150.boot``, ``00156574b150-local.cfg``, ``00156574b150-contact.xml`` … belong to
the phone 00:15:65:74:b1:50. ``000000000000`` is not a MAC (some vendors' common file), and ``y000000000000.boot``
does not start with hex digits. MAC file names are matched case-insensitively everywhere.
"""

from __future__ import annotations

import re

_MAC_NAME = re.compile(r"([0-9a-fA-F]{12})(?:$|[.\-_])")
NOT_A_MAC = "000000000000"


def owner_mac(component: str) -> str | None:
    """The MAC (12 lower-case hex digits) a file name belongs to, or None."""
    match = _MAC_NAME.match(component)
    if match is None:
        return None
    mac = match.group(1).lower()
    return None if mac == NOT_A_MAC else mac


def canonical(parts: tuple[str, ...]) -> tuple[str, ...]:
    """The name with a MAC file's MAC in lower case (the rest as asked: ``<mac>_Security.enc``): how overlays are
    asked, as phones ask."""
    if parts and owner_mac(parts[-1]) is not None:
        last = parts[-1]
        return (*parts[:-1], last[:12].lower() + last[12:])
    return parts
