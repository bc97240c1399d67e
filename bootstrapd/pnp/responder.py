"""The SIP plug-and-play responder core: SUBSCRIBE in, 200 + NOTIFY out, the NOTIFY's UDP transaction; no I/O.

Flow (RFC 6080 ``ua-profile``, RFC 3261 17.1.2 for the NOTIFY):

- ``Event: ua-profile`` SUBSCRIBE -> ``200 OK`` echoing Via/From/To/Call-ID/CSeq with our To tag, then a NOTIFY to the
  SUBSCRIBE's Contact URI carrying the provisioning URL. The NOTIFY is retransmitted on Timer E (T1 doubling to T2)
  until the phone's final response or Timer F (64*T1); either way the phone is reported through ``answered``.
- A retransmitted SUBSCRIBE (same Call-ID, CSeq and top branch) gets the very same 200 again and no second NOTIFY.
- Other events -> 489; other requests -> 405 (ACK gets nothing); stray responses and garbage raise SipError, which the
  adapter counts as a drop. A retransmitted final response to a finished NOTIFY is absorbed for Timer K (T4, 5 s).

Security: every datagram goes to the address and port the SUBSCRIBE came from, never to a host named inside the
message (Via sent-by, Contact). Otherwise anyone could make us send NOTIFYs to a third party, and a multicast
listener is an easy reflector. The Contact is only used as the NOTIFY's Request-URI text.

State is bounded: at most ``max_pending`` NOTIFY transactions (beyond that SUBSCRIBEs get no answer and the phone
retransmits), at most ``max_pending_per_source`` of them per source address, and at most ``2 * max_pending`` recent
200s kept for retransmitted SUBSCRIBEs; every message is at most ``max_message_size`` bytes, so each of those holds
about that much at most.

Reflection: a spoofed SUBSCRIBE makes us send a 200 and a NOTIFY retransmitted on Timer E until Timer F, 12
datagrams and 13 times the request's size toward the spoofed source; an OPTIONS (405), another event (489) or a
replayed SUBSCRIBE (its cached 200) one each. Every one of them is charged to the source address
(:class:`~bootstrapd.pnp.budget.ReplyBudget`) before it is built: an address gets at most ``max_pending_per_source``
exchanges' worth (12 datagrams each) in any 32 s, whatever mix of requests a flood uses (a real phone needs one
exchange and a few cached 200s); the size cap bounds each datagram.
"""

from __future__ import annotations

import heapq
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from bootstrapd.pnp import urls
from bootstrapd.pnp.budget import ReplyBudget
from bootstrapd.pnp.message import (
    SipError,
    SipMessage,
    Via,
    format_via,
    parse,
    parse_name_addr,
    parse_uri,
    request,
    response_to,
    split_params,
)
from bootstrapd.pnp.settings import PnpSettings

T1 = 0.5
T2 = 4.0
TIMER_F = 64 * T1
T4 = 5.0  # Timer K over UDP: how long a finished NOTIFY transaction absorbs retransmissions of its final response

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Outgoing:
    data: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class Answered:
    """One phone sent to a URL; ``acknowledged`` tells whether it confirmed the NOTIFY with a 2xx."""

    mac: str | None
    ip: str
    port: int
    vendor: str | None
    model: str | None
    version: str | None
    url: str
    acknowledged: bool
    status: int | None  # the phone's final response to the NOTIFY; None on Timer F


@dataclass(slots=True)
class _Transaction:
    data: bytes
    addr: Address
    interval: float
    next_at: float
    give_up_at: float
    answer: Answered


def _token() -> str:
    return secrets.token_hex(8)


def _two_tokens() -> tuple[str, str]:
    # One getrandom() call for both the To tag and the NOTIFY branch of an exchange.
    both = secrets.token_hex(16)
    return both[:16], both[16:]


def _nothing(_: str) -> None:
    return None


