"""Where the journal lives: a small interface with no protocol in it, and its SQLite implementation.

A phone is a key (the MAC), a stage, a time and a JSON document; a step is a key, a time and a JSON document. The
store does not look inside the documents, so a PostgreSQL backend is the same five methods over two tables.

SQLite: a file of its own, ``journal.sqlite3`` beside ``leases.sqlite3``, in WAL mode with ``synchronous=NORMAL``.
Its own file because the lease store's group commit must never wait behind the journal's writes: SQLite has one
writer per database file, so journal batches in the lease file would hold the lock the lease writer needs before
each ACK, and their pages would be in every lease fsync. NORMAL because the journal is a diagnostic record: a power
loss may cost the last batch (a fraction of a second of steps), never a lease, and it saves an fsync per batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

FILE = "journal.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS phone (
    mac TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    updated REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS step (
    id INTEGER PRIMARY KEY,
    mac TEXT NOT NULL,
    time REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS step_mac ON step (mac, id);
"""

_UPSERT_PHONES = ("INSERT OR REPLACE INTO phone (mac, stage, updated, doc) SELECT json_extract(value, '$.mac'), "
                  "json_extract(value, '$.stage'), json_extract(value, '$.last_seen'), value FROM json_each(?)")
_INSERT_STEPS = ("INSERT INTO step (mac, time, doc) SELECT json_extract(value, '$.mac'), "
                 "json_extract(value, '$.time'), value FROM json_each(?)")


@dataclass(frozen=True)
class PhoneRow:
    mac: str
    stage: str
    updated: float
    doc: dict[str, Any]


@dataclass(frozen=True)
class StepRow:
    mac: str
    time: float
    doc: dict[str, Any]


@dataclass(frozen=True)
class Batch:
    """What one write adds: the phones' documents and the new steps, each one JSON array (text), and how many steps
    each phone gets. A phone document has ``mac``, ``stage`` and ``last_seen``; a step has ``mac`` and ``time``.

    One array per kind and not one row each: encoding an array is one call on the event loop, and inserting it is
    one statement (SQLite's json_each, PostgreSQL's jsonb_array_elements) during which the writer thread holds no
    GIL, instead of a GIL hand-over for every row."""

    phones: str
    steps: str
    touched: dict[str, int]  # steps per phone in ``steps``
    macs: tuple[str, ...]  # the phones in ``phones``

    @classmethod
    def of(cls, phones: list[dict[str, Any]], steps: list[dict[str, Any]]) -> Batch:
        touched: dict[str, int] = {}
        for step in steps:
            touched[step["mac"]] = touched.get(step["mac"], 0) + 1
        return cls(dumps(phones), dumps(steps), touched, tuple(p["mac"] for p in phones))


@dataclass(frozen=True)
class Limits:
    steps_per_phone: int
    max_steps: int
    max_phones: int


class JournalStore(Protocol):
    def write(self, batches: list[Batch], limits: Limits) -> None:
        """One transaction: upsert the phones, append the steps, prune to the limits."""

    def phones(self) -> list[PhoneRow]: ...

    def phone(self, mac: str) -> PhoneRow | None: ...

    def steps(self, mac: str) -> list[StepRow]: ...

    def step_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def _encoder() -> Callable[[Any], str]:
    """JSON text of a document, compact and ASCII. The journal encodes every step: JSONEncoder.encode builds a new C
    encoder (and a circular-reference map) per call, which cost three times the encoding of a step itself; the C
    encoder is built once here (documents are plain trees: no circular check needed)."""
    from json import encoder as json_encoder

    make = getattr(json_encoder, "c_make_encoder", None)
    if make is None:  # not CPython's C accelerator: the standard path
        return json.JSONEncoder(separators=(",", ":")).encode

    def default(value: object) -> Any:
        raise TypeError(f"not JSON: {type(value).__name__}")

    encode = make(None, default, json_encoder.encode_basestring_ascii, None, ":", ",", False, False, True)

    def dumps(document: Any) -> str:
        return "".join(encode(document, 0))

    return dumps


dumps = _encoder()


