"""Pool bookkeeping shared by DHCPv4 and DHCPv6."""

from __future__ import annotations

from bootstrapd.clock import Now
from bootstrapd.leases.pool import ACTIVE, DECLINED, OFFERED, Pool
from tests.unit.clock_helpers import at


def test_allocation_walks_the_range_and_skips_reserved() -> None:
    pool = Pool(10, 14, frozenset({11}))
    got = [pool.allocate(bytes([n]), at(0.0)) for n in range(4)]
    for n, address in enumerate(got):
        assert address is not None
        pool.bind(bytes([n]), address, ACTIVE, 100.0)
    assert got == [10, 12, 13, 14]
    assert pool.allocate(b"x", at(0.0)) is None


def test_a_client_keeps_one_binding_and_the_previous_holder_loses_it() -> None:
    pool = Pool(10, 20)
    pool.bind(b"a", 10, OFFERED, 5.0)
    pool.bind(b"a", 11, ACTIVE, 50.0)
    assert pool.holder(10) is None and pool.binding(b"a").address == 11  # type: ignore[union-attr]
    pool.bind(b"b", 11, ACTIVE, 60.0)  # e.g. a reservation moved
    assert pool.binding(b"a") is None and pool.holder(11).key == b"b"  # type: ignore[union-attr]


def test_declined_addresses_are_quarantined_until_expiry() -> None:
    pool = Pool(10, 10)
    pool.bind(b"a", 10, ACTIVE, 50.0)
    pool.decline(10, until=100.0)
    assert pool.holder(10).state == DECLINED  # type: ignore[union-attr]
    assert pool.binding(b"a") is None
    assert pool.allocate(b"a", at(99.0)) is None
    assert pool.allocate(b"a", at(101.0)) == 10


def test_a_full_pool_is_not_rescanned_for_every_request() -> None:
    pool = Pool(0, 99_999)
    for n in range(100_000):
        pool.bind(n.to_bytes(4, "big"), n, ACTIVE, 1000.0)
    assert pool.allocate(b"new", at(10.0)) is None
    scans = 0
    original = pool.available

    def counting(address: int, key: bytes, now: Now) -> bool:
        nonlocal scans
        scans += 1
        return original(address, key, now)

    pool.available = counting  # type: ignore[method-assign]
    for _ in range(1000):
        assert pool.allocate(b"new", at(10.5)) is None
    assert scans == 0  # remembered as exhausted for a second ...
    pool.release((5).to_bytes(4, "big"), 5, at(10.6))
    assert pool.allocate(b"new", at(10.7)) == 5  # ... or until an address is freed


def test_first_available_takes_a_free_hint_only() -> None:
    pool = Pool(10, 20, frozenset({15}))
    pool.bind(b"a", 12, ACTIVE, 100.0)
    assert pool.first_available(b"b", [12, 15, 30, 13], at(0.0)) == 13
    assert pool.first_available(b"a", [12], at(0.0)) == 12
