"""The daemon's side of the journal: the event sink, and a pipe to the journal's own process (``worker.py``).

On the daemon's hot paths only :meth:`JournalClient.sink` runs: an O(1) append. Every ``flush_interval`` the loop
ties the batch's requests to phones (the event's MAC, else the lease on its address: ``ctx.owners``, with the
event's own time) and pickles it; a thread writes it to the pipe (the write may wait for the child, the loop never
does). The child's figures (phones per stage, batches, commit time) come back twice a second for ``/metrics``.

It answers like :class:`~bootstrapd.journal.journal.Journal` where the daemon uses one: ``stage_counts``,
``batches``, ``commit_seconds_total``, ``flush()``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import pickle
import queue
import threading
import time
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.events import Events
from bootstrapd.journal.steps import RECORDED, address_of, normal_mac, phone_of
from bootstrapd.leases.owners import LeaseOwners

log = logging.getLogger("bootstrapd.journal")

_Event = tuple[float, str, dict[str, Any]]


class JournalClient:
    def __init__(self, settings: Settings, events: Events, owners: LeaseOwners, interface: Any,
                 with_model: bool) -> None:
        self.settings = settings
        self.events = events
        self.owners = owners
        self.interface = interface
        self.with_model = with_model
        self._pending: list[_Event] = []
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._process: Any = None
        self._conn: Any = None
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._stopped = threading.Event()
        self.stage_counts: dict[str, int] = {}
        self.batches = 0
        self.written = 0
        self.commit_seconds_total = 0.0
        self._counters: dict[str, int] = {}

    # -- the sink: on every service's hot path ------------------------------------------------------------------
    def sink(self, kind: str, fields: dict[str, Any]) -> None:
        if kind not in RECORDED:
            return
        pending = self._pending
        if len(pending) >= self.settings.journal.max_pending:
            self.events.counters["journal.dropped"] += 1
            return
        pending.append((time.time(), kind, fields))

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from bootstrapd.journal.worker import run

        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self._process = context.Process(target=run, name="bootstrapd-journal", daemon=True,
                                        args=(self.settings, self.interface, self.with_model, child))
        self._process.start()
        child.close()
        self._conn = parent
        self._loop = loop
        self._sender = threading.Thread(target=self._send_loop, name="journal-pipe", daemon=True)
        self._sender.start()
        loop.add_reader(parent.fileno(), self._readable)
        self.events.subscribe(self.sink)
        self._timer = loop.call_later(self.settings.journal.flush_interval, self._tick)

    def reload(self, settings: Settings) -> None:
        self.settings = settings
        self._post(("reload", settings))

    def finish(self) -> None:
        """Hand over what is pending and ask the child to write it and stop (on the loop); then :meth:`join`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hand_over()
        self._post(("stop",))
        self._outbox.put(None)

    def join(self, timeout: float = 15.0) -> None:
        """Wait for the child to write its last batch and end (blocks)."""
        self._stopped.wait(timeout)
        if self._sender is not None:
            self._sender.join(timeout=5)
        if self._process is not None:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
        if self._loop is not None and self._conn is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._close)
            except RuntimeError:
                self._conn.close()

    def _close(self) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self._conn.fileno())
        self._conn.close()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Hand over what is pending and wait until the child has written it."""
        assert self._loop is not None
        self._hand_over()
        token = next(self._tokens)
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting[token] = future
        self._post(("flush", token))
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiting.pop(token, None)

    # -- the loop side ------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        assert self._loop is not None
        self._hand_over()
        self._timer = self._loop.call_later(self.settings.journal.flush_interval, self._tick)

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        mac_for = self.owners.mac_for
        ready: list[_Event] = []
        unknown = 0
        for when, kind, fields in batch:
            if phone_of(kind, fields) is None:
                address = address_of(kind, fields)
                owner = mac_for(address, when) if address else None
                mac = normal_mac(owner) if owner else None
                if mac is None:
                    unknown += 1
                    continue
                fields = {**fields, "mac": mac}
            ready.append((when, kind, fields))
        if unknown:
            self.events.counters["journal.unknown_phone"] += unknown
        if ready:
            self._post(("events", ready))

    def _post(self, message: tuple[Any, ...]) -> None:
        try:
            self._outbox.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except (pickle.PicklingError, TypeError, AttributeError):
            # A field a service put in its event that does not pickle: the batch is lost, counted, logged once.
            self.events.counters["journal.write_failed"] += 1
            log.exception("journal: a batch could not be handed to the journal's process")

    def _send_loop(self) -> None:
        while True:
            blob = self._outbox.get()
            if blob is None:
                return
            try:
                self._conn.send_bytes(blob)
            except OSError:
                self.events.counters["journal.write_failed"] += 1
                return  # the child is gone

    def _readable(self) -> None:
        try:
            message = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            assert self._loop is not None
            self._loop.remove_reader(self._conn.fileno())
            self._stopped.set()
            return
        kind, token, counts, batches, written, seconds, counters = message
        self.stage_counts, self.batches, self.written, self.commit_seconds_total = counts, batches, written, seconds
        for name, value in counters.items():
            self.events.counters[name] += value - self._counters.get(name, 0)
        self._counters = counters
        if kind == "counts" and token is not None:
            future = self._waiting.get(token)
            if future is not None and not future.done():
                future.set_result(None)
        elif kind == "stopped":
            self._stopped.set()
