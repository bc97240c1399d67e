"""The phone journal: a subscriber of the event stream that keeps one record per phone, written in batches.

Three places, each doing as little as it can:
- the sink (any service's hot path): appends the event's time, kind and fields to a list and returns; O(1), no
  formatting, and no object the cyclic garbage collector tracks (see ``STRIDE``); an ``http.request``, one per
  request of a boot storm, is held packed: its values, not its dict (see ``PACKED``);
- a loop timer every ``flush_interval``: takes the list, ties each request to a phone (its own MAC, else the lease
  on its address: ``ctx.owners``, where the pools live, with the event's own time as ``now``), turns events into
  steps (``steps.py``), folds each phone's stage (``stage.py``) and serializes the documents, in slices of
  ``SLICE`` events so that no slice holds the loop for long;
- during a storm it yields: while events arrive faster than ``storm_events`` a second (a floor booting at once), the
  timer only collects them (the sink's list, bounded by ``max_pending``), and they are folded and written once
  the storm passes, or once the oldest is ``MAX_LAG`` seconds old or ``max_pending`` wait, whichever comes first.
  Nothing is lost and the work is the same; it no longer competes with the replies for the CPU while the phones
  wait for them (measured: ``tests.bench.dhcp4 --journal-ab``, README "The journal's and the capture's cost");
- the writer thread: one transaction of the journal store per batch, pruned to the configured bounds. A shared
  store that cannot be reached (PostgreSQL down) keeps the batches, up to ``max_pending`` steps, and they are
  written once it is back (tried again every 0.5 s, doubling to 10 s).

Why the Python work is on the loop and not in the thread: the writer thread first did it all, and with the GIL the
two threads convoyed: the thread held the GIL through whole switch intervals while the loop, after each socket call,
waited for it, and DHCPv4 at 2,000 exchanges/s lost 10-20% of its exchanges (``tests.bench.dhcp4 --journal-ab``).
SQLite releases the GIL while it works, so the thread now costs the loop almost nothing.

The lease store's group commit is untouched: the journal has its own file (see ``store.py``).
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
from bootstrapd.journal.steps import RECORDED, address_of, normal_mac, phone_of, step_of
from bootstrapd.journal.store import Batch, JournalStore, JournalUnavailable, Limits
from bootstrapd.leases.owners import LeaseOwners

log = logging.getLogger("bootstrapd.journal")

Expected = Callable[[str, str | None], Sequence[str] | None]
"""The provisioning model's download list for a phone (MAC, model), or None when it does not know."""

SLICE = 128  # events processed per loop callback (folded, encoded and queued: about 1-2 ms)
COMPACT = 1 << 16  # items of the backlog folded before they are deleted from it (see _process)
MAX_LAG = 10.0  # seconds the journal waits at most during a storm before it folds anyway
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between writes to a shared store that is down (doubling)

STRIDE = 3  # items per event in the sink's list and the backlog: time, kind, fields, time, kind, fields …
# Flat, not a tuple per event: the tuple was the one object of a DHCPv4 event the cyclic garbage collector tracks
# (the server's fields are a dict of strings and of option-code tuples it caches, which the collector stops tracking
# once a pass has seen them; DHCPv6's likewise: dhcp6/adapter.py, reply_event), and the tuples a storm held doubled
# the collector's passes during it: each pass walks up to 50,000 objects (the daemon's threshold, daemon.py) with
# the loop stopped, 20-100 ms in which requests queue and after which their replies leave in one burst (README "The
# journal's and the capture's cost"). Held flat, a storm's DHCP events cost the collector nothing. Keep the events'
# fields so: a list or an object of a class in them makes the dict tracked (tests/unit/test_journal.py checks).
PACKED = frozenset({"http.request"})
# Kinds held packed: their time, their layout (kind, the fields' names: one tuple shared by every event with the
# same names, see Journal._layout), then the fields' values, flat; the dict is rebuilt when the event is folded. An
# HTTP boot storm holds one per request, tens of thousands: a 13-field dict is 464 bytes, its values flat 104
# (tests.bench.inprocess --only http). Nothing tracked either. DHCP events stay as they are (STRIDE items each).
LAYOUTS_KEPT = 256  # layouts remembered (field names come from the services, not the wire: a handful)


