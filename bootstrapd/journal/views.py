"""What the journal shows, as plain documents: one implementation for ``status --json`` and the JSON API."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bootstrapd.journal.stage import LABELS, STAGES
from bootstrapd.journal.steps import text_of
from bootstrapd.journal.store import JournalStore, PhoneRow


def phone_json(row: PhoneRow) -> dict[str, Any]:
    doc = row.doc
    return {"mac": row.mac, "stage": row.stage, "stage_label": LABELS.get(row.stage, row.stage),
            "address": doc.get("address"), "address6": doc.get("address6"), "vendor": doc.get("vendor"),
            "model": doc.get("model"), "firmware": doc.get("firmware"), "vendor_class": doc.get("vendor_class"),
            "error": doc.get("error"), "last_step": doc.get("last_step"), "last_time": doc.get("last_time"),
            "first_seen": doc.get("first_seen"), "last_seen": doc.get("last_seen"), "steps": doc.get("steps", 0),
            "served": doc.get("served", []), "expected": doc.get("expected"),
            "appliances": list(row.appliances)}  # a shared store: who saw the phone, the latest last


def phones_document(store: JournalStore | None, stage: str | None = None,
                    health: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every phone (or those at ``stage``), the count of phones per stage (of all phones), and the lease store's
    state when known (``health``: :meth:`bootstrapd.leases.health.StoreHealth.as_dict`)."""
    rows = store.phones() if store is not None else []
    counts = Counter(r.stage for r in rows)
    if stage is not None:
        rows = [r for r in rows if r.stage == stage]
    document: dict[str, Any] = {"phones": [phone_json(r) for r in rows],
                                "summary": {s: counts.get(s, 0) for s in STAGES}}
    if health is not None:
        document["store"] = health
    return document


def step_json(doc: dict[str, Any], appliance: str = "") -> dict[str, Any]:
    return doc | {"text": text_of(doc)} | ({"appliance": appliance} if appliance else {})


def phone_document(store: JournalStore | None, mac: str) -> dict[str, Any] | None:
    """One phone and its whole journey (each step with its rendered line and, in a shared store, the appliance
    that recorded it), or None."""
    row = store.phone(mac) if store is not None else None
    if row is None:
        return None
    assert store is not None
    return {"phone": phone_json(row), "steps": [step_json(s.doc, s.appliance) for s in store.steps(mac)]}
