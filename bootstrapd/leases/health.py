"""Whether the lease store is reachable now, and since when: a subscriber of the event stream.

The store says so itself through ``store.down`` (with the error) and ``store.up`` (with the outage's length), the
events its log lines come with (:mod:`.postgresql`); nothing else decides it. ``/metrics`` reads this
(``bootstrapd_store_up``, outages and their seconds), and so do the status API and page. The state is also written
to ``state_dir/store.json`` at start-up and at each change (off the event loop, replaced atomically), so that
``bootstrapd status``, a process of its own that cannot ask a database which is down, says what the daemon sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from bootstrapd.leases.settings import StoreSettings, redact

log = logging.getLogger("bootstrapd.leases")

FILE = "store.json"
HEALTH = "store_health"  # its key in Context.extras
KINDS = frozenset({"store.down", "store.up"})


class StoreHealth:
    def __init__(self, settings: StoreSettings, state_dir: Path | None = None,
                 clock: Any = time.time) -> None:
        self.backend = settings.backend
        self.where = redact(settings.dsn) if settings.shared else "server.state_dir"
        self.path = state_dir / FILE if state_dir is not None else None
        self.clock = clock
        self.up = True
        self.since = clock()  # of the current state
        self.error: str | None = None
        self.outages = 0
        self.outage_seconds = 0.0  # of the outages that ended
        self._text = ""  # the latest state, for whichever write runs last
        self._lock = threading.Lock()

    def sink(self, kind: str, fields: dict[str, Any]) -> None:
        if kind not in KINDS:
            return
        now = self.clock()
        if kind == "store.down":
            if not self.up:
                self.error = str(fields.get("error") or self.error)
                return
            self.up, self.since, self.error = False, now, str(fields.get("error") or "unreachable")
            self.outages += 1
        else:
            if self.up:
                return
            self.outage_seconds += max(0.0, now - self.since)
            self.up, self.since, self.error = True, now, None
        self.save()

    def down_seconds(self) -> float:
        """All outages together, the current one included."""
        return self.outage_seconds + (0.0 if self.up else max(0.0, self.clock() - self.since))

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "where": self.where, "up": self.up, "since": self.since,
                "down_since": None if self.up else self.since, "error": self.error, "outages": self.outages,
                "outage_seconds": round(self.down_seconds(), 3), "pid": os.getpid(), "as_of": self.clock()}

    def save(self) -> None:
        """Write the state file: in a thread when on the event loop (the disk stays off it)."""
        if self.path is None:
            return
        self._text = json.dumps(self.as_dict())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write()
            return
        loop.run_in_executor(None, self._write)

    def _write(self) -> None:
        # Writes in threads may run in any order: each one writes the latest state.
        assert self.path is not None
        with self._lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                tmp.write_text(self._text + "\n", encoding="utf-8")
                os.replace(tmp, self.path)
            except OSError as exc:  # the state still shows in the log, /metrics and the API
                log.warning("cannot write %s: %s", self.path, exc.strerror or exc)


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """What the daemon last wrote of its store's state, or None (no daemon has run with this state_dir yet)."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((state_dir / FILE).read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    return None


def describe(state: dict[str, Any], now: float | None = None) -> str:
    """One line for people: ``store: PostgreSQL at … unreachable since 12:03:04 (95 s): <error>``."""
    name = "PostgreSQL" if state.get("backend") == "postgresql" else "SQLite"
    where = f"{name} at {state.get('where')}" if state.get("backend") == "postgresql" else name
    if state.get("up", True):
        outages = int(state.get("outages") or 0)
        extra = f" ({outages} outage{'s' if outages != 1 else ''}, {float(state.get('outage_seconds') or 0):.0f} s " \
                "in all)" if outages else ""
        return f"store: {where} reachable{extra}"
    since = float(state.get("down_since") or state.get("since") or 0)
    now = time.time() if now is None else now
    clock = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return (f"store: {where} UNREACHABLE since {clock} ({max(0.0, now - since):.0f} s): {state.get('error')}; "
            "replies that need a commit are withheld")
