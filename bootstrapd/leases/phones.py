"""Phone records in the store: one row per MAC, where a phone was last seen and what it said it is.

Generic on purpose: the store knows nothing of SIP or DHCP. A service that learns a phone's address by a means the
lease table does not show (the PnP responder, when a phone acknowledged its NOTIFY) hands a :class:`PhoneRecord`
to :meth:`bootstrapd.leases.store.LeaseStore.record_phones`; the store's writer thread upserts it with the next
group commit, off the event loop; ``bootstrapd resync`` reads it back by MAC (:func:`read_phone`).

Rules every backend keeps (SQLite here, PostgreSQL later):
- the newest record of a MAC wins (by ``seen``): replaying an older one (an import) never overwrites a fresher one;
- at most :data:`PHONES_MAX` MACs: records of further new MACs are dropped (updates of known ones still apply), so
  a device acknowledging NOTIFYs under made-up MACs cannot grow the database without end;
- text is stored printable and bounded (:data:`TEXT_MAX` characters): values the phone sent (vendor, model, version)
  reach the row with control characters and undecodable bytes replaced by ``?``; a row can never fail to encode
  and take the leases of its batch down with it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

PHONES_MAX = 100_000
TEXT_MAX = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS phone (
    mac TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    seen REAL NOT NULL,
    source TEXT NOT NULL,
    vendor TEXT,
    model TEXT,
    version TEXT,
    url TEXT
);
"""


@dataclass(frozen=True, slots=True)
class PhoneRecord:
    mac: str  # 12 lower-case hex digits
    address: str  # where the phone was seen (IPv4 or IPv6 text)
    seen: float  # wall-clock seconds since the epoch
    source: str  # who saw it ("pnp")
    vendor: str | None = None
    model: str | None = None
    version: str | None = None
    url: str | None = None


def printable(value: str | None, limit: int = TEXT_MAX) -> str | None:
    if value is None:
        return None
    value = value[:limit]
    if value.isprintable():  # the common case, at C speed (controls, separators and surrogates are not printable)
        return value
    return "".join("?" if _unprintable(ord(c)) else c for c in value)


def _unprintable(code: int) -> bool:
    # C0 and C1 controls, DEL, the Unicode line and paragraph separators, and lone surrogates (undecodable bytes).
    return code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029) or 0xD800 <= code <= 0xDFFF


def _row(record: PhoneRecord) -> tuple[object, ...]:
    return (printable(record.address, 64), float(record.seen), printable(record.source, 32), printable(record.vendor),
            printable(record.model), printable(record.version), printable(record.url, 1024), printable(record.mac, 12))


_UPDATE = ("UPDATE phone SET address = ?, seen = ?, source = ?, vendor = ?, model = ?, version = ?, url = ? "
           "WHERE mac = ? AND seen <= ?")
_INSERT = ("INSERT OR IGNORE INTO phone (address, seen, source, vendor, model, version, url, mac) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM phone").fetchone()[0])


def write(conn: sqlite3.Connection, records: Iterable[PhoneRecord], known: int) -> int:
    """Upsert inside the caller's transaction; ``known`` is the table's row count, the new count is returned."""
    for record in records:
        row = _row(record)
        if conn.execute(_UPDATE, (*row, row[1])).rowcount:
            continue
        if known < PHONES_MAX:
            known += conn.execute(_INSERT, row).rowcount  # 0 when a newer record of this MAC is there
    return known


_SELECT = "SELECT mac, address, seen, source, vendor, model, version, url FROM phone"


def read_phone(conn: sqlite3.Connection, mac: str) -> PhoneRecord | None:
    """The record of one MAC (12 lower-case hex digits); None when there is none, or no table yet."""
    try:
        row = conn.execute(_SELECT + " WHERE mac = ?", (mac,)).fetchone()
    except sqlite3.OperationalError:  # a store written by a version without the table
        return None
    return PhoneRecord(*row) if row else None


def read_phones(conn: sqlite3.Connection) -> Iterator[PhoneRecord]:
    try:
        rows = conn.execute(_SELECT + " ORDER BY mac")
    except sqlite3.OperationalError:
        return
    for row in rows:
        yield PhoneRecord(*row)
