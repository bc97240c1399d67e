"""check-sync: the out-of-dialog NOTIFY that makes a provisioned phone fetch its configuration again; no I/O.

One :class:`CheckSync` is one non-INVITE client transaction over UDP (RFC 3261 17.1.2): :meth:`start` gives the
NOTIFY, :meth:`on_timer` retransmits it on Timer E (T1 doubling up to T2) and gives up at Timer F (64*T1, or the
caller's shorter timeout), :meth:`receive` matches a response by its top Via branch and CSeq.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from bootstrapd.pnp.message import SipError, SipMessage, request

T1 = 0.5
T2 = 4.0


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None  # the phone's final response; None when it never answered
    reason: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def build_check_sync(*, user: str, target: str, port: int, local: tuple[str, int], reboot: bool, branch: str,
                     tag: str, call_id: str, cseq: int = 1) -> SipMessage:
    host = f"[{target}]" if ":" in target else target
    uri = f"sip:{user}@{host}" + (f":{port}" if port != 5060 else "")
    return request("NOTIFY", uri, [
        ("Via", f"SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:bootstrapd@{local[0]}>;tag={tag}"),
        ("To", f"<{uri}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} NOTIFY"),
        ("Event", f"check-sync;reboot={'true' if reboot else 'false'}"),
        ("Subscription-State", "terminated"),
    ])


class CheckSync:
    def __init__(self, *, user: str, target: str, port: int, local: tuple[str, int], reboot: bool,
                 timeout: float = 64 * T1, t1: float = T1, t2: float = T2) -> None:
        self.target = target
        self.port = port
        self.branch = "z9hG4bK" + secrets.token_hex(8)
        self.call_id = secrets.token_hex(12) + "@" + local[0]
        self.message = build_check_sync(user=user, target=target, port=port, local=local, reboot=reboot,
                                        branch=self.branch, tag=secrets.token_hex(6), call_id=self.call_id)
        self.data = self.message.encode()
        self.timeout = timeout
        self.t2 = t2
        self._interval = t1
        self._next: float | None = None
        self._give_up = 0.0
        self.outcome: Outcome | None = None
        self.sent = 0

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def start(self, now: float) -> bytes:
        self._next = now + self._interval
        self._give_up = now + self.timeout
        self.sent = 1
        return self.data

    def deadline(self) -> float | None:
        if self.outcome is not None or self._next is None:
            return None
        return min(self._next, self._give_up)

    def on_timer(self, now: float) -> bytes | None:
        """The NOTIFY again when Timer E fired; None otherwise (and the outcome set once Timer F fired)."""
        if self.outcome is not None or self._next is None:
            return None
        if now >= self._give_up:
            self.outcome = Outcome(None, "no answer")
            return None
        if now < self._next:
            return None
        self._interval = min(self._interval * 2, self.t2)
        self._next = now + self._interval  # from when it fired: a late call sends once, not a catch-up burst
        self.sent += 1
        return self.data

    def matches(self, response: SipMessage) -> bool:
        vias = response.vias()
        if not vias or vias[0].branch != self.branch or response.is_request:
            return False
        try:
            return response.cseq()[1] == "NOTIFY"
        except SipError:
            return False

    def receive(self, response: SipMessage) -> bool:
        """Apply a response already known to match; True once the transaction is over."""
        assert response.status is not None
        if self.outcome is not None:
            return True
        if response.status < 200:
            self._interval = self.t2  # Proceeding: keep retransmitting every T2 until final
            return False
        self.outcome = Outcome(response.status, response.reason)
        return True
