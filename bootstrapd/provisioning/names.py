"""File names the phone gives meaning to: MAC-oriented files, common CFG files, key files, templates."""

from __future__ import annotations

import re

from bootstrapd.provisioning.models import COMMON_BOOT

_MAC = re.compile(r"^[0-9a-f]{12}$")
_MAC_ANY_CASE = re.compile(r"^[0-9A-Fa-f]{12}$")
_MAC_SEPARATED = re.compile(r"^[0-9A-Fa-f]{2}([:\-.]?)(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")
_COMMON_CFG = re.compile(r"^y0{9}\d{3}\.cfg$")
TEMPLATE_SUFFIX = ".j2"


def parse_mac(text: str) -> str | None:
    """``00:15:65:AA:BB:CC``, ``00-15-65-aa-bb-cc``, ``0015.65aa.bbcc`` or ``001565aabbcc`` -> 12 lower-case digits."""
    text = text.strip()
    digits = re.sub(r"[:\-.]", "", text)
    if _MAC_SEPARATED.match(text) or (re.fullmatch(r"[0-9A-Fa-f]{4}(\.[0-9A-Fa-f]{4}){2}", text)):
        return digits.lower()
    return None


def basename(name: str) -> str:
    return name.rpartition("/")[2]


def mac_of(name: str) -> str | None:
    """The MAC of a MAC-oriented file (``<mac>.cfg``, ``<mac>.boot``, ``<mac>-local.cfg``, its key file), or None."""
    base = basename(name)
    for suffix in (".cfg", ".boot", "-local.cfg", "_Security.enc", "-local_Security.enc"):
        if base.endswith(suffix) and _MAC.match(base[:-len(suffix)]):
            return base[:-len(suffix)]
    return None


def upper_case_mac(name: str) -> bool:
    """A MAC file name with upper-case digits: the phone asks for lower case only (guide: "case-sensitive")."""
    base = basename(name)
    for suffix in (".cfg", ".boot", "-local.cfg"):
        stem = base[:-len(suffix)] if base.endswith(suffix) else None
        if stem and _MAC_ANY_CASE.match(stem) and not _MAC.match(stem):
            return True
    return False


def is_common_cfg_name(name: str) -> bool:
    return bool(_COMMON_CFG.match(basename(name)))


def file_class(name: str) -> str | None:
    """Which AES key class a served file belongs to: ``"mac"`` for ``<mac>.cfg``, ``"common"`` for other CFG
    files, None for boot files, resources, key files and ``<mac>-local.cfg`` (the phone's own upload).

    Guide, "Resolving and Updating Configurations": the common key decrypts the common CFG file, the MAC key the
    ``<MAC>.cfg`` file; files included from boot files are read with the common key.
    """
    base = basename(name)
    if not base.endswith(".cfg") or base.endswith("-local.cfg"):
        return None
    return "mac" if _MAC.match(base[:-4]) else "common"


def is_common_boot(name: str) -> bool:
    return basename(name) == COMMON_BOOT
