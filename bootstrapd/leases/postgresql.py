"""The PostgreSQL lease store: the state several appliances share, with the same promise as SQLite.

Same interface as :class:`bootstrapd.leases.store.LeaseStore` (see :mod:`bootstrapd.leases.backends`), on the event
loop with asyncpg instead of a writer thread:

- **Group commit.** Leases queued while a transaction is in flight go into the next one: one commit (one WAL flush
  on the server) per batch. A reply waiting on a lease is released only when ``COMMIT`` has returned.
  ``pool_size`` connections commit side by side, each for its own share of the addresses (by a hash of the address),
  so one transaction is built while another waits for its flush and each address's updates stay in order.
- **The database decides.** Every lease goes through the conditional upsert of :mod:`.pgrows`; a lease whose address
  another client holds *loses*: its reply is withheld and the winning row is handed back (``commit_then``'s
  ``lost``), so the server's pool learns the address is taken and the client's retry gets another one.
- **Other appliances' leases.** Each commit sends a ``NOTIFY`` with the leases it wrote (in the same transaction, so
  it is delivered exactly when they are durable, in commit order). A separate connection ``LISTEN``s and hands the
  other appliances' leases to the watchers (the DHCP servers' pools): an appliance knows the others' clients within
  milliseconds and serves their renewals and rebinds when one of them dies. While that connection is down nothing
  is delivered, so on every reconnect the rows the others changed since (with a minute's margin for clocks) are
  read again.
- **Unreachable.** A commit that cannot be made (connection lost, timeout) fails its replies: nothing leaves that
  promises an uncommitted lease, the clients retry. The connections are re-opened with back-off (0.5 s doubling to
  10 s); the log says so once per outage, and the event stream gets ``store.down`` / ``store.up`` (counters, journal,
  metrics read it). Meanwhile every commit fails at once instead of queueing for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bootstrapd.events import Events
from bootstrapd.leases import pgrows, pgschema
from bootstrapd.leases.phones import PHONES_MAX, PhoneRecord
from bootstrapd.leases.settings import StoreSettings, redact
from bootstrapd.leases.store import SEND_CHUNK, Lease, Lease4, Lease6
from bootstrapd.leases.waiter import LeaseTaken, Waiter

log = logging.getLogger("bootstrapd.leases")

BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
CATCH_UP_MARGIN = 60.0  # seconds before an outage whose rows are read again on reconnect (clock differences)
MAX_BATCH = 2000

# Errors after which the connection is not to be trusted any more: close it and open another.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.InternalClientError,
)
# Errors no retry fixes: a start-up error naming what to do.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError,
    asyncpg.InsufficientPrivilegeError, pgschema.SchemaError,
)


class StoreUnavailable(Exception):
    """PostgreSQL cannot be reached now: the commit was not made (the appliance is reconnecting)."""


class StoreError(Exception):
    """The database refuses this appliance for good (credentials, missing database, schema): a start-up error."""


Outcome = Callable[[BaseException | None, list[Lease]], None]  # (error, winning rows of the leases that lost)
Watcher = Callable[[list[Lease]], None]


@dataclass
class _Item:
    records: list[Lease | PhoneRecord | tuple[str, ...]]
    outcome: Outcome


@dataclass
class _Join:
    """One reply's leases spread over several writers: settled once, when the last part is."""

    outcome: Outcome
    parts: int
    error: BaseException | None = None
    winners: list[Lease] = field(default_factory=list)

    def part(self, error: BaseException | None, winners: list[Lease]) -> None:
        self.error = self.error or error
        self.winners += winners
        self.parts -= 1
        if self.parts == 0:
            self.outcome(self.error, self.winners)


def _shard(address: object, count: int) -> int:
    return zlib.crc32(str(address).encode()) % count if count > 1 else 0