def _notify_sends(t1: float, t2: float, timer_f: float) -> int:
    """How many times a NOTIFY nobody answers is sent: at 0, then on Timer E (T1 doubling to T2) until Timer F."""
    sends, at, interval = 1, t1, t1
    while at < timer_f:
        sends += 1
        interval = min(interval * 2, t2)
        at += interval
    return sends


def _budget_entries(settings: PnpSettings) -> int:
    # Room for every exchange max_pending allows, and a flood from 2,000 random sources a second for Timer F.
    return max(4 * settings.max_pending, 65536)


class Responder:
    def __init__(self, settings: PnpSettings, local: Address, variables: dict[str, str], *,
                 answered: Callable[[Answered], None] | None = None,
                 count: Callable[[str], None] = _nothing,
                 t1: float = T1, t2: float = T2) -> None:
        self.settings = settings
        self.local = local
        self.variables = dict(variables)
        self.answered = answered or (lambda _: None)
        self.count = count
        self.t1 = t1
        self.t2 = t2
        self.timer_f = 64 * t1
        # Every datagram toward a source counts against its budget: an exchange (the 200 and each NOTIFY Timer E can
        # send) costs this many; max_pending_per_source exchanges' worth per Timer F.
        self.exchange_cost = 1 + _notify_sends(t1, t2, self.timer_f)
        self.budget = ReplyBudget(self._budget_limit(settings), self.timer_f, _budget_entries(settings))
        self._contact = f"<sip:{local[0]}:{local[1]}>"
        self._via = f"SIP/2.0/UDP {local[0]}:{local[1]}"
        self._pending: dict[str, _Transaction] = {}
        self._per_source: dict[str, int] = {}  # source address -> NOTIFY transactions in flight
        self._completed: OrderedDict[str, float] = OrderedDict()  # branch -> end of Timer K
        self._heap: list[tuple[float, str]] = []
        # (Call-ID, CSeq number, top branch) -> (200 bytes, when it may be forgotten)
        self._recent: OrderedDict[tuple[str, int, str], tuple[bytes, float]] = OrderedDict()

    def reconfigure(self, settings: PnpSettings, variables: dict[str, str]) -> None:
        self.settings = settings
        self.variables = dict(variables)
        self.budget.limit = self._budget_limit(settings)
        self.budget.max_entries = _budget_entries(settings)

    def _budget_limit(self, settings: PnpSettings) -> int:
        return settings.max_pending_per_source * self.exchange_cost

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def pending_by_source(self) -> dict[str, int]:
        return dict(self._per_source)

    @property
    def remembered(self) -> int:
        """How many 200s are kept for retransmitted SUBSCRIBEs."""
        return len(self._recent)

    # -- input ------------------------------------------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> list[Outgoing]:
        """Handle one datagram from ``addr``; returns what to send. Raises SipError for what is dropped."""
        self._forget(now)
        if len(data) > self.settings.max_message_size:
            # RFC 3261 18.1.1: requests this large do not belong on UDP; everything we echo stays small with it.
            self.count("pnp.too_large")
            raise SipError(f"datagram of {len(data)} bytes")
        message = parse(data)
        if message.is_request:
            return self._request(message, (str(addr[0]), int(addr[1])), now)
        self._response(message, str(addr[0]), now)
        return []

    def _request(self, req: SipMessage, source: Address, now: float) -> list[Outgoing]:
        if req.method == "ACK":
            return []
        vias = req.vias()
        if not vias:
            raise SipError("missing Via")
        call_id = req.require("call-id").strip()
        number, method = req.cseq()
        reply_vias = self._reply_vias(req, vias[0], source)
        if req.method != "SUBSCRIBE":
            self.count("pnp.not_subscribe")
            if not self._spend(source, 1, now):
                return []
            return [Outgoing(response_to(req, 405, "Method Not Allowed", to_tag=_token(), vias=reply_vias,
                                         extra=[("Allow", "SUBSCRIBE")]).encode(), source)]
        if method != "SUBSCRIBE":
            raise SipError("CSeq method does not match SUBSCRIBE")
        key = (call_id, number, vias[0].branch or "")
        recent = self._recent.get(key)
        if recent is not None:
            self.count("pnp.retransmitted_subscribe")
            return [Outgoing(recent[0], source)] if self._spend(source, 1, now) else []
        event_type, event = split_params(req.require("event"))
        if event_type.lower() != "ua-profile":
            self.count("pnp.bad_event")
            if not self._spend(source, 1, now):
                return []
            return [Outgoing(response_to(req, 489, "Bad Event", to_tag=_token(), vias=reply_vias,
                                         extra=[("Allow-Events", "ua-profile")]).encode(), source)]
        mac = urls.mac_from_user(parse_uri(req.uri or "").user)
        vendor, model, version = event.get("vendor"), event.get("model"), event.get("version")
        template = urls.select(self.settings.rules, self.settings.url, vendor=vendor, model=model, mac=mac)
        if template is None:
            self.count("pnp.refused")
            return []
        if len(self._pending) >= self.settings.max_pending:
            self.count("pnp.overload")  # no 200: the phone retransmits and is served once there is room
            return []
        if self._per_source.get(source[0], 0) >= self.settings.max_pending_per_source:
            self.count("pnp.source_busy")  # a phone has one exchange at a time; more is a flood or a spoofed victim
            return []
        if not self._spend(source, self.exchange_cost, now):
            return []
        url = urls.expand(template, self.variables, mac=mac, vendor=vendor, model=model)
        tag, token = _two_tokens()
        ours = self._contact
        ok = response_to(req, 200, "OK", to_tag=tag, vias=reply_vias,
                         extra=[("Contact", ours), ("Expires", "0")]).encode()
        notify = self._notify(req, tag, token, source, url)
        branch = notify.branch
        self._recent[key] = (ok, now + self.timer_f)
        while len(self._recent) > 2 * self.settings.max_pending:
            self._recent.popitem(last=False)
        self._per_source[source[0]] = self._per_source.get(source[0], 0) + 1
        answer = Answered(mac, source[0], source[1], vendor, model, version, url, False, None)
        self._pending[branch] = _Transaction(notify.data, source, self.t1, now + self.t1, now + self.timer_f, answer)
        heapq.heappush(self._heap, (now + self.t1, branch))
        self.count("pnp.subscribe")
        return [Outgoing(ok, source), Outgoing(notify.data, source)]

    def _spend(self, source: Address, cost: int, now: float) -> bool:
        if self.budget.spend(source[0], cost, now):
            return True
        # Over this address's budget (a flood toward one victim), or the budget's log is full (a flood from random
        # sources): nothing is sent; a real phone retransmits and is answered once the budget allows.
        self.count("pnp.source_busy")
        return False

    def _reply_vias(self, req: SipMessage, top: Via, source: Address) -> list[str]:
        """The request's Via values, the top one marked with where it really came from (RFC 3261 18.2.1, 3581)."""
        params = dict(top.params)
        if top.host.strip("[]") != source[0]:
            params["received"] = source[0]
        if "rport" in params:
            params["rport"] = str(source[1])
            params["received"] = source[0]
        values = req.get_all("via")
        return [format_via(Via(top.transport, top.host, top.port, params)), *values[1:]]

    @dataclass(frozen=True, slots=True)
    class _Built:
        data: bytes
        branch: str

    def _notify(self, sub: SipMessage, tag: str, token: str, source: Address, url: str) -> Responder._Built:
        target = f"sip:{source[0]}:{source[1]}"
        contacts = sub.get_all("contact")
        if contacts:
            try:
                uri = parse_name_addr(contacts[0]).uri
                parse_uri(uri)
                target = uri
            except SipError:
                pass  # unusable Contact: address the NOTIFY to where the phone is
        branch = "z9hG4bK" + token
        to = sub.require("to")
        if parse_name_addr(to).tag is None:
            to = f"{to};tag={tag}"
        notify = request("NOTIFY", target, [
            ("Via", f"{self._via};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", to),
            ("To", sub.require("from")),
            ("Call-ID", sub.require("call-id")),
            ("CSeq", "1 NOTIFY"),
            ("Contact", self._contact),
            ("Event", sub.require("event")),
            ("Subscription-State", "terminated;reason=timeout"),
            ("Content-Type", "application/url"),
        ], url.encode("utf-8", "surrogateescape"))
        return Responder._Built(notify.encode(), branch)

    def _response(self, resp: SipMessage, host: str, now: float) -> None:
        vias = resp.vias()
        if not vias:
            raise SipError("response without Via")
        branch = vias[0].branch or ""
        transaction = self._pending.get(branch)
        if transaction is not None and transaction.addr[0] != host:
            # Only the phone the NOTIFY went to answers it: this one would make a phone "acknowledged" (and
            # recorded for resync) on someone else's word. The port may differ (a phone's SIP stack may answer
            # from another socket); the address may not.
            transaction = None
        if transaction is None or resp.cseq()[1] != "NOTIFY":
            if branch in self._completed and resp.status is not None and resp.status >= 200:
                self.count("pnp.retransmitted_response")  # Timer K: absorbed, not garbage
                return
            self.count("pnp.stray_response")
            raise SipError("response to nothing of ours")
        assert resp.status is not None
        if resp.status < 200:
            transaction.interval = self.t2  # RFC 3261 17.1.2.2: Proceeding, retransmit every T2
            return
        self._end(branch)
        self._completed[branch] = now + T4
        while len(self._completed) > self.settings.max_pending:
            self._completed.popitem(last=False)
        answer = transaction.answer
        self.count("pnp.acknowledged" if resp.status < 300 else "pnp.rejected")
        self.answered(Answered(answer.mac, answer.ip, answer.port, answer.vendor, answer.model, answer.version,
                               answer.url, 200 <= resp.status < 300, resp.status))

    # -- time -------------------------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            at, branch = heap[0]
            transaction = self._pending.get(branch)
            if transaction is not None and min(transaction.next_at, transaction.give_up_at) == at:
                return at
            heapq.heappop(heap)  # the transaction ended or was rescheduled: a stale entry
        return None

    def on_timer(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, branch = heapq.heappop(heap)
            transaction = self._pending.get(branch)
            if transaction is None or min(transaction.next_at, transaction.give_up_at) != at:
                continue
            if at >= transaction.give_up_at:
                self._end(branch)
                self.count("pnp.notify_timeout")
                self.answered(transaction.answer)
                continue
            out.append(Outgoing(transaction.data, transaction.addr))
            self.count("pnp.notify_retransmit")
            # Timer E: the next interval doubles up to T2, counted from when it fired (RFC 3261 17.1.2.2): a loop
            # running late sends one copy, not one per interval it missed (a burst just when we are overloaded).
            transaction.interval = min(transaction.interval * 2, self.t2)
            transaction.next_at = now + transaction.interval
            heapq.heappush(heap, (min(transaction.next_at, transaction.give_up_at), branch))
        self._forget(now)
        return out

    def _end(self, branch: str) -> None:
        transaction = self._pending.pop(branch)
        host = transaction.addr[0]
        left = self._per_source.get(host, 0) - 1
        if left > 0:
            self._per_source[host] = left
        else:
            self._per_source.pop(host, None)

    def _forget(self, now: float) -> None:
        completed = self._completed
        while completed:
            branch, until = next(iter(completed.items()))
            if until > now:
                break
            del completed[branch]
        recent = self._recent
        while recent:
            key, (_, until) = next(iter(recent.items()))
            if until > now:
                break
            del recent[key]
