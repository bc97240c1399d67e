"""How many datagrams the responder may still send toward each source address: the reflection budget.

Anyone can put any source address on a UDP SUBSCRIBE (or OPTIONS, or a replayed SUBSCRIBE), and every answer we send
goes to that address. So every datagram sent toward an address is charged to it, and an address gets at most
``limit`` of them within any ``window`` seconds (Timer F, 32 s): a sliding window, not a token bucket, so the bound
holds for every 32 s, not only on average. A NOTIFY exchange is charged all its datagrams (the 200 and every NOTIFY
Timer E may send) when it begins, so its retransmissions are never cut short; a standalone reply (405, 489, a
cached 200) costs one.

Charges are kept in the order they were made (``now`` only grows, so they also expire in that order) and consecutive
charges to the same address within ``GRAIN`` seconds share one entry: a phone (or sipp playing thousands) costs a
few entries, a flood from random sources one each. The log is bounded: when it is full, new charges are refused (the
safe way to fail: forgetting charges would hand a victim its budget again). No I/O, time passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

GRAIN = 1.0


@dataclass(slots=True)
class _Charge:
    host: str
    cost: int
    first: float  # when the first charge of this entry expires
    expires: float  # when the last one does (at most GRAIN later): the entry as a whole expires then


class ReplyBudget:
    def __init__(self, limit: int, window: float, max_entries: int) -> None:
        self.limit = limit
        self.window = window
        self.max_entries = max_entries
        self._spent: dict[str, int] = {}
        self._log: deque[_Charge] = deque()  # oldest first; each entry expires no later than the next one

    def spend(self, host: str, cost: int, now: float) -> bool:
        """Charge ``cost`` datagrams toward ``host`` if its budget allows; False (nothing charged) otherwise."""
        self.expire(now)
        spent = self._spent.get(host, 0)
        if spent + cost > self.limit:
            return False
        expires = now + self.window
        log = self._log
        last = log[-1] if log else None
        if last is not None and last.host == host and expires - last.first <= GRAIN:
            # Kept until the latest of its charges expires: never a charge forgotten early.
            last.cost += cost
            last.expires = expires
        elif len(log) >= self.max_entries:
            return False
        else:
            log.append(_Charge(host, cost, expires, expires))
        self._spent[host] = spent + cost
        return True

    def spent(self, host: str, now: float) -> int:
        self.expire(now)
        return self._spent.get(host, 0)

    def expire(self, now: float) -> None:
        log = self._log
        while log and log[0].expires <= now:
            charge = log.popleft()
            left = self._spent[charge.host] - charge.cost
            if left > 0:
                self._spent[charge.host] = left
            else:
                del self._spent[charge.host]

    def __len__(self) -> int:
        return len(self._log)
