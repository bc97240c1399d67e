"""Durable lease storage: SQLite in WAL mode, ``synchronous=FULL``, with group commit.

A DHCP reply that hands out an address may leave only once the lease is on stable storage. One fsync per lease would
cap a laptop disk at tens of leases per second, so a single writer thread takes every lease queued while the previous
commit was running (plus those arriving within ``window`` seconds) and commits them in one transaction: one fsync per
batch. Callers await :meth:`LeaseStore.commit`; the reply is sent when it returns.

DHCPv4 and DHCPv6 share the store and the writer; each has its own table. Phone records (:mod:`.phones`, where
a phone was seen, by MAC) go through the same writer, without anyone waiting on them.

A commit that fails (the disk is full, an I/O error) fails every reply of its batch: nothing is sent for a lease that
is not on disk, the clients retransmit, and the next batch tries again, so the store recovers by itself once there is
room. Each failure is counted (``store.disk_full`` or ``store.commit_failed``) and logged with SQLite's own message,
at most every 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, cast

from bootstrapd.events import Events
from bootstrapd.leases import phones
from bootstrapd.leases.phones import PhoneRecord
from bootstrapd.leases.waiter import LeaseTaken, Waiter
from bootstrapd.log import RateLimited

SCHEMA = """
CREATE TABLE IF NOT EXISTS lease4 (
    address TEXT PRIMARY KEY,
    mac BLOB NOT NULL,
    client_id BLOB,
    expires REAL NOT NULL,
    state TEXT NOT NULL,
    hostname TEXT,
    vendor_class TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lease6 (
    address TEXT PRIMARY KEY,
    duid BLOB NOT NULL,
    iaid INTEGER NOT NULL,
    expires REAL NOT NULL,
    state TEXT NOT NULL,
    mac BLOB,
    hostname TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB);
"""

ACTIVE = "active"
RELEASED = "released"
DECLINED = "declined"


@dataclass(slots=True)
class Lease4:
    address: IPv4Address
    mac: bytes
    client_id: bytes | None
    expires: float  # wall-clock seconds
    state: str = ACTIVE
    hostname: str | None = None
    vendor_class: str | None = None


@dataclass(slots=True)
class Lease6:
    address: IPv6Address
    duid: bytes
    iaid: int
    expires: float
    state: str = ACTIVE
    mac: bytes | None = None
    hostname: str | None = None


Lease = Lease4 | Lease6


# Rows go in as one multi-row INSERT per chunk, not one executemany row each: CPython's sqlite3 releases and takes
# back the interpreter lock around every sqlite3_step, and each of those is a hand-over with the busy event loop
# (then a wait for it to let go again); one statement per chunk also costs SQLite about half as much per row
# (tests/bench/store.py). The chunks are powers of two up to 256 rows (2,048 parameters; SQLite allows 32,766), so a
# batch of n rows takes at most popcount(n) statements and the statement cache holds nine per table.
# A batch of at most _SINGLE rows of one table (most of them: tens of leases) is one statement of exactly its size
# instead, and outside BEGIN/COMMIT: a statement in autocommit mode is its own transaction (fsynced before it
# returns, all or nothing), so the commit takes one sqlite3_step, one GIL hand-over, instead of five or six
# (tests/bench/store.py: the writer's voluntary context switches per lease -20%). Those statements stay in the
# connection's cache (connect: cached_statements); the 64 of lease4 take ~1.8 MB prepared.
_WIDTH = 8  # columns of lease4 and of lease6
_CHUNK = 256
_SINGLE = 64


@functools.cache
def _statement(table: str, rows: int) -> str:
    row = "(" + ", ".join(["?"] * _WIDTH) + ")"
    return f"INSERT OR REPLACE INTO {table} VALUES " + ", ".join([row] * rows)


def _statements(table: str) -> dict[int, str]:
    return {1 << k: _statement(table, 1 << k) for k in range(_CHUNK.bit_length())}


_INSERT4 = _statements("lease4")
_INSERT6 = _statements("lease6")


def _insert(conn: sqlite3.Connection, statements: dict[int, str], values: list[object]) -> None:
    """``values``: the rows' columns one after the other (``_WIDTH`` a row), inserted in order (a later row of the
    same address wins, as it did row by row)."""
    start, rows = 0, len(values) // _WIDTH
    while rows:
        n = min(_CHUNK, 1 << (rows.bit_length() - 1))
        end = start + n * _WIDTH
        conn.execute(statements[n], values[start:end])
        start, rows = end, rows - n


# CPython's sqlite3 binds int, float, str and bytearray as they are, but sends every other value, None included,
# through its adapter look-up first, which builds and throws away an AttributeError each time (~250 ns a value; a
# lease row has two or three Nones). An adapter registered for None is found at once and gives None back: the same
# NULL, bound for every connection of the process (adapters are the sqlite3 module's, not a connection's).
# ({}.get: a C function that returns None for None, so the adapter costs no Python frame either.)
sqlite3.register_adapter(type(None), cast(Callable[[None], None], {}.get))


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    # cached_statements: the writer's INSERTs (see _SINGLE: up to 2 x 66) and the few others, all kept prepared.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, cached_statements=256)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: in WAL mode, NORMAL does not fsync on commit and could lose ACKed leases on power loss.
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA + phones.SCHEMA)
    return conn


def iter_leases4(conn: sqlite3.Connection) -> Iterator[Lease4]:
    """Stream the rows: at start-up with 50,000 leases a full list would double the peak memory."""
    rows = conn.execute("SELECT address, mac, client_id, expires, state, hostname, vendor_class FROM lease4")
    for a, m, c, e, s, h, v in rows:
        yield Lease4(IPv4Address(a), bytes(m), bytes(c) if c is not None else None, e, s, h, v)


def read_leases4(conn: sqlite3.Connection) -> list[Lease4]:
    return list(iter_leases4(conn))


def read_leases6(conn: sqlite3.Connection) -> list[Lease6]:
    rows = conn.execute("SELECT address, duid, iaid, expires, state, mac, hostname FROM lease6").fetchall()
    return [Lease6(IPv6Address(a), bytes(d), i, e, s, bytes(m) if m is not None else None, h)
            for a, d, i, e, s, m, h in rows]


_AF_INET6 = socket.AF_INET6
_ZERO80 = bytes(10)

log = logging.getLogger("bootstrapd.leases")
_limited = RateLimited(log, interval=30.0)


def is_disk_full(error: BaseException) -> bool:
    """SQLITE_FULL: the file system (or the database's size limit) has no room for the transaction."""
    return isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


Done = Callable[[BaseException | None], None]
# What was queued, who waits for it and what for (the waiter's own reply, handed back: see waiter.py), as the
# caller gave them, so that commit_then (once per reply, on the loop) builds nothing but this tuple.
_Item = tuple[list[Lease | PhoneRecord], Waiter, Any]


class _Future:
    """The waiter of :meth:`LeaseStore.commit`: its reply is the future to complete."""

    @staticmethod
    def committed(future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)

    @staticmethod
    def commit_failed(future: asyncio.Future[None], error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    @staticmethod
    def commit_lost(future: asyncio.Future[None], winners: list[Lease]) -> None:
        _Future.commit_failed(future, LeaseTaken(winners))


class _Done:
    """The waiter of :meth:`LeaseStore.record_phones`: its reply is the ``done`` callback (or None)."""

    @staticmethod
    def committed(done: Done | None) -> None:
        if done is not None:
            done(None)

    @staticmethod
    def commit_failed(done: Done | None, error: BaseException) -> None:
        if done is not None:
            done(error)

    @staticmethod
    def commit_lost(done: Done | None, winners: list[Lease]) -> None:
        return None  # phone records have no address to lose


class LeaseStore:
    """The lease database with a group-committing writer thread (one appliance; see backends.Store)."""

    backend = "sqlite"
    connected = True  # a local file: there is no connection to lose
    appliance = ""  # a name only appliances sharing a store need

    def __init__(self, path: Path, *, window: float = 0.002, max_batch: int = 2000,
                 events: Events | None = None) -> None:
        self.path = path
        self.events = events
        self.window = window
        self.max_batch = max_batch
        self.conn = connect(path)
        self.commits = 0
        self.committed = 0
        self.commit_seconds = 0.0  # the time all commits took, for /metrics (bootstrapd_lease_commit_seconds)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._phones: int | None = None  # rows in the phone table (the writer's own count)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # Reading happens once, at start-up, before the writer runs.
    def leases4(self) -> Iterator[Lease4]:
        return iter_leases4(self.conn)

    def leases6(self) -> list[Lease6]:
        return read_leases6(self.conn)

    def get_meta(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def set_meta(self, key: str, value: bytes) -> None:
        """Synchronous, durable write of a small value (the server DUID); not for the hot path."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="lease-writer", daemon=True)
        self._thread.start()

    def commit(self, leases: Iterable[Lease]) -> asyncio.Future[None]:
        """Queue leases for the next group commit; the future completes once they are durable."""
        assert self._loop is not None, "start() the store first"
        future: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((list(leases), _Future, future))
        return future

    def commit_then(self, leases: Iterable[Lease], waiter: Waiter, reply: Any) -> None:
        """Commit, then tell ``waiter`` about ``reply``: ``committed`` once durable (the held-back reply leaves),
        ``commit_failed`` if the commit failed. (``commit_lost`` is never called here: one appliance's pool is the
        only writer, so no lease can lose its address to another appliance's client as it can in a shared store.)

        The waiters are told together in one event-loop callback per batch: no future, task or extra loop iteration
        per reply on the hot path.
        """
        assert self._loop is not None, "start() the store first"
        self._queue.put((list(leases), waiter, reply))

    def record_phones(self, records: Iterable[PhoneRecord], done: Done | None = None) -> None:
        """Queue phone records for the next group commit; nobody waits for them (``done`` is told the outcome)."""
        self._queue.put((list(records), _Done, done))

    def watch(self, watcher: Callable[[list[Lease]], None]) -> None:
        """Other appliances' leases: there are none with a store of one's own."""

    def record_upload(self, mac: str, name: str, size: int, sha256: str, mtime: float) -> None:
        """Upload metadata matters only when appliances share a store: the upload store itself is the record."""

    async def shutdown(self) -> None:
        """Commit what is queued and close (the writer thread is joined off the event loop)."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def write_now(self, leases: Iterable[Lease | PhoneRecord]) -> None:
        """Commit synchronously (tools and tests without an event loop)."""
        self._write(list(leases))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        self.conn.close()

    def _write(self, leases: list[Lease | PhoneRecord]) -> None:
        now = time.time()
        # One pass, the row's columns appended flat: this runs with the interpreter lock held, so every us here is
        # one the event loop waits. inet_ntoa gives the text str(IPv4Address) gives, at half the cost. The blobs go
        # in as bytearray: bytes would go through sqlite3's adapter look-up (above: ~290 ns a value, against ~70
        # for the copy); the column gets the same BLOB.
        values4: list[object] = []
        add4 = values4.extend
        ntoa = socket.inet_ntoa
        ntop = socket.inet_ntop
        values6: list[object] = []
        add6 = values6.extend
        records: list[PhoneRecord] = []
        for x in leases:
            if isinstance(x, Lease4):
                cid = x.client_id
                add4((ntoa(x.address.packed), bytearray(x.mac), cid if cid is None else bytearray(cid), x.expires,
                      x.state, x.hostname, x.vendor_class, now))
            elif isinstance(x, Lease6):
                mac = x.mac
                packed = x.address.packed
                # inet_ntop gives the text str(IPv6Address) gives (RFC 5952, tested), at a sixth of the cost, but
                # for addresses whose first 80 bits are zero, which it writes with an IPv4 tail (::ffff:1.2.3.4).
                add6((ntop(_AF_INET6, packed) if packed[:10] != _ZERO80 else str(x.address), bytearray(x.duid),
                      x.iaid, x.expires, x.state, mac if mac is None else bytearray(mac), x.hostname, now))
            elif isinstance(x, PhoneRecord):
                records.append(x)
        if not records and not (values4 and values6) and 0 < len(values4 or values6) <= _SINGLE * _WIDTH:
            values = values4 or values6  # one table, few rows: one statement, its own transaction (above)
            self.conn.execute(_statement("lease4" if values4 else "lease6", len(values) // _WIDTH), values)
            return
        self.conn.execute("BEGIN")
        try:
            if values4:
                _insert(self.conn, _INSERT4, values4)
            if values6:
                _insert(self.conn, _INSERT6, values6)
            if records:
                self._phones = phones.write(self.conn, records, phones.count(self.conn) if self._phones is None
                                            else self._phones)
            self.conn.execute("COMMIT")
        except BaseException:
            self._phones = None  # counted again next time
            # SQLite rolls the transaction back by itself on some errors (SQLITE_FULL, most I/O errors): a ROLLBACK
            # then fails with "cannot rollback - no transaction is active" and would hide the real error.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            leases, waiters, replies = first[0], [first[1]], [first[2]]  # first[0]: the store's own copy
            # The window is slept through, then whatever queued meanwhile is taken at once: waiting on the queue
            # instead woke this thread (a futex, then the GIL taken back from the loop) for every reply: twice the
            # context switches per DHCPv4 exchange at 2,000/s (README, "Where the time goes").
            if self.window > 0:
                time.sleep(self.window)
            # qsize is exact here (only this thread takes from the queue), so no get_nowait ends in queue.Empty.
            get, extend, add_waiter, add_reply = self._queue.get_nowait, leases.extend, waiters.append, replies.append
            for _ in range(min(self._queue.qsize(), self.max_batch - 1)):
                item = get()
                if item is None:
                    stopping = True
                    break
                extend(item[0])
                add_waiter(item[1])
                add_reply(item[2])
            error: BaseException | None = None
            try:
                started = time.perf_counter()
                self._write(leases)
                self.commit_seconds += time.perf_counter() - started
                self.commits += 1
                self.committed += len(leases)
            except BaseException as exc:  # reported to every waiter: no reply leaves for an unsaved lease
                error = exc
            assert self._loop is not None
            try:
                if error is not None:
                    self._loop.call_soon_threadsafe(self._failed, error, len(leases))
                self._loop.call_soon_threadsafe(_settle, self._loop, waiters, replies, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _failed(self, error: BaseException, count: int) -> None:
        """On the event loop: count and report a failed commit (its replies are withheld by their callbacks)."""
        full = is_disk_full(error)
        if self.events is not None:
            self.events.count("store.disk_full" if full else "store.commit_failed")
        what = "disk full" if full else "commit failed"
        _limited.warning(what, "lease store %s: %s: %s (%d records not saved, the replies waiting on them withheld; "
                         "the clients retry)", self.path, what, error, count)


# Replies released by one commit go out at most this many per event-loop iteration. A commit that took 25 ms at
# 4,000 exchanges/s releases 100 ACKs at once; sent back to back they overflow a relay's (or perfdhcp's) default
# socket buffer, measured as RcvbufErrors on the client side. Interleaving them with the loop's other work spaces
# them out at no cost in latency worth speaking of.
SEND_CHUNK = 8


def _settle(loop: asyncio.AbstractEventLoop, waiters: list[Waiter], replies: list[Any],
            error: BaseException | None) -> None:
    """Tell each waiter about its reply: committed, or the commit failed with ``error``."""
    for waiter, reply in zip(waiters[:SEND_CHUNK], replies[:SEND_CHUNK], strict=True):
        try:
            if error is None:
                waiter.committed(reply)
            else:
                waiter.commit_failed(reply, error)
        except Exception:  # one reply that fails to go out must not keep the others of its batch from leaving
            logging.getLogger("bootstrapd.leases").exception("sending a reply after its commit failed")
    if len(waiters) > SEND_CHUNK:
        loop.call_soon(_settle, loop, waiters[SEND_CHUNK:], replies[SEND_CHUNK:], error)
