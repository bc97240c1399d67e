"""CPU per event published on the daemon's event stream, with the daemon's three subscribers (a developer tool).

    python -m tests.bench.publish [--count N] [--repeat R] [--kind KIND]

``Events.publish`` of one event (``dhcp4.ack`` by default, the fields a DHCPv4 ACK carries) with the subscribers a
running daemon has: the phone journal's sink (holding the event, as during a storm), the metrics (counts by protocol
and outcome) and the lease store's health. No lab, no sockets: the Python work alone (the best of ``--repeat`` runs,
CPU time). For instruction counts run it under valgrind with two counts and take the difference per event:
``valgrind --tool=callgrind python -m tests.bench.publish --count 10000 --repeat 1`` and ``--count 30000``, the
figure being (the second total minus the first) / 20,000.
"""

from __future__ import annotations

import argparse
import time

from bootstrapd.events import Events
from bootstrapd.journal.journal import Journal
from bootstrapd.journal.settings import JournalSettings
from bootstrapd.journal.steps import RECORDED
from bootstrapd.leases.health import KINDS, StoreHealth
from bootstrapd.leases.owners import LeaseOwners
from bootstrapd.leases.settings import StoreSettings
from bootstrapd.metrics import Metrics

FIELDS = {"type": "ACK", "request": "REQUEST", "mac": "00:15:65:00:00:01", "address": "10.78.1.2", "classes": (),
          "vendor_class": None, "options": (1, 3, 6, 66)}


def run(count: int, kind: str) -> float:
    """CPU seconds per published event."""
    events = Events()
    journal = Journal(JournalSettings(max_pending=count + 1), None, events, LeaseOwners())  # type: ignore[arg-type]
    Metrics(events, [])  # subscribes itself, as the daemon's does
    events.subscribe(StoreHealth(StoreSettings(), None).sink, KINDS)
    # Journal.start would also start its writer thread and timer: only the subscription is wanted here.
    events.subscribe(journal.sink, RECORDED)
    publish = events.publish
    started = time.process_time()
    for _ in range(count):
        publish(kind, FIELDS)
    return (time.process_time() - started) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is printed")
    parser.add_argument("--kind", default="dhcp4.ack", help="the event's kind")
    args = parser.parse_args()
    best = min(run(args.count, args.kind) for _ in range(args.repeat))
    print(f"{args.kind}: {1e9 * best:,.0f} ns of CPU per published event (best of {args.repeat} runs of "
          f"{args.count:,}; the journal, the metrics and the store's health subscribed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
