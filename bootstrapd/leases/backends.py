"""One store interface, two backends: SQLite (:mod:`.store`, one appliance), PostgreSQL (:mod:`.postgresql`, several).

Services see only :class:`Store`: start-up reads (``leases4``/``leases6``, their own ``get_meta``), group commits with
the reply released by ``commit_then``, phone records, and ``watch`` for the leases other appliances commit (never
called with SQLite). Neither backend knows a protocol: they store rows and report which ones lost.

:func:`open_store` opens the configured backend for the daemon; :func:`read_store` gives the command-line tools
(``leases``, ``resync``) the same rows without a running daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bootstrapd.events import Events
from bootstrapd.leases.phones import PhoneRecord
from bootstrapd.leases.settings import StoreSettings
from bootstrapd.leases.store import Lease, Lease4, Lease6, LeaseStore
from bootstrapd.leases.waiter import Waiter

if TYPE_CHECKING:
    from bootstrapd.config import Settings

SQLITE_FILE = "leases.sqlite3"


class Store(Protocol):
    backend: str
    connected: bool
    appliance: str  # this appliance's name in a shared store ("" with SQLite)
    commits: int  # transactions made, leases in them and the time they took (/metrics)
    committed: int
    commit_seconds: float

    def leases4(self) -> Iterable[Lease4]: ...

    def leases6(self) -> list[Lease6]: ...

    def get_meta(self, key: str) -> bytes | None: ...

    def set_meta(self, key: str, value: bytes) -> None: ...

    def commit(self, leases: Iterable[Lease]) -> asyncio.Future[None]: ...

    def commit_then(self, leases: Iterable[Lease], waiter: Waiter, reply: Any) -> None: ...

    def record_phones(self, records: Iterable[PhoneRecord],
                      done: Callable[[BaseException | None], None] | None = None) -> None: ...

    def record_upload(self, mac: str, name: str, size: int, sha256: str, mtime: float) -> None: ...

    def watch(self, watcher: Callable[[list[Lease]], None]) -> None: ...

    async def shutdown(self) -> None: ...


class StoreOpenError(Exception):
    """The configured store cannot be used (the message names the key and what to do)."""


def password(settings: StoreSettings) -> str | None:
    """The database password from ``store.password_file`` (None: asyncpg looks at $PGPASSWORD and ~/.pgpass)."""
    if settings.password_file is None:
        return None
    from bootstrapd.credentials import CredentialError

    try:
        path = settings.password_file.resolve()
        text = path.read_text(encoding="utf-8")
    except CredentialError as exc:
        raise StoreOpenError(str(exc)) from None
    except OSError as exc:
        raise StoreOpenError(f"store.password_file {path}: {exc.strerror or exc}") from None
    return text.rstrip("\r\n")


async def open_store(settings: Settings, events: Events, appliance: str) -> Store:
    """The daemon's store: SQLite in ``state_dir``, or PostgreSQL (waits for a reachable server; raises
    :class:`StoreOpenError` for a wrong password, a missing database or schema)."""
    store_settings = settings.store
    if not store_settings.shared:
        sqlite = LeaseStore(settings.server.state_dir / SQLITE_FILE, window=settings.dhcp4.commit_window_ms / 1000,
                            events=events)
        sqlite.start(asyncio.get_running_loop())
        return sqlite
    from bootstrapd.leases.postgresql import PgStore, StoreError

    try:
        return await PgStore.open(store_settings, store_settings.appliance or appliance, events,
                                  password(store_settings))
    except StoreError as exc:
        raise StoreOpenError(str(exc)) from None


@dataclass
class Rows:
    """What the tools read: every lease row and phone record."""

    leases4: list[Lease4] = field(default_factory=list)
    leases6: list[Lease6] = field(default_factory=list)
    phones: list[PhoneRecord] = field(default_factory=list)

    def phone(self, mac: str) -> PhoneRecord | None:
        return next((p for p in self.phones if p.mac == mac), None)


def read_store(settings: Settings, *, phones: bool = False) -> Rows:
    """Every row of the configured store, for ``leases`` and ``resync`` (no daemon needed; SQLite read-only)."""
    if not settings.store.shared:
        from bootstrapd.leases.phones import read_phones
        from bootstrapd.leases.store import connect, read_leases4, read_leases6

        path = settings.server.state_dir / SQLITE_FILE
        if not path.exists():
            return Rows()
        conn = connect(path, readonly=True)
        try:
            rows = Rows(read_leases4(conn))
            try:
                rows.leases6 = read_leases6(conn)
            except Exception:  # a store written by a version without the table
                rows.leases6 = []
            if phones:
                rows.phones = list(read_phones(conn))
        finally:
            conn.close()
        return rows
    return asyncio.run(_read_pg(settings.store, phones))


async def _read_pg(settings: StoreSettings, phones: bool) -> Rows:
    import asyncpg

    from bootstrapd.leases import pgrows, pgschema
    from bootstrapd.leases.postgresql import CONNECTION_ERRORS, PERMANENT_ERRORS
    from bootstrapd.leases.settings import redact

    try:
        conn = await asyncpg.connect(settings.dsn, password=password(settings), timeout=settings.connect_timeout,
                                     command_timeout=max(settings.command_timeout, 60))
    except (*PERMANENT_ERRORS, *CONNECTION_ERRORS) as exc:
        raise StoreOpenError(f"store.dsn {redact(settings.dsn)}: {str(exc).splitlines()[0]}") from None
    try:
        try:
            await pgschema.check(conn)
        except pgschema.SchemaError as exc:
            raise StoreOpenError(f"store.dsn {redact(settings.dsn)}: {exc}") from None
        rows = Rows([pgrows.lease4(r) for r in await conn.fetch(pgrows.SELECT4)],
                    [pgrows.lease6(r) for r in await conn.fetch(pgrows.SELECT6)])
        if phones:
            rows.phones = [PhoneRecord(*r) for r in await conn.fetch(pgrows.SELECT_PHONE + " ORDER BY mac")]
        return rows
    finally:
        await conn.close()
