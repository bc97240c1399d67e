"""Requests over their address's max_per_client wait in a bounded queue and start when a slot of theirs frees."""

from __future__ import annotations

from bootstrapd.tftp import codec
from bootstrapd.tftp.server import MAX_WAIT, Refusal, Started, TftpServer, Waiting
from bootstrapd.tftp.settings import TftpSettings
from tests.unit.test_tftp_transfer import Files, rrq

NAT = "192.0.2.7"  # one address, many phones behind it (a branch office's router)


def _server(**changes: object) -> TftpServer:
    settings = TftpSettings(enabled=True, **changes)  # type: ignore[arg-type]
    return TftpServer(settings, Files({"a.cfg": b"a" * 100, "b.cfg": b"b" * 3000, "c.cfg": b"c" * 20}))  # type: ignore[arg-type]


def _finish(server: TftpServer, started: Started, now: float) -> None:
    started.transfer.abort("ok", now)
    server.finished(started)


def test_three_hundred_requests_from_one_address_are_all_served_in_order_with_the_defaults() -> None:
    server = _server()
    names = ["a.cfg", "b.cfg", "c.cfg"]
    outcomes = [server.request(rrq(names[i % 3]), (NAT, 10000 + i), 0.0) for i in range(300)]
    started = [o for o in outcomes if isinstance(o, Started)]
    waiting = [o for o in outcomes if isinstance(o, Waiting)]
    assert len(started) == server.settings.max_per_client == 8
    assert len(waiting) == 292 and not [o for o in outcomes if isinstance(o, Refusal)]
    assert server.per_client[NAT] == 8 and server.waiting == 292
    order = []
    now = 0.0
    while started:
        now += 0.001
        _finish(server, started.pop(0), now)
        for item, outcome in server.release(now):
            assert isinstance(outcome, Started)
            assert outcome.transfer.client == item.client
            order.append(item.client[1])
            started.append(outcome)
        assert server.per_client.get(NAT, 0) <= 8
    assert order == [10000 + i for i in range(8, 300)]  # first come, first served
    assert server.waiting == 0 and server.active == 0


def test_a_flood_from_one_address_holds_its_share_and_others_are_served_at_once() -> None:
    server = _server(max_per_client=4, max_waiting_per_client=10)
    flood = [server.request(rrq("a.cfg"), ("203.0.113.9", 20000 + i), 0.0) for i in range(100)]
    assert sum(isinstance(o, Started) for o in flood) == 4
    assert sum(isinstance(o, Waiting) for o in flood) == 10
    refused = [o for o in flood if isinstance(o, Refusal)]
    assert len(refused) == 86
    assert all(r.outcome == "busy" and r.datagram == codec.encode_error(0, "too many transfers from your address")
               for r in refused)
    other = server.request(rrq("b.cfg"), ("198.51.100.3", 1000), 0.0)
    assert isinstance(other, Started)
    assert server.per_client["203.0.113.9"] == 4


def test_a_retransmitted_request_keeps_its_place() -> None:
    server = _server(max_per_client=1)
    first = server.request(rrq("a.cfg"), (NAT, 1), 0.0)
    queued = server.request(rrq("b.cfg"), (NAT, 2), 0.0)
    assert isinstance(first, Started) and isinstance(queued, Waiting)
    again = server.request(rrq("b.cfg"), (NAT, 2), 1.0)  # the phone's timer fired: the same request again
    assert isinstance(again, Refusal) and again.outcome == "duplicate" and again.datagram is None
    assert server.waiting == 1
    _finish(server, first, 1.5)
    [(item, outcome)] = server.release(1.5)
    assert item is queued and isinstance(outcome, Started) and outcome.transfer.filename == "b.cfg"


def test_a_request_that_waited_too_long_is_dropped_not_served() -> None:
    server = _server(max_per_client=1)
    first = server.request(rrq("a.cfg"), (NAT, 1), 0.0)
    late = server.request(rrq("b.cfg"), (NAT, 2), 0.0)
    fresh = server.request(rrq("c.cfg"), (NAT, 3), MAX_WAIT)
    assert isinstance(first, Started) and isinstance(late, Waiting) and isinstance(fresh, Waiting)
    _finish(server, first, MAX_WAIT + 1)
    released = server.release(MAX_WAIT + 1)
    assert [(item, type(outcome)) for item, outcome in released] == [(late, Refusal), (fresh, Started)]
    expired = released[0][1]
    assert isinstance(expired, Refusal) and expired.outcome == "wait_expired" and expired.datagram is None


def test_waiting_is_bounded_overall_and_can_be_turned_off() -> None:
    server = _server(max_transfers=4, max_per_client=1, max_waiting_per_client=100)
    outcomes = [server.request(rrq("a.cfg"), (f"10.0.0.{n}", 1 + i), 0.0) for n in (1, 2) for i in range(5)]
    assert sum(isinstance(o, Started) for o in outcomes) == 2
    assert sum(isinstance(o, Waiting) for o in outcomes) == 4  # no more waiting than max_transfers in all
    assert sum(isinstance(o, Refusal) and o.outcome == "busy" for o in outcomes) == 4
    off = _server(max_per_client=1, max_waiting_per_client=0)
    assert isinstance(off.request(rrq("a.cfg"), (NAT, 1), 0.0), Started)
    refused = off.request(rrq("a.cfg"), (NAT, 2), 0.0)
    assert isinstance(refused, Refusal) and refused.outcome == "busy"


def test_an_address_held_back_by_the_overall_limit_goes_on_when_any_transfer_ends() -> None:
    server = _server(max_transfers=2, max_per_client=1)
    mine = server.request(rrq("a.cfg"), (NAT, 1), 0.0)
    queued = server.request(rrq("b.cfg"), (NAT, 2), 0.0)
    theirs = server.request(rrq("a.cfg"), ("10.9.9.9", 1), 0.0)
    assert isinstance(mine, Started) and isinstance(queued, Waiting) and isinstance(theirs, Started)
    _finish(server, mine, 0.1)
    newcomer = server.request(rrq("c.cfg"), ("10.9.9.8", 1), 0.1)  # takes the overall slot first
    assert isinstance(newcomer, Started)
    assert server.release(0.1) == []  # NAT has a free slot of its own, but the server is full
    _finish(server, theirs, 0.2)
    [(item, outcome)] = server.release(0.2)
    assert item is queued and isinstance(outcome, Started)
