"""The phone journal: a subscriber of the event stream that keeps one record per phone, written in batches.

Three places, each doing as little as it can:
- the sink (any service's hot path): appends ``(time, kind, fields)`` to a list and returns; O(1), no formatting;
- a loop timer every ``flush_interval``: takes the list, ties each file request to a phone through the leases
  (``ctx.owners``, on the loop, where the pools live; the event's own time is the ``now`` of the lookup) and hands
  the batch to the writer;
- the writer thread: events -> steps (``steps.py``), folds each phone's stage (``stage.py``), and writes the batch in
  one transaction of the journal store, pruning to the configured bounds.

Nothing on the hot path waits for the disk, and the lease store's group commit is untouched (its own file).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bootstrapd.events import Events
from bootstrapd.journal.settings import JournalSettings
from bootstrapd.journal.stage import Phone, fold
from bootstrapd.journal.steps import RECORDED, Step, address_of, normal_mac, phone_of, step_of
from bootstrapd.journal.store import JournalStore, Limits, PhoneRow, StepRow
from bootstrapd.leases.owners import LeaseOwners

log = logging.getLogger("bootstrapd.journal")

Expected = Callable[[str, str | None], Sequence[str] | None]
"""The provisioning model's download list for a phone (MAC, model), or None when it does not know."""

# The writer gives the GIL up every this many events. Without it, the thread held the GIL for whole 5 ms switch
# intervals while the event loop, blocked on it after each socket call, waited: the convoy effect halved the DHCP
# throughput at 3,000 exchanges/s (measured with tests.bench.dhcp4 --journal-ab).
YIELD_EVERY = 8

_Event = tuple[float, str, dict[str, Any]]
_Resolved = tuple[float, str, dict[str, Any], str]


class Journal:
    def __init__(self, settings: JournalSettings, store: JournalStore, events: Events, owners: LeaseOwners,
                 expected: Expected | None = None) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.owners = owners
        self.expected = expected
        self._pending: list[_Event] = []
        # Batches, flush markers (set once everything queued before them is written), None to stop.
        self._queue: queue.SimpleQueue[list[_Resolved] | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phones: dict[str, Phone] = {}
        self.stage_counts: dict[str, int] = {}  # replaced whole after each batch: safe to read from the loop
        self.batches = 0
        self.written = 0
        self.commit_seconds = 0.0  # last batch's transaction
        self.commit_seconds_total = 0.0

    # -- the sink: on every service's hot path ------------------------------------------------------------------
    def sink(self, kind: str, fields: dict[str, Any]) -> None:
        if kind not in RECORDED:
            return
        pending = self._pending
        if len(pending) >= self.settings.max_pending:
            self.events.counters["journal.dropped"] += 1
            return
        pending.append((time.time(), kind, fields))

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the phones already known (before :meth:`start`; may run in an executor)."""
        for row in self.store.phones():
            self._phones[row.mac] = Phone.from_dict(row.doc)
        self.stage_counts = dict(Counter(p.stage for p in self._phones.values()))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()
        self.events.subscribe(self.sink)
        self._timer = loop.call_later(self.settings.flush_interval, self._tick)

    def reload(self, settings: JournalSettings) -> None:
        self.settings = settings

    def stop(self) -> None:
        """Write what is pending and stop the writer (blocks up to 10 s)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._hand_over()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        self.store.close()

    # -- the loop side ------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        assert self._loop is not None
        self._hand_over()
        self._timer = self._loop.call_later(self.settings.flush_interval, self._tick)

    def _hand_over(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        resolved: list[_Resolved] = []
        mac_for = self.owners.mac_for
        unknown = 0
        for when, kind, fields in batch:
            mac = phone_of(kind, fields)
            if mac is None:
                address = address_of(kind, fields)
                owner = mac_for(address, when) if address else None
                mac = normal_mac(owner) if owner else None
            if mac is None:
                unknown += 1
                continue
            resolved.append((when, kind, fields, mac))
        if unknown:
            self.events.counters["journal.unknown_phone"] += unknown
        if resolved:
            self._queue.put(resolved)

    def flush(self, timeout: float = 10.0) -> bool:
        """Hand over what is pending and wait until it is written (tests, the API after an action)."""
        marker = threading.Event()
        self._hand_over()
        self._queue.put(marker)
        return marker.wait(timeout)

    # -- the writer thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                return
            # Whatever queued meanwhile goes in the same transaction.
            batch: list[_Resolved] = []
            markers: list[threading.Event] = []
            while item is not None:
                if isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    batch.extend(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            else:
                stop = True
            try:
                self._write(batch)
            except Exception:
                self.events.counters["journal.write_failed"] += 1
                log.exception("journal: a batch of %d events could not be written", len(batch))
            for marker in markers:
                marker.set()

    def _write(self, batch: list[_Resolved]) -> None:
        if not batch:
            return
        steps: list[StepRow] = []
        dirty: dict[str, Phone] = {}
        phones = self._phones
        counts = dict(self.stage_counts)
        for i, (when, kind, fields, mac) in enumerate(batch):
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                time.sleep(0)  # hand the GIL to the event loop (see YIELD_EVERY)
            step = step_of(kind, fields, when)
            if step is None:
                continue
            phone = phones.get(mac)
            if phone is None:
                phone = phones[mac] = Phone(mac)
                before = None
            else:
                before = phone.stage
            self._fold(phone, step)
            after = phone.stage
            if after != before:
                counts[after] = counts.get(after, 0) + 1
                if before is not None:
                    counts[before] -= 1
            dirty[mac] = phone
            steps.append(StepRow(mac, when, step))
        limits = Limits(self.settings.steps_per_phone, self.settings.max_steps, self.settings.max_phones)
        started = time.perf_counter()
        rows = []
        for p in dirty.values():
            doc = p.as_dict()
            rows.append(PhoneRow(p.mac, doc["stage"], p.last_seen, doc))
        self.store.write(rows, steps, limits)
        self.commit_seconds = time.perf_counter() - started
        self.commit_seconds_total += self.commit_seconds
        self.events.counters["journal.steps"] += len(steps)
        self.batches += 1
        self.written += len(steps)
        if len(phones) > limits.max_phones + max(1, limits.max_phones // 10):
            for mac in sorted(phones, key=lambda m: phones[m].last_seen)[:len(phones) - limits.max_phones]:
                del phones[mac]
            counts = dict(Counter(p.stage for p in phones.values()))
        self.stage_counts = {k: v for k, v in counts.items() if v}

    def _fold(self, phone: Phone, step: Step) -> None:
        if self.expected is not None and phone.expected is None and (phone.model or step.get("model")):
            try:
                found = self.expected(phone.mac, phone.model or step.get("model"))
            except Exception:  # the model must not stop the journal
                log.exception("journal: the provisioning model failed for %s", phone.mac)
                found = None
            if found is not None:
                phone.expected = list(found)
        fold(phone, step)
