"""The event stream: every event counted, and each handed to the subscribers that read its kind."""

from __future__ import annotations

from typing import Any

from bootstrapd.events import ROUTES_KEPT, Events
from bootstrapd.journal.steps import RECORDED
from bootstrapd.leases.health import KINDS
from bootstrapd.metrics import _outcome, counted


def test_each_subscriber_gets_the_kinds_it_reads_and_every_event_is_counted() -> None:
    events = Events()
    everything: list[str] = []
    some: list[str] = []
    tested: list[str] = []
    events.subscribe(lambda kind, fields: everything.append(kind))
    events.subscribe(lambda kind, fields: some.append(kind), {"dhcp4.ack", "store.down"})
    events.subscribe(lambda kind, fields: tested.append(kind), lambda kind: kind.startswith("tftp."))
    for kind in ("dhcp4.ack", "dhcp4.offer", "tftp.transfer", "store.down", "dhcp4.ack"):
        events.emit(kind, n=1)
    assert everything == ["dhcp4.ack", "dhcp4.offer", "tftp.transfer", "store.down", "dhcp4.ack"]
    assert some == ["dhcp4.ack", "store.down", "dhcp4.ack"]
    assert tested == ["tftp.transfer"]
    assert events.counters == {"dhcp4.ack": 2, "dhcp4.offer": 1, "tftp.transfer": 1, "store.down": 1}


def test_a_late_subscriber_gets_kinds_already_routed() -> None:
    events = Events()
    first: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    events.subscribe(lambda kind, fields: first.append(fields), {"dhcp6.reply"})
    events.emit("dhcp6.reply", type="reply")
    events.subscribe(lambda kind, fields: late.append(fields), {"dhcp6.reply"})
    events.emit("dhcp6.reply", type="advertise")
    assert first == [{"type": "reply"}, {"type": "advertise"}]
    assert late == [{"type": "advertise"}]


def test_many_kinds_keep_a_bounded_route_table() -> None:
    events = Events()
    seen: list[str] = []
    events.subscribe(lambda kind, fields: seen.append(kind), lambda kind: kind.endswith("7"))
    kinds = [f"k.{n}" for n in range(3 * ROUTES_KEPT)]
    for kind in kinds:
        events.emit(kind)
    assert len(events._routes) <= ROUTES_KEPT
    assert seen == [kind for kind in kinds if kind.endswith("7")]


def test_the_metrics_subscription_covers_every_kind_they_count() -> None:
    kinds = RECORDED | KINDS | {"dhcp4.withheld", "dhcp6.withheld", "pnp.subscribe", "http.route", "store.up"}
    for kind in kinds:
        assert counted(kind) == (_outcome(kind, {}) is not None), kind
