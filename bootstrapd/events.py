"""Structured events: what every service reports about each exchange.

Services call :meth:`Events.emit` with a kind (``dhcp4.ack``, ``tftp.transfer``, ``pnp.notify`` …) and fields.
Emitting is cheap on the hot path: a counter, the subscribers (the phone journal will be one), and a DEBUG log
line only when DEBUG is enabled. Nothing is formatted unless someone listens.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

Sink = Callable[[str, dict[str, Any]], None]

_log = logging.getLogger("bootstrapd.events")


class Events:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self._sinks: list[Sink] = []

    def subscribe(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def emit(self, kind: str, **fields: Any) -> None:
        self.publish(kind, fields)

    def publish(self, kind: str, fields: dict[str, Any]) -> None:
        """:meth:`emit` of fields already in a dict, which becomes the event's (the caller lets go of it): no copy
        of it per event (the HTTP fast path's ``http.request``, every request)."""
        self.counters[kind] += 1
        for sink in self._sinks:
            sink(kind, fields)
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(kind, extra={"event": kind, **fields})
