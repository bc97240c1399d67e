"""The phone journal in the PostgreSQL database appliances share (``[store] backend = "postgresql"``).

The same interface as :class:`~bootstrapd.journal.store.SqliteJournal`, and the same batches: one transaction per
batch the journal's writer thread hands over, one statement per table (``json_array_elements`` over the batch's
one JSON array, as SQLite's ``json_each``), pruned to the same bounds by the same :class:`~.store.Tally`.

- **Off the daemon's loop.** asyncpg runs on an event loop: this store runs its own, in a thread of its own, and
  every method (called from the journal's writer thread or a reader's thread) waits for its coroutine there. The
  daemon's loop never runs a journal query, as it never runs an SQLite one.
- **Each appliance writes only its own rows** (``appliance`` = its name in the shared store): its summary of each
  phone it saw and the steps it recorded. Two appliances never update one row (no lock waits between them, no
  lost update), and each keeps its share within ``[journal]``'s bounds, pruning nothing of the others'.
- **Readers see every appliance's**: a phone's journey is every step of every appliance, by time; its summary is
  the appliances' summaries combined (:func:`~bootstrapd.journal.stage.merge`).
- **Unreachable**: a write or read that cannot reach the server raises
  :class:`~bootstrapd.journal.store.JournalUnavailable`; the journal keeps its batches (bounded) and writes them
  once the server is back (``Journal``), each call trying a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg

from bootstrapd.journal.stage import Phone, merge
from bootstrapd.journal.store import Batch, JournalUnavailable, Limits, PhoneRow, StepRow, Tally, loaded
from bootstrapd.leases import pgschema
from bootstrapd.leases.postgresql import CONNECTION_ERRORS, PERMANENT_ERRORS
from bootstrapd.leases.settings import StoreSettings, redact

T = TypeVar("T")

# The newest document of each phone in the batch (a phone handed over in two slices is in it twice).
UPSERT_PHONES = """
INSERT INTO journal_phone AS p (mac, appliance, stage, updated, doc)
SELECT DISTINCT ON (e->>'mac') e->>'mac', $2::text, e->>'stage', (e->>'last_seen')::float8 / 1e6, e
FROM json_array_elements($1::json) WITH ORDINALITY AS t(e, n)
ORDER BY e->>'mac', n DESC
ON CONFLICT (mac, appliance) DO UPDATE SET stage = EXCLUDED.stage, updated = EXCLUDED.updated, doc = EXCLUDED.doc
"""
INSERT_STEPS = """
INSERT INTO journal_step (mac, appliance, time, doc)
SELECT e->>'mac', $2::text, (e->>'time')::float8 / 1e6, e FROM json_array_elements($1::json) WITH ORDINALITY AS t(e, n)
ORDER BY n
"""
TRIM = """
DELETE FROM journal_step WHERE appliance = $1 AND mac = $2 AND id <= (
    SELECT id FROM journal_step WHERE appliance = $1 AND mac = $2 ORDER BY id DESC LIMIT 1 OFFSET $3)
"""
OLDEST = """
DELETE FROM journal_step WHERE appliance = $1 AND id <= (
    SELECT id FROM journal_step WHERE appliance = $1 ORDER BY id LIMIT 1 OFFSET $2)
"""
EVICT = """
WITH old AS (
    DELETE FROM journal_phone WHERE appliance = $1 AND mac IN (
        SELECT mac FROM journal_phone WHERE appliance = $1 ORDER BY updated LIMIT $2)
    RETURNING mac)