class SqliteJournal:
    """The journal file. One writer (the journal's thread); readers open it with ``readonly=True``."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self.conn.execute("PRAGMA busy_timeout=5000")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        # Steps per phone (every phone of the file has an entry) and the totals, kept in memory by the writer.
        self._counts: dict[str, int] = dict.fromkeys((m for (m,) in self.conn.execute("SELECT mac FROM phone")), 0)
        self._counts.update(self.step_counts())
        self._total = sum(self._counts.values())
        self._phones = len(self._counts)

    def write(self, batches: list[Batch], limits: Limits) -> None:
        conn = self.conn
        counts = self._counts
        touched: dict[str, int] = {}
        macs: set[str] = set()
        added = 0
        for batch in batches:
            for mac, n in batch.touched.items():
                touched[mac] = touched.get(mac, 0) + n
                added += n
            macs.update(batch.macs)
        conn.execute("BEGIN")
        try:
            for batch in batches:
                if batch.macs:
                    conn.execute(_UPSERT_PHONES, (batch.phones,))
                if batch.touched:
                    conn.execute(_INSERT_STEPS, (batch.steps,))
            # The bookkeeping below is only for the phones of this batch: O(batch), not O(phones).
            fresh = {mac: counts.get(mac, 0) + n for mac, n in touched.items()}
            new_phones = sum(1 for mac in macs if mac not in counts)
            recounted, total = self._prune(fresh, self._total + added, self._phones + new_phones, limits)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if recounted is None:
            for mac in macs:
                counts.setdefault(mac, 0)
            counts.update(fresh)
        else:
            self._counts = recounted
            total = sum(recounted.values())
        self._total = total
        self._phones = len(self._counts)

    def _prune(self, fresh: dict[str, int], total: int, phones: int,
               limits: Limits) -> tuple[dict[str, int] | None, int]:
        """Prune to the limits. Returns the steps per phone recounted from the file when a global bound had to
        prune (else None: ``fresh`` then holds the batch's phones' new counts), and the total number of steps."""
        conn = self.conn
        # Per phone: keep the newest steps_per_phone. Pruned in chunks of a tenth so it is not every batch.
        slack = max(1, limits.steps_per_phone // 10)
        for mac, n in fresh.items():
            if n > limits.steps_per_phone + slack:
                conn.execute(
                    "DELETE FROM step WHERE mac = ? AND id <= (SELECT id FROM step WHERE mac = ? "
                    "ORDER BY id DESC LIMIT 1 OFFSET ?)", (mac, mac, limits.steps_per_phone))
                total -= n - limits.steps_per_phone
                fresh[mac] = limits.steps_per_phone
        recount = False
        # In total: the oldest steps overall.
        if total > limits.max_steps + max(1, limits.max_steps // 10):
            excess = total - limits.max_steps
            conn.execute("DELETE FROM step WHERE id <= (SELECT id FROM step ORDER BY id LIMIT 1 OFFSET ?)",
                         (excess - 1,))
            recount = True
        # Phones: those not seen for the longest beyond max_phones, with their steps.
        if phones > limits.max_phones + max(1, limits.max_phones // 10):
            old = [(m,) for (m,) in conn.execute("SELECT mac FROM phone ORDER BY updated LIMIT ?",
                                                 (phones - limits.max_phones,))]
            conn.executemany("DELETE FROM phone WHERE mac = ?", old)
            conn.executemany("DELETE FROM step WHERE mac = ?", old)
            recount = True
        if not recount:
            return None, total
        counts = dict.fromkeys((m for (m,) in conn.execute("SELECT mac FROM phone")), 0)
        counts.update(self._count_rows())
        return counts, sum(counts.values())

    def _count_rows(self) -> dict[str, int]:
        return {mac: n for mac, n in self.conn.execute("SELECT mac, count(*) FROM step GROUP BY mac")}

    def phones(self) -> list[PhoneRow]:
        rows = self.conn.execute("SELECT mac, stage, updated, doc FROM phone ORDER BY mac").fetchall()
        return [PhoneRow(m, s, u, json.loads(d)) for m, s, u, d in rows]

    def iter_phones(self) -> Iterator[PhoneRow]:
        for m, s, u, d in self.conn.execute("SELECT mac, stage, updated, doc FROM phone"):
            yield PhoneRow(m, s, u, json.loads(d))

    def phone(self, mac: str) -> PhoneRow | None:
        row = self.conn.execute("SELECT mac, stage, updated, doc FROM phone WHERE mac = ?", (mac,)).fetchone()
        return PhoneRow(row[0], row[1], row[2], json.loads(row[3])) if row else None

    def steps(self, mac: str) -> list[StepRow]:
        rows = self.conn.execute("SELECT mac, time, doc FROM step WHERE mac = ? ORDER BY id", (mac,)).fetchall()
        return [StepRow(m, t, json.loads(d)) for m, t, d in rows]

    def step_counts(self) -> dict[str, int]:
        return self._count_rows()

    def close(self) -> None:
        self.conn.close()


def open_readonly(state_dir: Path) -> SqliteJournal | None:
    """The journal of a running (or stopped) daemon for reading, or None when there is none yet."""
    path = state_dir / FILE
    if not path.exists():
        return None
    return SqliteJournal(path, readonly=True)
