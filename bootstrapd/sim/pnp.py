"""The phone's side of SIP plug-and-play, over :mod:`bootstrapd.pnp.message`: one SUBSCRIBE to 224.0.1.75:5060,
the NOTIFY that carries the provisioning URL answered with 200.

No I/O and no clock. The SUBSCRIBE is the form a Yealink sends (``tests/data/pnp/yealink-w52p.sip``: Request-URI
``sip:MAC<mac>@224.0.1.75``, ``Expires: 0``, ``Event: ua-profile`` with vendor, model and version, ``Accept:
application/url``), from the phone's leased address. It is a UDP non-INVITE request: retransmitted on Timer E (0.5 s
doubling to 4 s) until a final response. The phone waits ``wait`` seconds from the first SUBSCRIBE for a NOTIFY
(unverified for Yealink: AudioCodes phones wait about 5 s, protocols.md section 2), then goes on without PnP. A
retransmitted NOTIFY gets the same 200 again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bootstrapd.pnp import message
from bootstrapd.pnp.message import SipError, SipMessage

GROUP = ("224.0.1.75", 5060)
T1, T2 = 0.5, 4.0

Address = tuple[str, int]


@dataclass
class PnpClient:
    mac: str  # 12 lower-case hex digits
    model: str  # what the Event header says (the model table's id, as bootstrapd's PnP rules match it)
    version: str  # firmware version, e.g. 108.86.0.90 (its first field is the hardware id)
    address: str  # the phone's leased address
    rng: random.Random
    port: int = 5060
    wait: float = 5.0
    state: str = "idle"  # idle, subscribing, waiting, done, failed
    url: str | None = None
    failure: str = ""
    status: int | None = None  # the final response to the SUBSCRIBE
    subscribes: int = 0  # SUBSCRIBEs sent, retransmissions included
    notifies: int = 0  # NOTIFYs received, retransmissions included
    deadline: float | None = None
    _give_up: float = 0.0
    _interval: float = T1
    _resend: float | None = None
    _subscribe: bytes = field(default=b"", repr=False)
    _call_id: str = ""
    _ok: dict[str, bytes] = field(default_factory=dict, repr=False)  # NOTIFY branch -> our 200 (for retransmissions)

    @property
    def user_agent(self) -> str:
        return f"Yealink SIP-{self.model} {self.version}"

    def _build(self) -> bytes:
        token = f"{self.rng.getrandbits(32)}"
        aor = f"<sip:MAC{self.mac}@{GROUP[0]}>"
        self._call_id = f"{token}@{self.address}"
        headers = [
            ("Via", f"SIP/2.0/UDP {self.address}:{self.port};branch=z9hG4bK{token}"),
            ("From", f"{aor};tag={token}"),
            ("To", aor),
            ("Call-ID", self._call_id),
            ("CSeq", "1 SUBSCRIBE"),
            ("Contact", f"<sip:MAC{self.mac}@{self.address}:{self.port}>"),
            ("User-Agent", self.user_agent),
            ("Expires", "0"),
            ("Event", f'ua-profile;profile-type="device";vendor="yealink";model="{self.model}";'
                      f'version="{self.version}"'),
            ("Accept", "application/url"),
        ]
        return message.request("SUBSCRIBE", f"sip:MAC{self.mac}@{GROUP[0]}", headers).encode()

    def start(self, now: float) -> list[tuple[bytes, Address]]:
        self.state = "subscribing"
        self._subscribe = self._build()
        self._give_up = now + self.wait
        self._interval = T1
        self.subscribes = 1
        self._resend = now + T1
        self._arm()
        return [(self._subscribe, GROUP)]

    def _arm(self) -> None:
        if self.state not in ("subscribing", "waiting"):
            self.deadline = None
            return
        self.deadline = min(self._give_up, self._resend) if self._resend is not None else self._give_up

    def receive(self, data: bytes, source: Address, now: float) -> list[tuple[bytes, Address]]:
        try:
            msg = message.parse(data)
            if msg.get("call-id") != self._call_id:
                return []
            if msg.is_request:
                return self._request(msg, source)
            _number, method = msg.cseq()
        except SipError:
            return []
        if method != "SUBSCRIBE" or msg.status is None or msg.status < 200 or self.state != "subscribing":
            return []
        self.status = msg.status
        self._resend = None
        if msg.status >= 300:
            self.state = "failed"
            self.failure = f"PnP SUBSCRIBE answered {msg.status} {msg.reason}".rstrip()
        else:
            self.state = "waiting"
        self._arm()
        return []

    def _request(self, msg: SipMessage, source: Address) -> list[tuple[bytes, Address]]:
        if msg.method != "NOTIFY":
            return []
        vias = msg.vias()
        branch = vias[0].branch if vias else None
        self.notifies += 1
        if branch and branch in self._ok:
            return [(self._ok[branch], source)]  # a retransmission: the same answer
        body = msg.body.decode("utf-8", "replace").strip()
        ok = message.response_to(msg, 200, "OK").encode()
        if branch:
            self._ok[branch] = ok
        if self.state in ("subscribing", "waiting"):
            if body:
                self.url = body
                self.state = "done"
            else:
                self.state = "failed"
                self.failure = "PnP NOTIFY without a URL"
            self._resend = None
            self._arm()
        return [(ok, source)]

    def on_timer(self, now: float) -> list[tuple[bytes, Address]]:
        if self.deadline is None or now < self.deadline:
            return []
        if now >= self._give_up:
            self.state = "failed"
            if self.status is None:
                self.failure = f"PnP: no answer to {self.subscribes} SUBSCRIBEs in {self.wait:g} s"
            else:
                self.failure = f"PnP: {self.status} to the SUBSCRIBE but no NOTIFY in {self.wait:g} s"
            self._resend = None
            self._arm()
            return []
        out: list[tuple[bytes, Address]] = []
        if self._resend is not None and now >= self._resend:
            self.subscribes += 1
            self._interval = min(self._interval * 2, T2)
            self._resend = now + self._interval
            out.append((self._subscribe, GROUP))
        self._arm()
        return out