class Journal:
    def __init__(self, settings: JournalSettings, store: JournalStore, events: Events, owners: LeaseOwners,
                 expected: Expected | None = None) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.owners = owners
        self.expected = expected
        self._pending: list[Any] = []  # flat: STRIDE items per event, or a packed event's (see PACKED)
        self._held = 0  # events in _pending
        self._layouts: dict[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]] = {}
        self._last_layout: tuple[str, tuple[str, ...]] = ("", ())  # the last packed event's
        # Batches to write, flush markers (set once everything queued before them is written), None to stop.
        self._queue: queue.SimpleQueue[Batch | threading.Event | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._phones: dict[str, Phone] = {}
        self._asked: set[str] = set()  # phones whose download list was asked for
        self._dirty: dict[str, Phone] = {}
        self._steps: list[dict[str, Any]] = []
        self._touched: dict[str, int] = {}
        self._backlog: list[Any] = []  # taken from the sink, not yet folded (flat, as the sink's list)
        self._backlog_events = 0  # events in _backlog not yet folded
        self._folded = 0  # items at the head of _backlog already folded (see _process)
        self._taken = 0  # events the last _take took
        self._scheduled = False  # a slice of the backlog is scheduled
        self._storm = False  # events came faster than storm_events a second over the last interval: folding waits
        self._ticked = 0.0  # monotonic time of the last tick (of start, before the first)
        self.stage_counts: dict[str, int] = {}
        self.batches = 0
        self.written = 0
        self.commit_seconds = 0.0  # last batch's transaction
        self.commit_seconds_total = 0.0
        self.unavailable: str | None = None  # why the (shared) store cannot be written now, while it cannot

    # -- the sink: on every service's hot path ------------------------------------------------------------------
    def sink(self, kind: str, fields: dict[str, Any]) -> None:
        if kind not in RECORDED:
            return
        if self._held >= self.settings.max_pending:
            self.events.counters["journal.dropped"] += 1
            return
        self._held += 1
        if kind in PACKED:
            names, layout = tuple(fields), self._last_layout
            if layout[1] != names or layout[0] != kind:  # the same names as the last one's, nearly always
                layout = self._layout((kind, names))
            self._pending += (time.time(), layout, *fields.values())
        else:
            self._pending += (time.time(), kind, fields)  # the tuple is freed at once: nothing tracked is held

    def _layout(self, layout: tuple[str, tuple[str, ...]]) -> tuple[str, tuple[str, ...]]:
        known = self._layouts.get(layout)
        if known is None:
            if len(self._layouts) >= LAYOUTS_KEPT:
                self._layouts.clear()  # events held keep theirs
            known = self._layouts[layout] = layout
        self._last_layout = known
        return known

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Read the phones already known (before :meth:`start`; may run in an executor)."""
        for row in self.store.load():
            self._phones[row.mac] = Phone.from_dict(row.doc)
            self._asked.add(row.mac)  # asked again only if its model changes (a restart keeps the list)
        self.stage_counts = dict(Counter(p.stage for p in self._phones.values()))

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()
        self.events.subscribe(self.sink, RECORDED)
        # The first interval is timed from here: a floor that boots with the daemon (power back after an outage;
        # each step of ``make bench-dhcp4``) is a storm from its first tick. With no time to compare against, the
        # first tick used to fold its 0.25 s of events at once, in the middle of the storm: thousands of events,
        # 60 ms of the loop's CPU, the DORAs of those 0.25 s lost (README "The journal's and the capture's cost").
        self._ticked = time.monotonic()
        self._timer = loop.call_later(self.settings.flush_interval, self._tick)

    def reload(self, settings: JournalSettings) -> None:
        self.settings = settings

    def finish(self) -> None:
        """Process what is pending and queue the last batch (on the loop, at shutdown); then :meth:`join`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._backlog.extend(self._take())
        self._process(whole=True)
        self._queue.put(None)

    def join(self) -> None:
        """Wait for the writer to write the last batch (blocks up to 10 s), then close the store."""
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.store.close()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Process what is pending and wait until it is written (tests, the API after an action)."""
        self._backlog.extend(self._take())
        self._process(whole=True)
        marker = threading.Event()
        self._queue.put(marker)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, marker.wait, timeout)

    # -- the loop side ------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        assert self._loop is not None
        self._backlog.extend(self._take())
        now, last = time.monotonic(), self._ticked
        self._ticked = now
        rate = self.settings.storm_events
        # Events, not the flat list's items (STRIDE per event): the list's length made storms of a third of the rate.
        self._storm = rate > 0 and self._taken > rate * max(now - last, 0.0) and not self._overdue()
        if not self._scheduled and not self._storm:
            self._process()
        self._timer = self._loop.call_later(self.settings.flush_interval, self._tick)

    def _overdue(self) -> bool:
        backlog, oldest = self._backlog, self._folded
        return len(backlog) > oldest and (self._backlog_events >= self.settings.max_pending
                                          or time.time() - backlog[oldest] > MAX_LAG)

    def _take(self) -> list[Any]:
        """The sink's events, for the backlog (every caller extends it with them)."""
        batch, self._pending = self._pending, []
        self._taken, self._held = self._held, 0
        self._backlog_events += self._taken
        return batch

    def _process(self, whole: bool = False) -> None:
        """Events -> steps and phones, SLICE at a time (each slice a loop callback), or all at once."""
        backlog = self._backlog
        end = self._fold_events(backlog, self._folded, len(backlog) if whole else SLICE)  # an event: 2+ items
        # The folded head goes once the backlog is done, else COMPACT items at a time: deleting it after every
        # slice moved the whole rest each time, quadratic in a storm's backlog (140,000 http.request events held
        # packed, 15 items each: 7 us per request in tests.bench.profile http cpu), and keeping it all until the
        # end kept what it holds alive (20 MiB more at the storm's peak).
        if end >= len(backlog):
            backlog.clear()
            end = 0
        elif end >= COMPACT or end > len(backlog) // 2:
            del backlog[:end]
            end = 0
        self._folded = end
        # Each slice is handed over on its own: its documents' encoding is bounded too (a phone touched in two
        # slices is written twice in the same transaction; the later document wins).
        self._hand_over()
        if len(backlog) > self._folded and not self._scheduled:
            assert self._loop is not None
            self._scheduled = True
            self._loop.call_soon(self._next_slice)

    def _next_slice(self) -> None:
        self._scheduled = False
        if not self._storm:  # a storm began: the next quiet tick carries on
            self._process()

    def _fold_events(self, batch: list[Any], start: int, limit: int) -> int:
        """Fold ``limit`` events (at most) of ``batch`` from the item ``start``; returns where the next begins."""
        mac_for = self.owners.mac_for
        phones, dirty, steps, touched = self._phones, self._dirty, self._steps, self._touched
        counts = self.stage_counts
        unknown = 0
        at, size, done = start, len(batch), 0
        while done < limit and at < size:
            when, kind = batch[at], batch[at + 1]
            if kind.__class__ is str:  # STRIDE items
                fields = batch[at + 2]
                at += STRIDE
            else:  # packed: the layout, then the values (PACKED)
                kind, names = kind
                end = at + 2 + len(names)
                fields = dict(zip(names, batch[at + 2:end], strict=False))  # as long by construction
                at = end
            done += 1
            mac = phone_of(kind, fields)
            if mac is None:
                address = address_of(kind, fields)
                owner = mac_for(address, when) if address else None
                mac = normal_mac(owner) if owner else None
                if mac is None:
                    unknown += 1
                    continue
            step = step_of(kind, fields, when)
            if step is None:
                continue
            phone = phones.get(mac)
            before = None
            if phone is None:
                phone = phones[mac] = Phone(mac)
            else:
                before = phone.stage
            fold(phone, step)
            if self.expected is not None and phone.model and mac not in self._asked:
                self._ask(phone)
            after = phone.stage
            if after != before:
                counts[after] = counts.get(after, 0) + 1
                if before is not None:
                    counts[before] -= 1
            dirty[mac] = phone
            step["mac"] = mac
            steps.append(step)
            touched[mac] = touched.get(mac, 0) + 1
        if unknown:
            self.events.counters["journal.unknown_phone"] += unknown
        self._backlog_events = max(self._backlog_events - done, 0)  # 0 also for a backlog filled by hand (tests)
        return at

    def _hand_over(self) -> None:
        limits = self.settings
        phones = self._phones
        if len(phones) > limits.max_phones + max(1, limits.max_phones // 10):
            for mac in sorted(phones, key=lambda m: phones[m].last_seen)[:len(phones) - limits.max_phones]:
                del phones[mac]
                self._dirty.pop(mac, None)
                self._asked.discard(mac)
            self.stage_counts = dict(Counter(p.stage for p in phones.values()))
        if not self._dirty and not self._steps:
            return
        documents = [phone.as_dict() for phone in self._dirty.values()]
        self._queue.put(Batch.of(documents, self._steps, self._touched))
        self._steps, self._touched, self._dirty = [], {}, {}

    # -- the provisioning model's download list, off the loop ---------------------------------------------------
    def _ask(self, phone: Phone) -> None:
        assert self._loop is not None and self.expected is not None
        self._asked.add(phone.mac)
        future = self._loop.run_in_executor(None, self.expected, phone.mac, phone.model)

        def answered(done: asyncio.Future[Sequence[str] | None]) -> None:
            try:
                found = done.result()
            except Exception:  # the model must not stop the journal
                log.exception("journal: the provisioning model failed for %s", phone.mac)
                return
            current = self._phones.get(phone.mac)
            if found is None or current is None:
                return
            before = current.stage
            current.expect(list(found))
            if current.stage != before:
                self.stage_counts[current.stage] = self.stage_counts.get(current.stage, 0) + 1
                self.stage_counts[before] -= 1
            self._dirty[current.mac] = current

        future.add_done_callback(answered)

    # -- the writer thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        retry: list[Batch] = []  # batches a shared store could not take: written again once it is back
        delay = RETRY_FIRST
        stop = False
        while not stop:
            batches: list[Batch] = []
            markers: list[threading.Event] = []
            try:
                item = self._queue.get(timeout=delay if retry else None)
            except queue.Empty:  # time to try the store that was down again
                pass
            else:
                # Whatever queued meanwhile goes in the same transaction (None: the last round, then stop).
                while item is not None:
                    if isinstance(item, threading.Event):
                        markers.append(item)
                    else:
                        batches.append(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                else:
                    stop = True
            batches, retry = retry + batches, []
            if batches:
                try:
                    self._write(batches)
                    if self.unavailable:
                        log.warning("journal: the store is back; %d batch(es) written", len(batches))
                    self.unavailable = None
                    delay = RETRY_FIRST
                except JournalUnavailable as exc:
                    retry = self._keep(batches, exc)
                    delay = min(delay * 2, RETRY_MAX)
                except Exception:
                    self.events.counters["journal.write_failed"] += 1
                    log.exception("journal: %d batch(es) could not be written", len(batches))
            for marker in markers:
                marker.set()
        if retry:
            self.events.counters["journal.dropped"] += sum(sum(b.touched.values()) for b in retry)

    def _keep(self, batches: list[Batch], error: JournalUnavailable) -> list[Batch]:
        """Keep what a store that is down could not take, the newest first, up to ``max_pending`` steps; the
        oldest beyond that are counted as dropped (a later batch carries each phone's summary again)."""
        if self.unavailable is None:
            log.warning("journal: cannot write to the store (%s); keeping up to %d steps until it is back", error,
                        self.settings.max_pending)
        self.unavailable = str(error)
        self.events.counters["journal.store_unavailable"] += 1
        kept: list[Batch] = []
        room = self.settings.max_pending
        for batch in reversed(batches):
            steps = sum(batch.touched.values())
            if steps > room:
                self.events.counters["journal.dropped"] += steps
                continue
            room -= steps
            kept.append(batch)
        kept.reverse()
        return kept

    def _write(self, batches: list[Batch]) -> None:
        settings = self.settings
        started = time.perf_counter()
        self.store.write(batches, Limits(settings.steps_per_phone, settings.max_steps, settings.max_phones))
        self.commit_seconds = time.perf_counter() - started
        self.commit_seconds_total += self.commit_seconds
        steps = sum(sum(b.touched.values()) for b in batches)
        self.events.counters["journal.steps"] += steps
        self.batches += 1
        self.written += steps
