"""Which journal store: the ``[store]`` backend decides, as it does for the leases.

SQLite (the default): ``state_dir/journal.sqlite3``, this appliance's own. PostgreSQL: the database the appliances
share (:mod:`.pgjournal`), so that ``bootstrapd status`` and ``/api/phones`` on either appliance show a phone's whole
journey. Every function here may block (opening a file, a thread): call it off the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bootstrapd.journal.store import FILE, JournalStore, JournalUnavailable, SqliteJournal

if TYPE_CHECKING:
    from bootstrapd.config import Settings


def _password(settings: Settings) -> str | None:
    from bootstrapd.leases.backends import StoreOpenError, password

    try:
        return password(settings.store)
    except StoreOpenError as exc:
        raise JournalUnavailable(str(exc)) from None


def open_journal(settings: Settings, appliance: str) -> JournalStore:
    """The daemon's journal, written by ``appliance`` (its name in a shared store)."""
    if not settings.store.shared:
        return SqliteJournal(settings.server.state_dir / FILE)
    from bootstrapd.journal.pgjournal import PgJournal

    return PgJournal(settings.store, appliance, _password(settings))


def open_reader(settings: Settings) -> JournalStore | None:
    """The journal for reading (``status``, the API), or None when there is none yet (no SQLite file)."""
    if not settings.store.shared:
        path = settings.server.state_dir / FILE
        return SqliteJournal(path, readonly=True) if path.exists() else None
    from bootstrapd.journal.pgjournal import PgJournal

    return PgJournal(settings.store, "", _password(settings))


@contextlib.contextmanager
def reading(settings: Settings, running: JournalStore | None = None) -> Iterator[JournalStore | None]:
    """A store to read from for one request: the daemon's own (``running``) when it serves any thread at once,
    else one opened for this read and closed after it."""
    if running is not None and running.threadsafe:
        yield running
        return
    store = open_reader(settings)
    try:
        yield store
    finally:
        if store is not None:
            store.close()
