"""The garbage collector's policy: the daemon's settings and the hold a storm takes (bootstrapd/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bootstrapd import collector
from bootstrapd.collector import Hold


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    """Each test leaves the interpreter's collector as it found it."""
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        (gc.enable if enabled else gc.disable)()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycles(n: int) -> None:
    """``n`` two-object reference cycles, unreachable at once: only the cyclic collector frees them."""
    for _ in range(n):
        a, b = Node(), Node()
        a.other, b.other = b, a


def test_settle_freezes_what_is_alive_and_raises_the_thresholds() -> None:
    collector.settle()
    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_freeze_count() > 0 and gc.get_count()[0] < 100


def test_a_hold_stops_automatic_collection_and_its_release_collects_what_is_due() -> None:
    gc.enable()
    gc.set_threshold(1000, 10, 10)
    hold = Hold()
    hold.hold()
    assert not gc.isenabled() and hold.held
    hold.hold()  # idempotent
    assert hold.holds == 1
    cycles(5000)  # 10,000 objects: ten times the young generation's threshold, and no pass ran
    assert gc.get_count()[0] >= 10_000
    hold.release()
    assert gc.isenabled() and not hold.held
    assert hold.collected >= 10_000  # every cycle freed, in the release's own pass
    assert gc.get_count()[0] < 1000
    hold.release()  # idempotent
    assert gc.isenabled()


def test_release_collects_nothing_when_nothing_is_due() -> None:
    gc.enable()
    gc.set_threshold(1_000_000, 10, 10)
    hold = Hold()
    hold.hold()
    cycles(10)
    hold.release()
    assert gc.isenabled() and hold.collected == 0


def test_the_collector_is_on_again_only_when_the_last_hold_ends_and_only_if_a_hold_turned_it_off() -> None:
    gc.enable()
    first, second = Hold(), Hold()
    first.hold()
    second.hold()
    first.release()  # the first one to begin ends first: the second still holds
    assert not gc.isenabled()
    second.release()
    assert gc.isenabled()
    gc.disable()  # someone else's choice: a hold leaves it as it found it
    first.hold()
    first.release()
    assert not gc.isenabled()
