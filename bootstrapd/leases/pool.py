"""Address pool bookkeeping shared by DHCPv4 and DHCPv6: who holds which address, until when.

Addresses are plain integers (an IPv4 or IPv6 address's ``int``), clients are opaque keys (client-id, MAC, DUID+IAID),
so both servers use one implementation. No I/O and no clock: ``now`` (:class:`~bootstrapd.clock.Now`) is passed in.
An OFFERED binding's expiry is on the monotonic clock (an offer hold is an interval); every other state's expiry is
wall-clock time (leases and quarantines are stored and outlive the process).

Rules:
- a client keeps one binding; asking again returns the same address (a returning client gets its previous address,
  even after a release or expiry, as long as nobody else took it meanwhile);
- an OFFERED address is held until the offer expires, so two clients are never offered the same one;
- a DECLINED address is quarantined (no owner) until its expiry;
- new addresses are picked by a cursor that walks the range, so expired addresses are reused in rotation and the
  least recently handed-out ones come back last.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bootstrapd.clock import Now

OFFERED = "offered"
ACTIVE = "active"
RELEASED = "released"
DECLINED = "declined"

# A shared store (several appliances, one range): after this many addresses in a row that are taken, an appliance's
# cursor has run into addresses another one hands out; it jumps to a random place instead of walking in step with
# the other one's cursor, where both would offer the same addresses (see Pool.spread).
JUMP_AFTER = 16

# Addresses one client (a MAC for DHCPv4, a DUID for DHCPv6) may hold at once, in any state (offered, active,
# quarantined after its DECLINE): a phone needs one; rotating client identifiers or IAIDs, or a DECLINE loop, within
# the rate limit must not take the pool.
MAX_PER_CLIENT = 4


@dataclass(slots=True)
class Binding:
    address: int
    key: bytes
    state: str
    expires: float  # OFFERED: monotonic clock; every other state: wall clock
    # What the server wants to remember about the client (MAC, hostname …): it lives and dies with the binding, so
    # clients that come and go (random MACs) cannot grow memory beyond one entry per address.
    info: Any = None
    owner: bytes = b""  # the client behind the key (MAC, DUID), for MAX_PER_CLIENT; b"": not counted


class Pool:
    def __init__(self, first: int, last: int, reserved: frozenset[int] = frozenset()) -> None:
        self.by_address: dict[int, Binding] = {}
        self.by_key: dict[bytes, Binding] = {}
        # owner -> its binding, or a list when it holds several (rare: kept compact for 50,000 phones). Only
        # bindings in by_address are listed, so it is bounded like by_address.
        self.by_owner: dict[bytes, Binding | list[Binding]] = {}
        self.first = first
        self.last = last
        self.reserved = reserved
        self._cursor = first
        # After a full scan finds nothing, further scans are skipped for a second (or until an address is freed):
        # with a big, full range every DISCOVER from a random MAC would otherwise cost a walk of the whole range.
        self._exhausted_until = 0.0
        self._spread: random.Random | None = None

    def spread(self, seed: bytes) -> None:
        """Several appliances allocate from this range (a shared store): start at a place of this appliance's own
        (from ``seed``, its server identifier) and jump away from runs of taken addresses (JUMP_AFTER), so that
        two appliances rarely offer the same address; the database settles the rare collision."""
        self._spread = random.Random(seed)
        self._cursor = self.first + self._spread.randrange(self.size())

    def reconfigure(self, first: int, last: int, reserved: frozenset[int]) -> None:
        """New range and reservations (SIGHUP): bindings are kept; addresses outside the range are not reissued."""
        self.first, self.last, self.reserved = first, last, reserved
        self._exhausted_until = 0.0
        if not first <= self._cursor <= last:
            self._cursor = first

    def size(self) -> int:
        return self.last - self.first + 1

    def in_range(self, address: int) -> bool:
        return self.first <= address <= self.last

    def binding(self, key: bytes) -> Binding | None:
        return self.by_key.get(key)

    def holder(self, address: int) -> Binding | None:
        return self.by_address.get(address)

    @staticmethod
    def reusable(binding: Binding, now: Now) -> bool:
        state = binding.state
        if state == RELEASED:
            return True
        return binding.expires <= (now.mono if state == OFFERED else now.wall)

    def available(self, address: int, key: bytes, now: Now) -> bool:
        """May ``key`` have ``address``? (In the dynamic range or reserved for it is the caller's check.)"""
        current = self.by_address.get(address)
        if current is None:
            return True
        state = current.state
        if current.key == key and state != DECLINED:
            return True
        # reusable(), inlined here and in can_take: these run for every DISCOVER and REQUEST (and allocate's walk).
        return state == RELEASED or current.expires <= (now.mono if state == OFFERED else now.wall)

    def held(self, owner: bytes, now: Now) -> int:
        """How many addresses ``owner`` holds now (offered, active, or quarantined after its DECLINE)."""
        owned = self.by_owner.get(owner)
        if owned is None:
            return 0
        if isinstance(owned, Binding):
            return 0 if self.reusable(owned, now) else 1
        return sum(1 for b in owned if not self.reusable(b, now))

    def can_take(self, owner: bytes, key: bytes, now: Now) -> bool:
        """May ``key`` (a client of ``owner``) get an address? Moving its own live binding never counts."""
        if not owner:
            return True
        current = self.by_key.get(key)
        if current is not None:
            state = current.state
            if state != DECLINED and state != RELEASED and \
                    current.expires > (now.mono if state == OFFERED else now.wall):
                return True  # its own live binding (not reusable)
        owned = self.by_owner.get(owner)
        if owned is None:
            return True
        if isinstance(owned, Binding):
            return MAX_PER_CLIENT > (0 if self.reusable(owned, now) else 1)
        return self.held(owner, now) < MAX_PER_CLIENT

    def reclaim_oldest(self, owner: bytes, now: Now) -> Binding | None:
        """Free the live binding of ``owner`` that expires first (never a quarantined one) and return it.

        A device that comes back under a new client identifier (a firmware change, a reset) is one client with a
        stale identity: its new identity takes the place of its oldest one instead of being refused. Quarantined
        addresses still count, so a DECLINE loop stays bounded.
        """
        owned = self.by_owner.get(owner)
        candidates = [owned] if isinstance(owned, Binding) else list(owned or ())
        live = [b for b in candidates if b.state != DECLINED and not self.reusable(b, now)]
        if not live:
            return None
        oldest = min(live, key=lambda b: b.expires)
        oldest.state, oldest.expires = RELEASED, now.wall
        self._exhausted_until = 0.0
        return oldest

    def _place(self, binding: Binding) -> None:
        if binding.address in self.by_address:
            self._remove(binding.address)
        self.by_address[binding.address] = binding
        if binding.owner:
            owned = self.by_owner.get(binding.owner)
            if owned is None:
                self.by_owner[binding.owner] = binding
            elif isinstance(owned, Binding):
                self.by_owner[binding.owner] = [owned, binding]
            else:
                owned.append(binding)

    def _remove(self, address: int) -> None:
        binding = self.by_address.pop(address, None)
        if binding is None or not binding.owner:
            return
        owned = self.by_owner.get(binding.owner)
        if owned is binding:
            del self.by_owner[binding.owner]
        elif isinstance(owned, list):
            owned[:] = [b for b in owned if b is not binding]
            if len(owned) == 1:
                self.by_owner[binding.owner] = owned[0]

    def first_available(self, key: bytes, candidates: Iterable[int], now: Now) -> int | None:
        """The first address the client asked for (a hint, a remembered address) that it may have."""
        for address in candidates:
            if self.in_range(address) and address not in self.reserved and self.available(address, key, now):
                return address
        return None

    def allocate(self, key: bytes, now: Now) -> int | None:
        """A free dynamic address for ``key``, or None when the pool is exhausted."""
        if now.mono < self._exhausted_until:
            return None
        span = self.last - self.first + 1
        if self._spread is not None:
            found = self._allocate_spread(key, now, span)
            if found is not None:
                return found
        address = self._cursor
        for _ in range(span):
            if address > self.last:
                address = self.first
            if address not in self.reserved and self.available(address, key, now):
                self._cursor = address + 1 if address < self.last else self.first
                return address
            address += 1
        self._exhausted_until = now.mono + 1.0
        return None

    def _allocate_spread(self, key: bytes, now: Now, span: int) -> int | None:
        """allocate() with jumps; None when it gives up (the plain scan after it still sees every address)."""
        assert self._spread is not None
        address, taken = self._cursor, 0
        for _ in range(span):
            if address > self.last:
                address = self.first
            if address not in self.reserved and self.available(address, key, now):
                self._cursor = address + 1 if address < self.last else self.first
                return address
            taken += 1
            if taken >= JUMP_AFTER:
                address, taken = self.first + self._spread.randrange(span), 0
                continue
            address += 1
        return None

    def bind(self, key: bytes, address: int, state: str, expires: float, owner: bytes = b"") -> Binding:
        """Give ``address`` to ``key`` (dropping the client's other binding and the address's previous holder)."""
        old = self.by_key.get(key)
        if old is not None and old.address != address and self.by_address.get(old.address) is old:
            self._remove(old.address)
        previous = self.by_address.get(address)
        if previous is not None and previous.key != key and self.by_key.get(previous.key) is previous:
            del self.by_key[previous.key]
        if old is not None and old.address == address:
            old.state, old.expires = state, expires
            if self.by_address.get(address) is not old or old.owner != owner:
                self._remove(address)
                old.owner = owner
                self._place(old)
            return old
        binding = Binding(address, key, state, expires, None, owner)
        self._place(binding)
        self.by_key[key] = binding
        return binding

    def release(self, key: bytes, address: int, now: Now) -> Binding | None:
        binding = self.by_key.get(key)
        if binding is None or binding.address != address or binding.state == DECLINED:
            return None
        binding.state, binding.expires = RELEASED, now.wall
        self._exhausted_until = 0.0
        return binding

    def decline(self, address: int, until: float, owner: bytes = b"") -> Binding:
        """Quarantine an address someone else answers for; its former client gets another one next time.

        The quarantine counts against the decliner (``owner``): a DECLINE loop cannot quarantine the whole pool.
        """
        previous = self.by_address.get(address)
        if previous is not None and self.by_key.get(previous.key) is previous:
            del self.by_key[previous.key]
        binding = Binding(address, b"", DECLINED, until, owner=owner)
        self._place(binding)
        return binding

    def forget_offer(self, key: bytes) -> None:
        """The client took another server's offer: our held address is free again."""
        binding = self.by_key.get(key)
        if binding is not None and binding.state == OFFERED:
            binding.expires = 0.0
            self._exhausted_until = 0.0

    def load(self, key: bytes, address: int, state: str, expires: float, owner: bytes = b"") -> Binding | None:
        """Restore a binding from the store at start-up (None: an older row of a client seen again later)."""
        if state == DECLINED:
            return self.decline(address, expires, owner)
        current = self.by_key.get(key)
        if current is not None and current.state == ACTIVE and current.expires > expires:
            return None
        return self.bind(key, address, state, expires, owner)

    def bindings(self) -> Iterator[Binding]:
        return iter(self.by_address.values())

    def active_count(self, now: Now) -> int:
        return sum(1 for b in self.by_address.values() if b.state == ACTIVE and b.expires > now.wall)