class _Writer:
    """One connection and the queue of what it commits next."""

    def __init__(self, store: PgStore, index: int) -> None:
        self.store = store
        self.index = index
        self.conn: Any = None
        self.queue: list[_Item] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.known_phones: int | None = None

    def put(self, item: _Item) -> None:
        self.queue.append(item)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
            conn = self.conn
            if conn is None or conn.is_closed():
                self.store.settle(batch, StoreUnavailable("PostgreSQL is not reachable; reconnecting"), {})
                continue
            records = [r for item in batch for r in item.records]
            try:
                lost = await self.store.write(self, conn, records)
            except CONNECTION_ERRORS as exc:
                self.store.connection_lost(self, exc)
                self.store.settle(batch, StoreUnavailable(f"commit failed: {_describe(exc)}"), {})
            except asyncpg.PostgresError as exc:  # refused, but the connection lives: the clients retry
                self.known_phones = None
                self.store.commit_failed(exc, len(records))
                self.store.settle(batch, exc, {})
            else:
                self.store.settle(batch, None, lost)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


class PgStore:
    """Leases and shared state in PostgreSQL; open with :meth:`open` (it waits for a reachable server)."""

    backend = "postgresql"

    def __init__(self, settings: StoreSettings, appliance: str, events: Events | None = None,
                 password: str | None = None) -> None:
        self.settings = settings
        self.appliance = appliance
        self.events = events
        self._password = password
        self.where = redact(settings.dsn)
        self.writers = [_Writer(self, i) for i in range(settings.pool_size)]
        self.listener: Any = None
        self.connected = False
        self.commits = 0
        self.committed = 0
        self.commit_seconds = 0.0  # the time all transactions took, for /metrics (bootstrapd_lease_commit_seconds)
        self.lost = 0  # leases that lost to another client's row
        self._watchers: list[Watcher] = []
        self._pending: list[Lease] = []  # other appliances' leases heard before any watcher registered
        self._snapshot4: list[Lease4] = []
        self._snapshot6: list[Lease6] = []
        self._meta: dict[str, bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._closing = False
        self._opened = False  # once open() succeeded: from then on a lost connection is re-opened

    # -- opening ---------------------------------------------------------------------------------------------------
    async def _connect(self) -> Any:
        s = self.settings
        return await asyncpg.connect(
            s.dsn, password=self._password, timeout=s.connect_timeout, command_timeout=s.command_timeout,
            server_settings={"application_name": f"bootstrapd {self.appliance}"[:63]})

    @classmethod
    async def open(cls, settings: StoreSettings, appliance: str, events: Events | None = None,
                   password: str | None = None, *, wait: bool = True) -> PgStore:
        """Connect, check the schema, read the leases; retries with back-off while the server is unreachable
        (``wait``), raises :class:`StoreError` for what no retry fixes."""
        store = cls(settings, appliance, events, password)
        store._loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST
        down_since: float | None = None
        while True:
            try:
                await store._open_connections(first=True)
                break
            except PERMANENT_ERRORS as exc:
                await store._close_connections()
                raise StoreError(f"store.dsn {store.where}: {_describe(exc)}") from None
            except CONNECTION_ERRORS as exc:
                await store._close_connections()
                if not wait:
                    raise StoreError(f"store.dsn {store.where}: cannot connect: {_describe(exc)}") from None
                log.warning("PostgreSQL at %s is not reachable (%s); retrying in %.1f s", store.where,
                            _describe(exc), delay)
                if down_since is None and events is not None:  # an outage too: status and /metrics say so
                    down_since = time.time()
                    events.count("store.disconnected")
                    events.emit("store.down", backend="postgresql", error=_describe(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        if down_since is not None and events is not None:
            events.count("store.reconnected")
            events.emit("store.up", backend="postgresql", outage=round(time.time() - down_since, 3))
        for writer in store.writers:
            writer.task = asyncio.create_task(writer.run(), name=f"pg-writer-{writer.index}")
        store.connected = True
        store._opened = True
        log.info("lease store: PostgreSQL at %s (appliance %s, %d leases loaded)", store.where, appliance,
                 len(store._snapshot4) + len(store._snapshot6))
        return store

    async def _open_connections(self, *, first: bool) -> None:
        """Open every connection; on the first opening read the tables, afterwards catch up with the others."""
        listener = await self._connect()
        self.listener = listener
        await pgschema.check(listener)
        # LISTEN before reading: nothing committed in between is missed (it is delivered, or in what is read).
        await listener.add_listener(pgrows.CHANNEL, self._notified)
        listener.add_termination_listener(self._terminated)
        if first:
            self._snapshot4 = [pgrows.lease4(r) for r in await listener.fetch(pgrows.SELECT4)]
            self._snapshot6 = [pgrows.lease6(r) for r in await listener.fetch(pgrows.SELECT6)]
            rows = await listener.fetch("SELECT key, value FROM meta WHERE appliance = $1", self.appliance)
            self._meta = {k: bytes(v) for k, v in rows}
        else:
            since = (self._down_since or time.time()) - CATCH_UP_MARGIN
            rows4 = await listener.fetch(pgrows.SELECT4 + " WHERE appliance <> $1 AND updated >= $2",
                                         self.appliance, since)
            rows6 = await listener.fetch(pgrows.SELECT6 + " WHERE appliance <> $1 AND updated >= $2",
                                         self.appliance, since)
            self._deliver([pgrows.lease4(r) for r in rows4] + [pgrows.lease6(r) for r in rows6])
        for writer in self.writers:
            if writer.conn is None or writer.conn.is_closed():
                writer.conn = await self._connect()
                writer.conn.add_termination_listener(self._terminated)
                writer.known_phones = None

    async def _close_connections(self) -> None:
        conns = [self.listener, *(w.conn for w in self.writers)]
        self.listener = None
        for writer in self.writers:
            writer.conn = None
        for conn in conns:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 2)
                if not conn.is_closed():
                    conn.terminate()

    # -- losing and regaining the server ---------------------------------------------------------------------------
    def _terminated(self, conn: Any) -> None:
        if not self._closing:
            self.connection_lost(None, ConnectionError("connection closed by the server"))

    def connection_lost(self, writer: _Writer | None, error: BaseException) -> None:
        if self._closing or not self._opened:
            return
        if self.connected:
            self.connected = False
            self._down_since = time.time()
            log.error("lease store: lost PostgreSQL at %s (%s): replies that need a commit are withheld until it is "
                      "back; reconnecting", self.where, _describe(error))
            if self.events is not None:
                self.events.count("store.disconnected")
                self.events.emit("store.down", backend="postgresql", error=_describe(error))
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop(), name="pg-reconnect")

    async def _reconnect_loop(self) -> None:
        await self._close_connections()
        delay = BACKOFF_FIRST
        attempts = 0
        while not self._closing:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                await self._open_connections(first=False)
            except Exception as exc:
                await self._close_connections()
                if attempts == 1 or attempts % 10 == 0:
                    log.warning("lease store: PostgreSQL at %s still unreachable (%s); next try in %.1f s",
                                self.where, _describe(exc), delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            outage = time.time() - (self._down_since or time.time())
            self.connected = True
            self._down_since = None
            log.warning("lease store: PostgreSQL at %s is back after %.1f s; serving again", self.where, outage)
            if self.events is not None:
                self.events.count("store.reconnected")
                self.events.emit("store.up", backend="postgresql", outage=round(outage, 3))
            return

    def commit_failed(self, error: BaseException, count: int) -> None:
        if self.events is not None:
            self.events.count("store.commit_failed")
        log.warning("lease store: commit refused by PostgreSQL: %s (%d records not saved, their replies withheld)",
                    _describe(error), count)

    # -- reading at start-up ---------------------------------------------------------------------------------------
    def leases4(self) -> Iterator[Lease4]:
        snapshot, self._snapshot4 = self._snapshot4, []
        return iter(snapshot)

    def leases6(self) -> list[Lease6]:
        snapshot, self._snapshot6 = self._snapshot6, []
        return snapshot

    def get_meta(self, key: str) -> bytes | None:
        """This appliance's own value (its DHCPv6 server DUID), as read at start-up."""
        return self._meta.get(key)

    def set_meta(self, key: str, value: bytes) -> None:
        """Written with the next commit (not durable when this returns; only start-up values go here)."""
        self._meta[key] = value
        self.writers[0].put(_Item([("meta", self.appliance, key, value.hex())], _log_failure))

    async def shared_value(self, key: str, make: Callable[[], bytes]) -> tuple[bytes, float]:
        """The value every appliance shares under ``key`` and when it was created: the first appliance to ask
        stores ``make()``; every other one gets that same value (the database decides who was first)."""
        conn = await self._connect()
        try:
            await conn.execute("INSERT INTO meta (appliance, key, value, updated) VALUES ('', $1, $2, $3) "
                               "ON CONFLICT DO NOTHING", key, make(), time.time())
            row = await conn.fetchrow("SELECT value, updated FROM meta WHERE appliance = '' AND key = $1", key)
        finally:
            await conn.close()
        return bytes(row[0]), float(row[1])

    # -- committing ------------------------------------------------------------------------------------------------
    def commit(self, leases: Iterable[Lease]) -> asyncio.Future[None]:
        """Queue leases for the next group commit; the future completes once they are durable (raises
        :class:`LeaseTaken` when one lost)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def outcome(error: BaseException | None, winners: list[Lease]) -> None:
            if future.done():
                return
            if error is None and winners:
                error = LeaseTaken(winners)
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self._enqueue(list(leases), outcome)
        return future

    def commit_then(self, leases: Iterable[Lease], waiter: Waiter, reply: Any) -> None:
        """Commit, then tell ``waiter`` about ``reply``: ``committed`` once durable, ``commit_failed`` if the commit
        failed, ``commit_lost`` with the winning rows when an address turned out to be another client's."""

        def outcome(error: BaseException | None, winners: list[Lease]) -> None:
            if error is not None:
                waiter.commit_failed(reply, error)
            elif winners:
                waiter.commit_lost(reply, winners)
            else:
                waiter.committed(reply)

        self._enqueue(list(leases), outcome)

    def record_phones(self, records: Iterable[PhoneRecord],
                      done: Callable[[BaseException | None], None] | None = None) -> None:
        def outcome(error: BaseException | None, winners: list[Lease]) -> None:
            if done is not None:
                done(error)

        self.writers[0].put(_Item(list(records), outcome))

    def record_upload(self, mac: str, name: str, size: int, sha256: str, mtime: float) -> None:
        """Upload metadata (which appliance holds which upload, its digest): written with the next commit."""
        self.writers[0].put(_Item([("upload", mac, name, str(size), sha256, repr(mtime))], _log_failure))

    def _enqueue(self, leases: list[Lease], outcome: Outcome) -> None:
        count = len(self.writers)
        if count == 1 or not leases:
            self.writers[0].put(_Item(list(leases), outcome))
            return
        parts: dict[int, list[Lease]] = {}
        for lease in leases:
            parts.setdefault(_shard(lease.address, count), []).append(lease)
        if len(parts) == 1:
            [(index, mine)] = parts.items()
            self.writers[index].put(_Item(list(mine), outcome))
            return
        join = _Join(outcome, len(parts))
        for index, mine in parts.items():
            self.writers[index].put(_Item(list(mine), join.part))

    async def write(self, writer: _Writer, conn: Any, records: Sequence[Lease | PhoneRecord | tuple[str, ...]]
                    ) -> dict[int, Lease]:
        """One transaction: every record of the batch; returns the winning row of each lease that lost, by id()."""
        now = time.time()
        started = time.perf_counter()
        v4 = [r for r in records if isinstance(r, Lease4)]
        v6 = [r for r in records if isinstance(r, Lease6)]
        phones = [r for r in records if isinstance(r, PhoneRecord)]
        other = [r for r in records if isinstance(r, tuple)]
        lost: dict[int, Lease] = {}
        won: list[Lease] = []
        async with conn.transaction():
            for leases, statement in ((v4, pgrows.UPSERT4), (v6, pgrows.UPSERT6)):
                losers: list[Lease] = []
                for group in pgrows.rounds(leases):
                    columns = pgrows.columns4(group) if statement is pgrows.UPSERT4 else pgrows.columns6(group)  # type: ignore[arg-type]
                    written = {row[0] for row in await conn.fetch(statement, *columns, self.appliance, now)}
                    for lease in group:
                        (won if lease.address in written else losers).append(lease)
                if losers:
                    select = pgrows.SELECT4 if statement is pgrows.UPSERT4 else pgrows.SELECT6
                    rows = await conn.fetch(select + " WHERE address = ANY($1::inet[])",
                                            list({x.address for x in losers}))
                    decode = pgrows.lease4 if statement is pgrows.UPSERT4 else pgrows.lease6
                    current: dict[object, Lease] = {r[0]: decode(r) for r in rows}
                    for lease in losers:
                        winner = current.get(lease.address)
                        if winner is not None:
                            lost[id(lease)] = winner
            if phones:
                await self._write_phones(writer, conn, phones)
            for record in other:
                if record[0] == "meta":
                    await conn.execute(pgrows.UPSERT_META, record[1], record[2], bytes.fromhex(record[3]), now)
                elif record[0] == "upload":
                    await conn.execute(pgrows.UPSERT_UPLOAD, self.appliance, record[1], record[2], int(record[3]),
                                       record[4], float(record[5]))
            if won:
                await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", pgrows.CHANNEL,
                                   pgrows.payloads(self.appliance, won))
        self.commit_seconds += time.perf_counter() - started
        self.commits += 1
        self.committed += len(records)
        self.lost += len(lost)
        if lost and self.events is not None:
            self.events.count("store.lease_lost", len(lost))
        return lost

    async def _write_phones(self, writer: _Writer, conn: Any, phones: list[PhoneRecord]) -> None:
        latest: dict[str, PhoneRecord] = {}
        for record in phones:  # one row per MAC per statement: the newest
            if record.mac not in latest or latest[record.mac].seen <= record.seen:
                latest[record.mac] = record
        records = list(latest.values())
        if writer.known_phones is None:
            writer.known_phones = int(await conn.fetchval(pgrows.COUNT_PHONES))
        if writer.known_phones + len(records) > PHONES_MAX:
            # Near the cap: updates of known MACs, and new MACs only while there is room. (Each appliance counts
            # for itself, so appliances writing at once may pass the cap by a batch: a bound, not an exact count.)
            known = {r[0] for r in await conn.fetch(pgrows.KNOWN_PHONES, [r.mac for r in records])}
            room = max(0, PHONES_MAX - writer.known_phones)
            records = [r for r in records if r.mac in known] + [r for r in records if r.mac not in known][:room]
            if not records:
                return
        inserted = await conn.fetch(pgrows.UPSERT_PHONE, *pgrows.phone_columns(records))
        writer.known_phones += sum(1 for row in inserted if row[0])

    def settle(self, batch: list[_Item], error: BaseException | None, lost: dict[int, Lease]) -> None:
        """Tell every waiter of a batch its outcome, a few per event-loop iteration (see store.SEND_CHUNK)."""
        results: list[tuple[Outcome, list[Lease]]] = []
        for item in batch:
            winners = [lost[id(r)] for r in item.records if id(r) in lost] if lost else []
            results.append((item.outcome, winners))
        _settle(results, error)

    # -- the other appliances' leases ------------------------------------------------------------------------------
    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher`` with every batch of leases another appliance commits (and with what was heard before)."""
        self._watchers.append(watcher)
        if self._pending:
            watcher(list(self._pending))

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            sender, leases = pgrows.decode(payload)
        except ValueError as exc:
            if self.events is not None:
                self.events.count("store.notification_dropped")
            log.debug("dropped a notification on %s: %s", channel, exc)
            return
        if sender == self.appliance or not leases:
            return
        if self.events is not None:
            self.events.count("store.leases_learnt", len(leases))
        self._deliver(leases)

    def _deliver(self, leases: list[Lease]) -> None:
        if not leases:
            return
        if not self._watchers:
            if len(self._pending) < 200_000:
                self._pending.extend(leases)
            return
        self._pending.clear()
        for watcher in self._watchers:
            try:
                watcher(leases)
            except Exception:
                log.exception("a lease watcher failed")

    # -- closing ---------------------------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Commit what is queued (a few seconds at most), then close every connection."""
        deadline = time.monotonic() + 5
        while any(w.queue for w in self.writers) and self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._closing = True
        for writer in self.writers:
            if writer.task is not None:
                writer.task.cancel()
        if self._reconnect is not None:
            self._reconnect.cancel()
        for writer in self.writers:
            if writer.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer.task
        await self._close_connections()


def _log_failure(error: BaseException | None, winners: list[Lease]) -> None:
    if error is not None:
        log.warning("lease store: a metadata record was not saved: %s", _describe(error))


def _settle(results: list[tuple[Outcome, list[Lease]]], error: BaseException | None) -> None:
    for outcome, winners in results[:SEND_CHUNK]:
        try:
            outcome(error, winners)
        except Exception:  # one reply that fails to go out must not keep the others of its batch from leaving
            log.exception("sending a reply after its commit")
    if len(results) > SEND_CHUNK:
        asyncio.get_running_loop().call_soon(_settle, results[SEND_CHUNK:], error)
