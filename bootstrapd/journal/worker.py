"""The journal's own process: the :class:`~bootstrapd.journal.journal.Journal` fed through a pipe by the daemon.

Why a process: in the daemon the journal's folding and encoding (10-20 µs per DORA exchange) ran on the event loop's
GIL, and at 4,000 DHCPv4 exchanges/s on two cores that cost 25-80% more CPU per exchange and, at 5,000/s, half the
exchanges (``tests.bench.dhcp4 --journal-ab``). Here the same code runs on an interpreter of its own; the daemon only
ties each event to a phone and pickles the batch (:mod:`bootstrapd.journal.client`).

Messages from the daemon (pickled tuples): ``("events", [(time, kind, fields), …])`` (every event already carries its
phone's MAC), ``("reload", settings)``, ``("flush", token)``, ``("stop",)``. To the daemon: ``("counts", stage
counts, batches, written, commit seconds, counters)`` twice a second and after a flush (with the token), and
``("stopped", …)`` last. The end of the pipe (the daemon gone) stops it too.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from multiprocessing.connection import Connection
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.events import Events
from bootstrapd.journal.journal import Expected, Journal
from bootstrapd.journal.store import FILE, SqliteJournal
from bootstrapd.leases.owners import LeaseOwners

log = logging.getLogger("bootstrapd.journal")

REPORT_INTERVAL = 0.5


def _expected(settings: list[Settings], interface: Any, with_model: bool) -> tuple[Expected | None, Any]:
    """The provisioning model's download list, from a model built here (the daemon's keys, not new ones)."""
    if not with_model:
        return None, None
    from bootstrapd.journal.expected import downloads_for
    from bootstrapd.provisioning.tree import Provisioning

    holder: list[Any] = [None]

    def build() -> None:
        provisioning = Provisioning(settings[0], create_keys=False)
        provisioning.rendered.refresh(force=True)
        holder[0] = provisioning

    return downloads_for(lambda: settings[0], interface, lambda: holder[0]), build


def run(settings: Settings, interface: Any, with_model: bool, conn: Connection) -> None:
    """The child's main."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    current = [settings]
    expected, build = _expected(current, interface, with_model)
    events = Events()
    journal = Journal(settings.journal, SqliteJournal(settings.server.state_dir / FILE), events, LeaseOwners(),
                      expected)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    done = loop.create_future()
    try:
        if build is not None:
            try:
                build()
            except Exception:  # no model: "done" falls back to <mac>.cfg
                log.exception("journal: the provisioning model could not be built")
        journal.load()
        journal.start(loop)
        loop.add_reader(conn.fileno(), _readable, conn, journal, current, build, loop, done)
        _report(conn, journal, loop, done)
        loop.run_until_complete(done)
    finally:
        loop.close()


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    try:
        conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError:
        pass  # the daemon is gone; the end of the pipe stops us


def _counts(journal: Journal) -> tuple[Any, ...]:
    return (dict(journal.stage_counts), journal.batches, journal.written, journal.commit_seconds_total,
            {k: v for k, v in journal.events.counters.items() if k.startswith("journal.")})


def _report(conn: Connection, journal: Journal, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
    if done.done():
        return
    _send(conn, ("counts", None, *_counts(journal)))
    loop.call_later(REPORT_INTERVAL, _report, conn, journal, loop, done)


def _readable(conn: Connection, journal: Journal, current: list[Settings], build: Any,
              loop: asyncio.AbstractEventLoop, done: asyncio.Future[None]) -> None:
    try:
        message = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        _stop(conn, journal, loop, done, reply=False)
        return
    kind = message[0]
    if kind == "events":
        journal._pending.extend(message[1])
    elif kind == "flush":
        token = message[1]

        async def flush() -> None:
            await journal.flush()
            _send(conn, ("counts", token, *_counts(journal)))

        loop.create_task(flush())
    elif kind == "reload":
        current[0] = message[1]
        journal.reload(current[0].journal)
        if build is not None:
            loop.run_in_executor(None, build)
    elif kind == "stop":
        _stop(conn, journal, loop, done, reply=True)


def _stop(conn: Connection, journal: Journal, loop: asyncio.AbstractEventLoop, done: asyncio.Future[None],
          reply: bool) -> None:
    if done.done():
        return
    loop.remove_reader(conn.fileno())
    journal.finish()
    journal.join()
    if reply:
        _send(conn, ("stopped", None, *_counts(journal)))
    done.set_result(None)
