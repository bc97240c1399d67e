"""The check-sync NOTIFY: its headers, Timer E/F with injected time, response matching."""

from __future__ import annotations

import pytest

from bootstrapd.pnp.checksync import CheckSync
from bootstrapd.pnp.message import parse, parse_name_addr


def make(reboot: bool = False, timeout: float = 32.0, port: int = 5060) -> CheckSync:
    return CheckSync(user="001565aabbcc", target="10.77.0.20", port=port, local=("10.77.0.1", 41000),
                     reboot=reboot, timeout=timeout)


def answer(cs: CheckSync, status: int, branch: str | None = None, method: str = "NOTIFY") -> bytes:
    msg = parse(cs.data)
    via = msg.require("via") if branch is None else f"SIP/2.0/UDP 10.77.0.1:41000;branch={branch}"
    return (f"SIP/2.0 {status} Reason\r\nVia: {via}\r\nFrom: {msg.require('from')}\r\n"
            f"To: {msg.require('to')};tag=p\r\nCall-ID: {msg.require('call-id')}\r\nCSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("reboot,word", [(False, "false"), (True, "true")])
def test_notify_headers(reboot: bool, word: str) -> None:
    cs = make(reboot)
    msg = parse(cs.start(0.0))
    assert msg.method == "NOTIFY" and msg.uri == "sip:001565aabbcc@10.77.0.20"
    assert msg.require("event") == f"check-sync;reboot={word}"
    via = msg.vias()[0]
    assert (via.host, via.port, via.transport) == ("10.77.0.1", 41000, "UDP") and via.branch == cs.branch
    assert parse_name_addr(msg.require("from")).tag
    assert msg.require("to") == "<sip:001565aabbcc@10.77.0.20>"
    assert msg.require("call-id") == cs.call_id
    assert msg.cseq() == (1, "NOTIFY")
    assert msg.require("max-forwards") == "70"
    assert msg.require("content-length") == "0" and msg.body == b""


def test_port_in_uri_when_not_default() -> None:
    assert parse(make(port=5062).data).uri == "sip:001565aabbcc@10.77.0.20:5062"


def test_timer_e_then_timer_f() -> None:
    cs = make()
    cs.start(0.0)
    sent = []
    while (deadline := cs.deadline()) is not None:
        if cs.on_timer(deadline) is not None:
            sent.append(deadline)
    assert sent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert cs.outcome is not None and cs.outcome.status is None and not cs.outcome.ok
    assert cs.sent == 11


def test_short_timeout() -> None:
    cs = make(timeout=2.0)
    cs.start(10.0)
    assert cs.on_timer(10.4) is None
    assert cs.on_timer(10.5) is not None
    assert cs.deadline() == 11.5
    cs.on_timer(11.5)
    assert cs.deadline() == 12.0
    cs.on_timer(12.0)
    assert cs.done and cs.outcome is not None and cs.outcome.reason == "no answer"


def test_200_ends_the_transaction() -> None:
    cs = make()
    cs.start(0.0)
    response = parse(answer(cs, 200))
    assert cs.matches(response)
    assert cs.receive(response)
    assert cs.outcome is not None and cs.outcome.ok and cs.outcome.status == 200
    assert cs.deadline() is None and cs.on_timer(100.0) is None


def test_provisional_then_481() -> None:
    cs = make()
    cs.start(0.0)
    assert not cs.receive(parse(answer(cs, 100)))
    cs.on_timer(0.5)
    assert cs.deadline() == 4.5
    assert cs.receive(parse(answer(cs, 481)))
    assert cs.outcome is not None and cs.outcome.status == 481 and not cs.outcome.ok


def test_responses_for_others_do_not_match() -> None:
    cs = make()
    cs.start(0.0)
    assert not cs.matches(parse(answer(cs, 200, branch="z9hG4bKother")))
    assert not cs.matches(parse(answer(cs, 200, method="OPTIONS")))
    assert not cs.matches(parse(cs.data))  # our own request looped back
