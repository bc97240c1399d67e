"""Adversarial review of the PnP responder: hostile sequences with injected time, reflection and memory bounds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.errors import ProtocolError
from bootstrapd.pnp.checksync import CheckSync
from bootstrapd.pnp.message import SipError, parse
from bootstrapd.pnp.responder import Answered, Responder
from bootstrapd.pnp.settings import PnpSettings
from tests.unit.test_pnp_responder import LOCAL, VARS, sample

NAMES = ["yealink-w52p.sip", "grandstream-grp2612w.sip", "snom-720.sip"]
SOURCES = [("10.77.0.20", 5060), ("10.77.0.20", 5062), ("10.77.0.21", 5060), ("10.77.0.22", 1)]


def make(**overrides: int) -> tuple[Responder, list[Answered]]:
    answers: list[Answered] = []
    pnp = PnpSettings(enabled=True, url="tftp://{ipv4}/", **overrides)  # type: ignore[arg-type]
    return Responder(pnp, LOCAL, VARS, answered=answers.append), answers


def subscribe(n: int, name: str = "yealink-w52p.sip") -> bytes:
    """A SUBSCRIBE of its own exchange: Call-ID and branch made unique by ``n``."""
    data = sample(name)
    message = parse(data)
    call_id = message.require("call-id").encode()
    branch = (message.vias()[0].branch or "").encode()
    return data.replace(call_id, call_id + b"-%d" % n).replace(branch, branch + b"x%d" % n)


def ok_for(notify: bytes, status: int = 200) -> bytes:
    """The phone's answer to our NOTIFY (header bytes that were not UTF-8 echoed as they came)."""
    msg = parse(notify)
    head = [f"SIP/2.0 {status} Whatever"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        head.append(f"{name}: {msg.require(name)}")
    return ("\r\n".join(head) + "\r\nContent-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape")


def edit(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    buf = bytearray(data)
    for where, what in edits:
        where %= len(buf) + 1
        buf[where:where + len(what)] = what
    return bytes(buf)


edits = st.lists(st.tuples(st.integers(0, 700), st.binary(max_size=4)), max_size=3)
step = st.one_of(
    st.tuples(st.just("subscribe"), st.integers(0, 5), st.sampled_from(NAMES), edits, st.sampled_from(SOURCES)),
    st.tuples(st.just("answer"), st.integers(0, 20), st.sampled_from([100, 180, 200, 202, 400, 481, 500, 603]),
              edits),
    st.tuples(st.just("time"), st.floats(0.0, 10.0)),
)


@settings(max_examples=250, deadline=None)
@given(st.lists(step, max_size=30))
def test_hostile_sequences_raise_only_sip_errors_and_state_stays_bounded(steps: list[tuple[object, ...]]) -> None:
    core, answers = make(max_pending=4, max_pending_per_source=2)
    notifies: list[bytes] = []
    now = 0.0
    started = 0
    for item in steps:
        out = []
        try:
            if item[0] == "subscribe":
                _, n, name, changes, source = item
                out = core.receive(edit(subscribe(int(n), str(name)), changes), source, now)  # type: ignore[arg-type, call-overload]
                for o in out:
                    assert o.addr == source  # never anywhere the message names
                    if o.data.startswith(b"NOTIFY "):
                        notifies.append(o.data)
                        started += 1
            elif item[0] == "answer":
                _, index, status, changes = item
                if notifies:
                    answer = ok_for(notifies[int(index) % len(notifies)], int(status))  # type: ignore[call-overload]
                    out = core.receive(edit(answer, changes), ("10.77.0.20", 5060), now)  # type: ignore[arg-type]
                    assert out == []
            else:
                now += float(item[1])  # type: ignore[arg-type]
                out = core.on_timer(now)
        except ProtocolError as exc:
            assert isinstance(exc, SipError)
        for o in out:
            parse(o.data)
        assert core.pending <= 4
        assert all(count <= 2 for count in core.pending_by_source.values())
        assert sum(core.pending_by_source.values()) == core.pending
    # Every NOTIFY transaction ends (answered or Timer F), and each is reported exactly once.
    core.on_timer(now + 1000.0)
    assert core.pending == 0 and core.pending_by_source == {} and core.next_deadline() is None
    assert len(answers) == started
    # And a normal phone is still answered.
    assert len(core.receive(subscribe(99), ("10.77.0.200", 5060), now + 2000.0)) == 2


def test_spoofed_subscribes_toward_one_victim_are_capped_per_source() -> None:
    # A spoofed SUBSCRIBE makes us send a 200 and a NOTIFY retransmitted on Timer E for 32 s: about 12 datagrams and
    # 13 times its size toward the "source". Per source address, at most max_pending_per_source of those run at once.
    core, _ = make(max_pending_per_source=2)
    victim = ("10.77.0.99", 5060)
    sent = [o for n in range(50) for o in core.receive(subscribe(n), victim, 0.0)]
    assert len(sent) == 4 and core.pending == 2
    # The victim's budget (2 exchanges of 12 datagrams) is spent: a replay of an answered SUBSCRIBE gets no cached
    # 200 either (issue #8 item 13). Other phones are not affected.
    assert core.receive(subscribe(0), victim, 0.1) == []
    assert len(core.receive(subscribe(7), ("10.77.0.30", 5060), 0.1)) == 2
    t = 0.0
    while (deadline := core.next_deadline()) is not None:
        t = deadline
        sent += core.on_timer(t)
    request_bytes = 50 * len(subscribe(0))
    to_victim = [o for o in sent if o.addr == victim]
    assert len(to_victim) == 2 * 12  # 50 spoofed requests: 2 exchanges of a 200 and 11 NOTIFYs
    assert sum(len(o.data) for o in to_victim) < 2 * request_bytes // 3  # well under their size, not 13 times it


def test_oversized_messages_are_dropped_before_parsing() -> None:
    # RFC 3261 18.1.1: a request over 1300 bytes does not belong on UDP. Without a bound, a crafted 60 KB SUBSCRIBE
    # (huge Call-ID and From) made us send 12 x 60 KB to its source and keep 120 KB per exchange in memory.
    core, _ = make(max_message_size=2048)
    data = subscribe(1).replace(b"Call-ID: ", b"Call-ID: " + b"c" * 3000)
    try:
        core.receive(data, ("10.77.0.20", 5060), 0.0)
        raise AssertionError("accepted")
    except SipError:
        pass
    assert core.pending == 0
    assert len(core.receive(subscribe(2), ("10.77.0.20", 5060), 0.0)) == 2


def test_recent_answers_are_bounded_by_the_configuration() -> None:
    # Phones that answer their NOTIFY at once free max_pending, but each exchange left a cached 200 for 32 s.
    core, _ = make(max_pending=10)
    for n in range(100):
        phone = (f"10.77.0.{n % 200}", 5060)
        out = core.receive(subscribe(n), phone, 0.0)
        core.receive(ok_for(out[1].data), phone, 0.0)
    assert core.pending == 0
    assert core.remembered <= 2 * 10


def test_a_late_timer_sends_one_retransmission_not_a_burst() -> None:
    # An event loop running late (a boot storm) must not answer with several copies of each NOTIFY at once: Timer E
    # restarts from when it fired (RFC 3261 17.1.2.2), not from when it was due.
    core, _ = make()
    core.receive(subscribe(1), ("10.77.0.20", 5060), 0.0)
    assert len(core.on_timer(7.9)) == 1  # due at 0.5; 1.5, 3.5 and 7.5 have passed as well
    deadline = core.next_deadline()
    assert deadline is not None and deadline > 7.9


def test_check_sync_late_timer_sends_once() -> None:
    cs = CheckSync(user="phone", target="10.77.0.20", port=5060, local=("10.77.0.1", 41000), reboot=False)
    cs.start(0.0)
    assert cs.on_timer(7.9) is not None
    deadline = cs.deadline()
    assert deadline is not None and deadline > 7.9
    assert cs.on_timer(7.9) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("time"), st.floats(0.0, 6.0)),
    st.tuples(st.just("answer"), st.sampled_from([100, 183, 200, 202, 401, 481, 500]), st.booleans(),
              st.sampled_from(["NOTIFY", "SUBSCRIBE"]), edits),
), max_size=25))
def test_check_sync_sequences(steps: list[tuple[object, ...]]) -> None:
    cs = CheckSync(user="phone", target="10.77.0.20", port=5060, local=("10.77.0.1", 41000), reboot=True)
    msg = parse(cs.start(0.0))
    now = 0.0
    final: int | None = None
    for item in steps:
        if item[0] == "time":
            now += float(item[1])  # type: ignore[arg-type]
            cs.on_timer(now)
            continue
        _, status, ours, method, changes = item
        branch = cs.branch if ours else "z9hG4bKnotours"
        data = (f"SIP/2.0 {status} R\r\nVia: SIP/2.0/UDP 10.77.0.1:41000;branch={branch}\r\n"
                f"From: {msg.require('from')}\r\nTo: {msg.require('to')};tag=p\r\nCall-ID: {cs.call_id}\r\n"
                f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode()
        try:
            response = parse(edit(data, changes))  # type: ignore[arg-type]
            if cs.matches(response) and cs.receive(response) and final is None:
                final = response.status
        except ProtocolError as exc:
            assert isinstance(exc, SipError)
    assert cs.sent <= 11  # Timer E until Timer F at most, whatever came in between
    if cs.outcome is not None and cs.outcome.status is not None:
        assert cs.outcome.status >= 200 and cs.outcome.status == final
    cs.on_timer(now + 100.0)
    assert cs.done and cs.deadline() is None


def test_retransmitted_final_response_is_absorbed_for_timer_k() -> None:
    # RFC 3261 17.1.2.2: after the final response the client transaction stays Completed for Timer K (T4, 5 s) and
    # absorbs retransmissions of it. A phone that got our NOTIFY twice answers twice: the second 200 is not garbage.
    counted: list[str] = []
    core = Responder(PnpSettings(enabled=True, url="tftp://{ipv4}/"), LOCAL, VARS, count=counted.append)
    out = core.receive(subscribe(1), ("10.77.0.20", 5060), 0.0)
    assert core.receive(ok_for(out[1].data), ("10.77.0.20", 5060), 0.6) == []
    assert core.receive(ok_for(out[1].data), ("10.77.0.20", 5060), 0.7) == []
    assert counted.count("pnp.acknowledged") == 1 and "pnp.stray_response" not in counted
    assert counted.count("pnp.retransmitted_response") == 1
    try:
        core.receive(ok_for(out[1].data), ("10.77.0.20", 5060), 6.0)  # Timer K has fired: nothing of ours
        raise AssertionError("accepted")
    except SipError:
        pass
    assert counted.count("pnp.stray_response") == 1


def options(n: int) -> bytes:
    return subscribe(n).replace(b"SUBSCRIBE sip", b"OPTIONS sip").replace(b"1 SUBSCRIBE", b"1 OPTIONS")


def test_every_reply_counts_against_the_per_source_cap() -> None:
    # Issue #8 item 13: 405s for other methods, 489s for other events and the cached 200 for a replayed SUBSCRIBE
    # were sent before the per-source check, so a spoofed flood of them reflected without bound. Every datagram
    # toward an address now counts: at most max_pending_per_source exchanges' worth (12 datagrams each) per 32 s.
    counted: list[str] = []
    pnp = PnpSettings(enabled=True, url="tftp://{ipv4}/", max_pending_per_source=2)
    core = Responder(pnp, LOCAL, VARS, count=counted.append)
    victim = ("10.77.0.99", 5060)
    sent = [o for n in range(100) for o in core.receive(options(n), victim, 0.0)]
    assert len(sent) == 24 and all(parse(o.data).status == 405 for o in sent)
    assert counted.count("pnp.source_busy") == 76
    bad_event = subscribe(200).replace(b"Event: ua-profile", b"Event: presence")
    assert core.receive(bad_event, victim, 1.0) == []
    assert core.receive(subscribe(201), victim, 1.0) == []  # nor a new exchange
    assert len(core.receive(options(300), ("10.77.0.30", 5060), 1.0)) == 1  # another address has its own budget
    # Timer F later, the budget is back.
    assert len(core.receive(options(400), victim, 32.0)) == 1
    assert len(core.receive(subscribe(401), victim, 32.0)) == 2


def test_replayed_subscribes_cannot_multiply_the_cached_200() -> None:
    core, _ = make(max_pending_per_source=2)  # 24 datagrams per 32 s toward one address
    victim = ("10.77.0.99", 5060)
    first = core.receive(subscribe(1), victim, 0.0)
    assert len(first) == 2  # 12 counted: the 200 and every NOTIFY Timer E may still send
    replies = [o for _ in range(50) for o in core.receive(subscribe(1), victim, 0.1)]
    assert replies == [first[0]] * 12
    # Retransmissions of the NOTIFY were counted when the exchange began: they still go out.
    assert len(core.on_timer(0.5)) == 1


def test_a_phone_retransmitting_its_subscribe_is_answered_every_time() -> None:
    # A real phone whose 200 was lost retransmits its SUBSCRIBE on Timer E (at most 10 times in 32 s): well inside
    # the default budget of 96 datagrams, and so is a second boot within the same 32 s.
    core, _ = make()
    phone = ("10.77.0.20", 5060)
    first = core.receive(subscribe(1), phone, 0.0)
    for at in (0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5):
        assert core.receive(subscribe(1), phone, at) == [first[0]]
    assert len(core.receive(subscribe(2), phone, 31.6)) == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([1, 12]), st.floats(0.0, 3.0)),
                max_size=200), st.integers(1, 40), st.integers(1, 20))
def test_reply_budget_holds_in_every_window(ops: list[tuple[str, int, float]], limit: int, entries: int) -> None:
    from bootstrapd.pnp.budget import ReplyBudget

    budget = ReplyBudget(limit, 32.0, entries)
    now = 0.0
    granted: list[tuple[float, str, int]] = []
    for host, cost, step in ops:
        now += step
        if budget.spend(host, cost, now):
            granted.append((now, host, cost))
        assert len(budget) <= entries
    # Whatever the mix, no address was granted more than the limit within any 32 s.
    for at, host, _ in granted:
        assert sum(c for t, h, c in granted if h == host and at - 32.0 < t <= at) <= limit
    # And what was charged is released again one window after the last charge.
    for host in "abc":
        assert budget.spent(host, now + 33.0) == 0
