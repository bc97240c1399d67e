"""Prometheus metrics, read from what the daemon already keeps: the event stream and the services' own state.

No second bookkeeping: a scrape reads ``Events.counters`` (every event kind and every ``<service>.<reason>`` count),
the counts by protocol and outcome that :class:`Metrics` keeps as a subscriber of the same stream (one dict
increment per event), the DHCP pools, the TFTP server's active transfers, the lease store's commits and whether it
is reachable (another subscriber of the stream, :mod:`bootstrapd.leases.health`, fed by ``store.down``/``store.up``)
and the journal's stages. Names follow the Kea/Stork exporter's style (``bootstrapd_dhcp4_addresses_assigned``, …).

prometheus-client renders the exposition format; imported only where metrics are served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from bootstrapd.events import Events

if TYPE_CHECKING:
    from bootstrapd.journal.journal import Journal
    from bootstrapd.leases.health import StoreHealth

# Counter suffixes that are errors (``<service>.<suffix>`` in Events.counters), reported by kind.
ERRORS = ("socket_error", "internal_error", "send_error", "send_dropped", "commit_failed", "write_failed",
          "gso_refused", "overload", "too_large", "source_busy")
STAGES = ("no_address", "address", "told", "boot", "configs", "done", "stuck")


_REQUESTS = frozenset({"dhcp6.reply", "pnp.answer", "tftp.transfer", "http.request", "ftp.transfer"})


def counted(kind: str) -> bool:
    """Whether events of ``kind`` are requests :func:`_outcome` counts (the metrics' subscription)."""
    return kind.startswith("dhcp4.") or kind in _REQUESTS


def _outcome(kind: str, fields: dict[str, Any]) -> tuple[str, str] | None:
    """(protocol, outcome) of a request event, or None for events that are not requests."""
    service, _, what = kind.partition(".")
    if service == "dhcp4":
        return "dhcp4", what
    if service == "dhcp6" and what == "reply":
        return "dhcp6", str(fields.get("type") or "reply")
    if kind == "pnp.answer":
        return "pnp", "acknowledged" if fields.get("acknowledged") else "unacknowledged"
    if kind in ("tftp.transfer", "http.request", "ftp.transfer"):
        status = fields.get("status")
        outcome = str(fields.get("outcome") or "ok")
        if isinstance(status, int) and outcome == "ok" and status >= 400:
            outcome = str(status)
        return service, outcome
    return None


class Metrics(Collector):
    """The collector of one daemon. ``services`` is the daemon's list of running services (read at scrape time)."""

    def __init__(self, events: Events, services: Iterable[object], journal: Journal | None = None,
                 store: object | None = None, health: StoreHealth | None = None) -> None:
        self.events = events
        self.services = services
        self.journal = journal
        self.store = store
        self.health = health
        self.requests: dict[tuple[str, str], int] = {}
        self.bytes: dict[str, int] = {}
        # A DHCPv4 event's (protocol, outcome) is its kind's alone: one dict look-up per event, and the DHCPv4
        # events are the ones that come by the thousand a second (the sink subscribes to named kinds: bounded).
        self._fixed: dict[str, tuple[str, str]] = {}
        events.subscribe(self._sink, counted)

    def _sink(self, kind: str, fields: dict[str, Any]) -> None:
        key = self._fixed.get(kind)
        if key is None:
            key = _outcome(kind, fields)
            if key is None:
                return
            if key[0] == "dhcp4" and len(self._fixed) < 256:
                self._fixed[kind] = key
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        if key[0] == "dhcp4":
            return  # no DHCPv4 event carries a byte count
        size = fields.get("bytes")
        if isinstance(size, int) and size:
            self.bytes[key[0]] = self.bytes.get(key[0], 0) + size

    def _service(self, name: str) -> Any:
        return next((s for s in self.services if getattr(s, "name", None) == name), None)

    def collect(self) -> Iterator[Metric]:
        counters = dict(self.events.counters)
        requests = CounterMetricFamily("bootstrapd_requests", "Requests answered, by protocol and outcome",
                                       labels=["protocol", "outcome"])
        for (protocol, outcome), n in sorted(dict(self.requests).items()):
            requests.add_metric([protocol, outcome], n)
        yield requests
        sent = CounterMetricFamily("bootstrapd_transfer_bytes", "Bytes of files transferred, by protocol",
                                   labels=["protocol"])
        for protocol, n in sorted(dict(self.bytes).items()):
            sent.add_metric([protocol], n)
        yield sent
        dropped = CounterMetricFamily("bootstrapd_dropped_packets", "Malformed or hostile packets dropped",
                                      labels=["service"])
        errors = CounterMetricFamily("bootstrapd_errors", "Errors, by service and kind", labels=["service", "kind"])
        events = CounterMetricFamily("bootstrapd_events", "Every count of the event stream", labels=["event"])
        for name, n in sorted(counters.items()):
            events.add_metric([name], n)
            service, _, what = name.partition(".")
            if what == "dropped" and service != "journal":
                dropped.add_metric([service], n)
            elif what in ERRORS:
                errors.add_metric([service, what], n)
        yield dropped
        yield errors
        yield events
        yield from self._dhcp4()
        yield from self._dhcp6()
        yield from self._transfers()
        yield from self._store()
        yield from self._health()
        yield from self._journal()

    def _pool(self, family: str, core: Any) -> Iterator[Metric]:
        pool = getattr(core, "pool", None)
        if pool is None:
            return
        yield GaugeMetricFamily(f"bootstrapd_{family}_pool_size", f"Addresses in the {family} range",
                                value=pool.size())
        states: dict[str, int] = {}
        bindings = getattr(pool, "bindings", None)
        if callable(bindings):
            for binding in bindings():
                state = str(getattr(binding, "state", "active"))
                states[state] = states.get(state, 0) + 1
        for state, name in (("active", "assigned"), ("offered", "offered"), ("declined", "declined"),
                            ("released", "released")):
            yield GaugeMetricFamily(f"bootstrapd_{family}_addresses_{name}",
                                    f"Addresses {name} now ({family} bindings in state {state})",
                                    value=states.get(state, 0))

    def _dhcp4(self) -> Iterator[Metric]:
        service = self._service("dhcp4")
        if service is None or getattr(service, "core", None) is None:
            return
        yield from self._pool("dhcp4", service.core)
        stats = CounterMetricFamily("bootstrapd_dhcp4_server", "The DHCPv4 server's own counts (naks, "
                                                               "exhausted pool, rate limited …)", labels=["reason"])
        for reason, n in sorted(dict(getattr(service.core, "stats", {})).items()):
            stats.add_metric([reason], n)
        yield stats

    def _dhcp6(self) -> Iterator[Metric]:
        service = self._service("dhcp6")
        if service is not None and getattr(service, "core", None) is not None:
            yield from self._pool("dhcp6", service.core)

    def _transfers(self) -> Iterator[Metric]:
        active = GaugeMetricFamily("bootstrapd_active_transfers", "TFTP transfers in progress", labels=["protocol"])
        connections = GaugeMetricFamily("bootstrapd_connections", "Open HTTP(S) and FTP control connections",
                                        labels=["protocol"])
        tftp = self._service("tftp")
        if tftp is not None:
            active.add_metric(["tftp"], len(getattr(tftp, "sessions", ())))
        http = self._service("http")
        if http is not None:  # aiohttp's server keeps its connections' handlers
            connections.add_metric(["http"], len(getattr(getattr(http, "web", None), "connections", ()) or ()))
        ftp = self._service("ftp")
        if ftp is not None:  # aioftp's server keeps a dict of its connections
            connections.add_metric(["ftp"], len(getattr(getattr(ftp, "server", None), "connections", ()) or ()))
        yield active
        yield connections

    def _store(self) -> Iterator[Metric]:
        store = self.store
        if store is None:
            return
        yield SummaryMetricFamily("bootstrapd_lease_commit_seconds",
                                  "Lease group commits (one fsync each) and the time they took",
                                  count_value=int(getattr(store, "commits", 0)),
                                  sum_value=float(getattr(store, "commit_seconds", 0.0)))
        yield CounterMetricFamily("bootstrapd_leases_committed", "Leases made durable",
                                  value=int(getattr(store, "committed", 0)))

    def _health(self) -> Iterator[Metric]:
        """Whether the lease store is reachable (a shared PostgreSQL one can go away), from store.down/store.up."""
        health = self.health
        if health is None:
            return
        backend = [health.backend]
        up = GaugeMetricFamily("bootstrapd_store_up", "1 when the lease store is reachable, 0 while it is not "
                               "(replies that need a commit are withheld)", labels=["backend"])
        up.add_metric(backend, 1.0 if health.up else 0.0)
        outages = CounterMetricFamily("bootstrapd_store_outages", "Times the lease store became unreachable",
                                      labels=["backend"])
        outages.add_metric(backend, health.outages)
        seconds = CounterMetricFamily("bootstrapd_store_outage_seconds", "Seconds the lease store was unreachable, "
                                      "the current outage included", labels=["backend"])
        seconds.add_metric(backend, health.down_seconds())
        since = GaugeMetricFamily("bootstrapd_store_last_change_timestamp_seconds", "When the store's state last "
                                  "changed (start-up, down, up), seconds since the epoch", labels=["backend"])
        since.add_metric(backend, health.since)
        yield from (up, outages, seconds, since)

    def _journal(self) -> Iterator[Metric]:
        journal = self.journal
        if journal is None:
            return
        phones = GaugeMetricFamily("bootstrapd_phones", "Phones in the journal, by stage", labels=["stage"])
        counts = dict(getattr(journal, "stage_counts", {}))
        for stage in STAGES:
            phones.add_metric([stage], counts.get(stage, 0))
        yield phones
        yield SummaryMetricFamily("bootstrapd_journal_commit_seconds", "Journal batches written and the time they "
                                                                       "took", count_value=int(journal.batches),
                                  sum_value=float(journal.commit_seconds_total))


def registry_for(metrics: Metrics) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(registry)
