"""The leases as ``bootstrapd leases`` and the status API list them: read from the store, as rows or JSON."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from bootstrapd.leases.backends import read_store
from bootstrapd.leases.store import Lease4, Lease6

if TYPE_CHECKING:
    from bootstrapd.config import Settings


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def read(settings: Settings, include_all: bool = False) -> tuple[list[Lease4], list[Lease6]]:
    """The configured store's leases (active and unexpired unless ``include_all``), sorted by address; raises
    :class:`~bootstrapd.leases.backends.StoreOpenError` when the store cannot be read."""
    rows = read_store(settings)
    rows4, rows6 = rows.leases4, rows.leases6
    now = time.time()
    if not include_all:
        rows4 = [r for r in rows4 if r.state == "active" and r.expires > now]
        rows6 = [r for r in rows6 if r.state == "active" and r.expires > now]
    rows4.sort(key=lambda r: int(r.address))
    rows6.sort(key=lambda r: int(r.address))
    return rows4, rows6


def as_json(rows4: list[Lease4], rows6: list[Lease6]) -> dict[str, Any]:
    return {
        "dhcp4": [
            {"mac": r.mac.hex(":"), "address": str(r.address), "expires": _iso(r.expires),
             "expires_unix": r.expires, "state": r.state, "vendor_class": r.vendor_class,
             "hostname": r.hostname, "client_id": r.client_id.hex() if r.client_id else None}
            for r in rows4
        ],
        "dhcp6": [
            {"duid": r.duid.hex(), "iaid": r.iaid, "address": str(r.address), "expires": _iso(r.expires),
             "expires_unix": r.expires, "state": r.state, "mac": r.mac.hex(":") if r.mac else None,
             "hostname": r.hostname}
            for r in rows6
        ],
    }
