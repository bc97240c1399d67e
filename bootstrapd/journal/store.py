"""Where the journal lives: a small interface with no protocol in it, and its SQLite implementation.

A phone is a key (the MAC), a stage, a time and a JSON document; a step is a key, a time and a JSON document. The
store does not look inside the documents. Two backends: this file's SQLite one (one appliance), and PostgreSQL
(:mod:`.pgjournal`, the database appliances share: each writes its own rows, readers see every appliance's).

SQLite: a file of its own, ``journal.sqlite3`` beside ``leases.sqlite3``, in WAL mode with ``synchronous=NORMAL``.
Its own file because the lease store's group commit must never wait behind the journal's writes: SQLite has one
writer per database file, so journal batches in the lease file would hold the lock the lease writer needs before
each ACK, and their pages would be in every lease fsync. NORMAL because the journal is a diagnostic record: a power
loss may cost the last batch (a fraction of a second of steps), never a lease, and it saves an fsync per batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
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
                  "json_extract(value, '$.stage'), json_extract(value, '$.last_seen') / 1e6, value FROM json_each(?)")
_INSERT_STEPS = ("INSERT INTO step (mac, time, doc) SELECT json_extract(value, '$.mac'), "
                 "json_extract(value, '$.time') / 1e6, value FROM json_each(?)")

US = 1_000_000
PHONE_TIMES = ("first_seen", "last_seen", "last_time")
STEP_TIMES = ("time",)
# Times in the stored documents are integer microseconds; in memory, in the views and in everything read back
# they are float seconds, as time.time() gives them. Why: JSON writes a float as its shortest round-trip repr,
# which for a full-precision time is a bignum conversion; a new phone's DORA stores five times (two steps, the
# document's three) and writing them as ints saved 24,000 of the journal's 304,500 instructions per DORA
# (tests.bench.inprocess --only journal under callgrind). A JSON float in one of these fields is seconds: the
# documents of a journal written before this (read_times tells them apart by type).


@dataclass(frozen=True)
class PhoneRow:
    mac: str
    stage: str
    updated: float
    doc: dict[str, Any]
    appliances: tuple[str, ...] = ()  # a shared store: the appliances that saw the phone, newest last


@dataclass(frozen=True)
class StepRow:
    mac: str
    time: float
    doc: dict[str, Any]
    appliance: str = ""  # a shared store: the appliance that recorded the step


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
    def of(cls, phones: list[dict[str, Any]], steps: list[dict[str, Any]],
           touched: dict[str, int] | None = None) -> Batch:
        """The batch of these documents (their times made microseconds in place, see ``US``) and ``touched``, the
        steps per phone (counted here when not given)."""
        if touched is None:
            touched = {}
            for step in steps:
                touched[step["mac"]] = touched.get(step["mac"], 0) + 1
        for doc in phones:
            stored_times(doc, PHONE_TIMES)
        for doc in steps:
            stored_times(doc, STEP_TIMES)
        return cls(dumps(phones), dumps(steps), touched, tuple(p["mac"] for p in phones))


def stored_times(doc: dict[str, Any], keys: tuple[str, ...]) -> None:
    """The document's times (float seconds) as integer microseconds, in place, for its JSON text."""
    for key in keys:
        value = doc.get(key)
        if value.__class__ is float or value.__class__ is int:
            doc[key] = round(value * US)