DELETE FROM journal_step s USING old WHERE s.appliance = $1 AND s.mac = old.mac
"""
OWN_PHONES = "SELECT mac FROM journal_phone WHERE appliance = $1"
OWN_COUNTS = "SELECT mac, count(*) FROM journal_step WHERE appliance = $1 GROUP BY mac"
SELECT_PHONES = "SELECT mac, appliance, stage, updated, doc FROM journal_phone"


def _join(arrays: list[str]) -> str:
    """One JSON array of the elements of several (the batches' texts): one statement for all of them."""
    return "[" + ",".join(a[1:-1] for a in arrays if len(a) > 2) + "]"


def combine(rows: list[Any]) -> list[PhoneRow]:
    """Rows of (mac, appliance, stage, updated, doc), ordered by mac -> one PhoneRow per phone."""
    out: list[PhoneRow] = []
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and rows[end][0] == rows[start][0]:
            continue
        group = rows[start:end]
        start = end
        docs = [loaded(r[4]) for r in group]
        names = tuple(r[1] for r in sorted(group, key=lambda r: r[3]))
        if len(group) == 1:
            mac, _, stage, updated, _ = group[0]
            out.append(PhoneRow(mac, stage, updated, docs[0], names))
            continue
        phone = merge([Phone.from_dict(d) for d in docs])
        out.append(PhoneRow(phone.mac, phone.stage, phone.last_seen, phone.as_dict(), names))
    return out


class PgJournal:
    """This appliance's journal in the shared database; a reader when ``appliance`` is ""."""

    threadsafe = True

    def __init__(self, settings: StoreSettings, appliance: str = "", password: str | None = None) -> None:
        self.settings = settings
        self.appliance = appliance
        self.where = f"PostgreSQL at {redact(settings.dsn)}"
        self._password = password
        self._conns: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.tally: Tally | None = None  # this appliance's share, read at the first write
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="journal-pg", daemon=True)
        self._thread.start()
        # A call waits at most for a connection and a statement (the server's own timeouts end both sooner).
        self._timeout = settings.connect_timeout + settings.command_timeout * 4 + 5

    # -- the loop of its own ---------------------------------------------------------------------------------------
    def _call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        future = asyncio.run_coroutine_threadsafe(make(), self._loop)
        try:
            return future.result(self._timeout)
        except TimeoutError:
            future.cancel()
            raise JournalUnavailable(f"{self.where}: no answer in {self._timeout:.0f} s") from None

    async def _with(self, role: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work`` on the connection of ``role`` (the writer's, the readers'), opened when needed; a lost
        connection is closed and reported as JournalUnavailable (the next call opens another)."""
        lock = self._locks.setdefault(role, asyncio.Lock())
        async with lock:
            conn = self._conns.get(role)
            try:
                if conn is None or conn.is_closed():
                    conn = self._conns[role] = await self._connect()
                return await work(conn)
            except (*CONNECTION_ERRORS, *PERMANENT_ERRORS) as exc:
                self._conns.pop(role, None)
                if conn is not None and not conn.is_closed():
                    conn.terminate()
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise JournalUnavailable(f"{self.where}: {text}") from None

    async def _connect(self) -> Any:
        s = self.settings
        name = f"bootstrapd {self.appliance or 'reader'} journal"[:63]
        conn = await asyncpg.connect(s.dsn, password=self._password, timeout=s.connect_timeout,
                                     command_timeout=s.command_timeout, server_settings={"application_name": name})
        try:
            await pgschema.check(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn

    # -- writing (the journal's writer thread) ---------------------------------------------------------------------
    def write(self, batches: list[Batch], limits: Limits) -> None:
        assert self.appliance, "a reader does not write"
        self._call(lambda: self._with("write", lambda conn: self._write(conn, batches, limits)))

    async def _write(self, conn: Any, batches: list[Batch], limits: Limits) -> None:
        me = self.appliance
        if self.tally is None:
            self.tally = Tally(*await self._own(conn))
        plan = self.tally.plan(batches, limits)
        phones = _join([b.phones for b in batches if b.macs])
        steps = _join([b.steps for b in batches if b.touched])
        recounted: tuple[list[str], dict[str, int]] | tuple[None, None] = (None, None)
        async with conn.transaction():
            if phones != "[]":
                await conn.execute(UPSERT_PHONES, phones, me)
            if steps != "[]":
                await conn.execute(INSERT_STEPS, steps, me)
            if plan.trim:
                await conn.executemany(TRIM, [(me, mac, keep) for mac, keep in plan.trim.items()])
            if plan.excess:
                await conn.execute(OLDEST, me, plan.excess - 1)
            if plan.evict:
                await conn.execute(EVICT, me, plan.evict)
            if plan.recount:
                recounted = await self._own(conn)
        self.tally.done(plan, *recounted)

    async def _own(self, conn: Any) -> tuple[list[str], dict[str, int]]:
        phones = [r[0] for r in await conn.fetch(OWN_PHONES, self.appliance)]
        counts = {r[0]: int(r[1]) for r in await conn.fetch(OWN_COUNTS, self.appliance)}
        return phones, counts

    # -- reading (any thread) --------------------------------------------------------------------------------------
    def _fetch(self, query: str, *args: Any) -> list[Any]:
        return self._call(lambda: self._with("read", lambda conn: conn.fetch(query, *args)))

    def load(self) -> list[PhoneRow]:
        rows = self._fetch("SELECT mac, stage, updated, doc FROM journal_phone WHERE appliance = $1", self.appliance)
        return [PhoneRow(m, s, u, loaded(d), (self.appliance,)) for m, s, u, d in rows]

    def phones(self) -> list[PhoneRow]:
        return combine(self._fetch(SELECT_PHONES + " ORDER BY mac"))

    def phone(self, mac: str) -> PhoneRow | None:
        found = combine(self._fetch(SELECT_PHONES + " WHERE mac = $1", mac))
        return found[0] if found else None

    def steps(self, mac: str) -> list[StepRow]:
        rows = self._fetch("SELECT mac, appliance, time, doc FROM journal_step WHERE mac = $1 ORDER BY time, id", mac)
        return [StepRow(m, t, loaded(d), a) for m, a, t, d in rows]

    def step_counts(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._fetch("SELECT mac, count(*) FROM journal_step GROUP BY mac")}

    def close(self) -> None:
        async def shut() -> None:
            for conn in self._conns.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
                if not conn.is_closed():
                    conn.terminate()
            self._conns.clear()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()
