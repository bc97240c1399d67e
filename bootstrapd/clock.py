"""The time a protocol core is given: two clocks, read once per datagram by the adapter.

``wall`` (seconds since the epoch) is for lease expiry and decline quarantines only: those are stored, listed to the
user and compared with the clock of the next boot. ``mono`` (a monotonic clock, e.g. ``time.monotonic()``) is for
everything that measures an interval: rate limits, offer holds, back-offs and timeouts. A wall clock stepped back by
NTP or a resumed VM then never locks a client out or holds an offer for the length of the step.

Only the type lives here: the cores stay free of any clock, the adapters read both and pass them in.
"""

from __future__ import annotations

from typing import NamedTuple


class Now(NamedTuple):
    wall: float
    mono: float
