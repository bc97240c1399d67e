"""Per-client token buckets: one client (MAC, DUID) cannot flood the server or exhaust the pool.

Time is passed in so the limiter is testable and usable inside protocol cores; it must be a monotonic clock
(``Now.mono``): fed the wall clock, a step back by NTP would leave every known client with a negative balance,
locked out for the length of the step. The table is bounded: when
it grows past ``max_clients``, buckets idle long enough to be full again are forgotten (they would allow a burst
anyway), so random source MACs cannot grow memory without bound.
"""

from __future__ import annotations


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_clients: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self.refused = 0

    def allow(self, key: bytes, mono: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget_idle(mono)
            self._buckets[key] = (self.burst - 1.0, mono)
            return True
        tokens, last = bucket
        tokens += (mono - last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        if tokens < 1.0:
            self._buckets[key] = (tokens, mono)
            self.refused += 1
            return False
        self._buckets[key] = (tokens - 1.0, mono)
        return True

    def _forget_idle(self, mono: float) -> None:
        refill = self.burst / self.rate
        idle = [k for k, (_, last) in self._buckets.items() if mono - last >= refill]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) >= self.max_clients:  # all busy: forget the oldest half
            oldest = sorted(self._buckets.items(), key=lambda item: item[1][1])[: len(self._buckets) // 2]
            for key, _ in oldest:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
