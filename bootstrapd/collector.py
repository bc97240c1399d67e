"""The cyclic garbage collector's policy: what the daemon sets once it serves, and a hold while a storm lasts.

The daemon's state lives as long as the process (leases, bindings, caches, the journal's phones) and its hot paths
make no reference cycles (a DHCP storm's collections found nothing to free: measured, README "The journal's and the
capture's cost"), so the collector is nearly all cost: every pass walks every object allocated since the last one,
and holds the GIL while it does. Two measures:

- :func:`settle`, once the daemon serves: what start-up loaded is frozen out of the collector's sight and the
  thresholds are raised (with CPython's defaults a full collection scanning 50,000 bindings ran every few hundred
  packets and tripled the cost of a DHCP exchange);
- :class:`Hold`, while a storm lasts: the phone journal keeps a storm's events (two objects each, 18,000 a second at
  9,000 DORA/s) until the storm passes, so every 50,000 of them a young-generation pass walked them all: a pause of
  20-70 ms with the loop stopped, the replies of the requests that queued meanwhile leaving in one burst, more than
  the phones' (perfdhcp's) receive buffer takes. Held, automatic collection is off; on release it is on again and
  what is due is collected there and then, once, when the storm is over. The holder bounds the hold (the journal:
  its ``MAX_LAG`` and ``max_pending``).
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)  # young generation every 50,000 net allocations (CPython's default: 700)


def settle() -> None:
    """Freeze what is alive now (start-up's state) and collect less often from now on."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


class Hold:
    """Automatic collection off between :meth:`hold` and :meth:`release` (each idempotent). The collector is one per
    process: it is on again once the last hold is released, and only if a hold turned it off."""

    _holding = 0  # holds in force, process-wide
    _disabled = False  # whether the holds turned the collector off (it was on when the first began)

    def __init__(self) -> None:
        self.held = False
        self.holds = 0  # how many times this hold began
        self.collected = 0  # objects freed by the collections run at its releases

    def hold(self) -> None:
        if self.held:
            return
        self.held = True
        self.holds += 1
        if Hold._holding == 0:
            Hold._disabled = gc.isenabled()
            gc.disable()
        Hold._holding += 1

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        Hold._holding -= 1
        if Hold._holding or not Hold._disabled:
            return  # another hold is in force, or the collector was off before (not ours to turn on)
        Hold._disabled = False
        # What the automatic collection would have done at the next allocation, done now, at a known moment: the
        # young generation if it is due, with the middle one when that is due too (gc's own rule, one level; the
        # oldest is left to gc's own rule for it). Decided before the collector is on again: with it on, the next
        # allocation (this very tuple) would start the pass itself.
        young, middle, _ = gc.get_count()
        threshold0, threshold1, _ = gc.get_threshold()
        if threshold0 and young >= threshold0:
            self.collected += gc.collect(1 if middle + 1 > threshold1 else 0)
        gc.enable()