def read_times(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document with its times as float seconds again (``US``), in place: microseconds (an int) are
    divided, a float (a journal written before times were microseconds) is seconds already."""
    for key in READ_TIMES:
        value = doc.get(key)
        if value.__class__ is int:
            doc[key] = value / US
    return doc


READ_TIMES = (*STEP_TIMES, *PHONE_TIMES)


def loaded(text: str) -> dict[str, Any]:
    """A stored document from its JSON text, its times as float seconds (:func:`read_times`)."""
    return read_times(json.loads(text))


@dataclass(frozen=True)
class Limits:
    steps_per_phone: int
    max_steps: int
    max_phones: int


class JournalUnavailable(Exception):
    """The journal's store cannot be reached now (a shared database that is down): nothing was written or read;
    the writer keeps its batches and tries again (``Journal``), a reader says so."""


class JournalStore(Protocol):
    # Whether one object may serve the daemon's writer and any reader thread at once (a database connection pool):
    # then the status API reads through the daemon's own store instead of opening one per request.
    threadsafe: bool
    where: str  # for messages: the file, or the database (its password masked)

    def write(self, batches: list[Batch], limits: Limits) -> None:
        """One transaction: upsert the phones, append the steps, prune to the limits (this appliance's share)."""

    def load(self) -> list[PhoneRow]:
        """The documents this appliance wrote, to carry on from after a restart."""

    def phones(self) -> list[PhoneRow]:
        """Every phone, as one row each (with a shared store: what every appliance saw of it, combined)."""

    def phone(self, mac: str) -> PhoneRow | None: ...

    def steps(self, mac: str) -> list[StepRow]:
        """The phone's journey, oldest first (with a shared store: every appliance's steps, by time)."""

    def step_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


@dataclass
class Plan:
    """What one write does beyond inserting: the steps per phone afterwards, and what to prune."""

    fresh: dict[str, int]  # the batch's phones -> their steps after the write (and any trim)
    macs: set[str]  # the phones whose documents the batch writes
    trim: dict[str, int]  # phones over steps_per_phone -> keep this many newest
    excess: int  # the oldest steps overall to delete (0: none)
    evict: int  # the phones not seen for the longest to forget with their steps (0: none)
    total: int  # steps after the write and the trims

    @property
    def recount(self) -> bool:
        """A global bound pruned: the counts are read again from the store."""
        return bool(self.excess or self.evict)


class Tally:
    """What a writer knows of its share of the journal (steps per phone, the total, the phones), so that keeping
    the bounds costs in proportion to the batch, not to the journal. Each bound prunes in chunks of a tenth of it,
    so that it is not every batch. One implementation for both backends: they only run the SQL of the plan."""

    def __init__(self, phones: Iterable[str], steps: dict[str, int]) -> None:
        self.counts: dict[str, int] = {}
        self.total = 0
        self.reset(phones, steps)

    def reset(self, phones: Iterable[str], steps: dict[str, int]) -> None:
        """Every phone of the store (a step count of 0 for those without steps) and the steps per phone."""
        self.counts = dict.fromkeys(phones, 0)
        self.counts.update(steps)
        self.total = sum(self.counts.values())

    def plan(self, batches: list[Batch], limits: Limits) -> Plan:
        counts = self.counts
        touched: dict[str, int] = {}
        macs: set[str] = set()
        added = 0
        for batch in batches:
            for mac, n in batch.touched.items():
                touched[mac] = touched.get(mac, 0) + n
                added += n
            macs.update(batch.macs)
        fresh = {mac: counts.get(mac, 0) + n for mac, n in touched.items()}
        total = self.total + added
        phones = len(counts) + sum(1 for mac in macs if mac not in counts)
        slack = max(1, limits.steps_per_phone // 10)
        trim: dict[str, int] = {}
        for mac, n in fresh.items():  # per phone: the newest steps_per_phone
            if n > limits.steps_per_phone + slack:
                trim[mac] = limits.steps_per_phone
                total -= n - limits.steps_per_phone
                fresh[mac] = limits.steps_per_phone
        excess = total - limits.max_steps if total > limits.max_steps + max(1, limits.max_steps // 10) else 0
        evict = phones - limits.max_phones if phones > limits.max_phones + max(1, limits.max_phones // 10) else 0
        return Plan(fresh, macs, trim, excess, evict, total)

    def done(self, plan: Plan, phones: Iterable[str] | None = None, steps: dict[str, int] | None = None) -> None:
        """The write committed; ``phones`` and ``steps``: the counts read again when the plan needed it."""
        if plan.recount:
            assert phones is not None and steps is not None
            self.reset(phones, steps)
            return
        for mac in plan.macs:
            self.counts.setdefault(mac, 0)
        self.counts.update(plan.fresh)
        self.total = plan.total

    @property
    def phones(self) -> int:
        return len(self.counts)


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

    threadsafe = False

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.where = str(path)
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
        self.tally = Tally(self._phone_macs(), self.step_counts())

    def write(self, batches: list[Batch], limits: Limits) -> None:
        conn = self.conn
        plan = self.tally.plan(batches, limits)
        conn.execute("BEGIN")
        try:
            for batch in batches:
                if batch.macs:
                    conn.execute(_UPSERT_PHONES, (batch.phones,))
                if batch.touched:
                    conn.execute(_INSERT_STEPS, (batch.steps,))
            for mac, keep in plan.trim.items():
                conn.execute("DELETE FROM step WHERE mac = ? AND id <= (SELECT id FROM step WHERE mac = ? "
                             "ORDER BY id DESC LIMIT 1 OFFSET ?)", (mac, mac, keep))
            if plan.excess:  # the oldest steps overall
                conn.execute("DELETE FROM step WHERE id <= (SELECT id FROM step ORDER BY id LIMIT 1 OFFSET ?)",
                             (plan.excess - 1,))
            if plan.evict:  # the phones not seen for the longest, with their steps
                old = [(m,) for (m,) in conn.execute("SELECT mac FROM phone ORDER BY updated LIMIT ?",
                                                     (plan.evict,))]
                conn.executemany("DELETE FROM phone WHERE mac = ?", old)
                conn.executemany("DELETE FROM step WHERE mac = ?", old)
            recounted = (self._phone_macs(), self.step_counts()) if plan.recount else (None, None)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.tally.done(plan, *recounted)

    def _phone_macs(self) -> list[str]:
        return [m for (m,) in self.conn.execute("SELECT mac FROM phone")]

    def load(self) -> list[PhoneRow]:
        return self.phones()

    def phones(self) -> list[PhoneRow]:
        rows = self.conn.execute("SELECT mac, stage, updated, doc FROM phone ORDER BY mac").fetchall()
        return [PhoneRow(m, s, u, loaded(d)) for m, s, u, d in rows]

    def phone(self, mac: str) -> PhoneRow | None:
        row = self.conn.execute("SELECT mac, stage, updated, doc FROM phone WHERE mac = ?", (mac,)).fetchone()
        return PhoneRow(row[0], row[1], row[2], loaded(row[3])) if row else None

    def steps(self, mac: str) -> list[StepRow]:
        rows = self.conn.execute("SELECT mac, time, doc FROM step WHERE mac = ? ORDER BY id", (mac,)).fetchall()
        return [StepRow(m, t, loaded(d)) for m, t, d in rows]

    def step_counts(self) -> dict[str, int]:
        return {mac: n for mac, n in self.conn.execute("SELECT mac, count(*) FROM step GROUP BY mac")}

    def close(self) -> None:
        self.conn.close()
