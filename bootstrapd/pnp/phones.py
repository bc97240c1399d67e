"""What the PnP responder remembers about a phone, for ``bootstrapd resync MAC``, and the old JSON record's import.

A phone is remembered only once it acknowledged its NOTIFY with a 2xx from the address the NOTIFY went to (the
responder checks the address): a SUBSCRIBE with a spoofed source, or a phone that never answered, leaves no
record that ``resync`` would trust. Records go to the store's phone table (:mod:`bootstrapd.leases.phones`), one
upsert per phone through the store's writer, instead of a JSON file of every phone rewritten each second.

Versions before this one kept ``state_dir/pnp-phones.json``. At start-up its acknowledged entries are imported
into the store (an entry the phone never acknowledged is left out, for the reason above), and the file is renamed
to ``pnp-phones.json.imported`` once the import is durable, so it is read once and can be deleted.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from bootstrapd.leases.phones import PhoneRecord
from bootstrapd.pnp.responder import Answered

LEGACY = "pnp-phones.json"
IMPORTED = LEGACY + ".imported"
SOURCE = "pnp"


def record_for(answer: Answered, now: float) -> PhoneRecord | None:
    """The record of an answered exchange, or None when there is nothing to remember (no MAC, not acknowledged)."""
    if answer.mac is None or not answer.acknowledged:
        return None
    return PhoneRecord(answer.mac, answer.ip, now, SOURCE, answer.vendor, answer.model, answer.version, answer.url)


def _text(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    return value if isinstance(value, str) else None


def read_legacy(path: Path) -> list[PhoneRecord]:
    """The acknowledged phones of an old ``pnp-phones.json``; entries that do not look right are skipped."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    records = []
    for mac, entry in data.items():
        if not (isinstance(mac, str) and len(mac) == 12 and all(c in "0123456789abcdef" for c in mac)):
            continue
        if not isinstance(entry, dict) or entry.get("acknowledged") is not True:
            continue
        ip, seen = entry.get("ip"), entry.get("time")
        try:
            address = str(ipaddress.ip_address(ip))  # type: ignore[arg-type]
        except ValueError:
            continue
        if not isinstance(seen, (int, float)) or isinstance(seen, bool):
            continue
        records.append(PhoneRecord(mac, address, float(seen), SOURCE, _text(entry, "vendor"), _text(entry, "model"),
                                   _text(entry, "version"), _text(entry, "url")))
    return records
