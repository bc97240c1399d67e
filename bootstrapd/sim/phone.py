"""One simulated phone from power-on to provisioned (or failed, with the reason): the sequence a Yealink follows.

1. DHCPv4 (:mod:`bootstrapd.sim.dhcp4`) to an ACK (and, when asked, DHCPv6 at the same time,
   :mod:`bootstrapd.sim.dhcp6`: the phone goes on once both answered or gave up); the adapter then puts the leased
   address on the interface
   (:class:`Configure`) and everything after comes from that address.
2. SIP PnP (:mod:`bootstrapd.sim.pnp`) from the leased address, when the phone's PnP is active.
3. The provisioning URL, chosen in the guide's priority from what the phone heard
   (:func:`bootstrapd.provisioning.discovery.received_sources` and :func:`~bootstrapd.provisioning.discovery.chosen`,
   the functions ``explain`` uses), else the URL in its flash.
4. The provisioning model's download algorithm (:class:`bootstrapd.provisioning.phone.Session`: the one
   implementation ``check`` and ``explain`` run too), each request a :class:`Get` the adapter performs over the
   URL's scheme and answers with a :class:`~bootstrapd.sim.result.Result`.
5. The upload of ``<mac>-local.cfg`` (:class:`Put`) when the phone has personal settings and
   ``static.auto_provision.custom.sync = 1``.

No I/O and no clock: every method takes ``now`` and returns actions; :attr:`deadline` is when :meth:`on_timer`
wants to run. The record (:meth:`record`) holds the timeline and the effective configuration.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any
from urllib.parse import urlsplit

from bootstrapd.provisioning import discovery
from bootstrapd.provisioning.discovery import UrlSource
from bootstrapd.provisioning.phone import SYNC, Kind, Outcome, Phone, Session
from bootstrapd.redact import MASK, is_secret, mask_url
from bootstrapd.sim import result as results
from bootstrapd.sim.dhcp4 import Dhcp4Client, Lease
from bootstrapd.sim.dhcp6 import Dhcp6Client
from bootstrapd.sim.identity import Identity
from bootstrapd.sim.pnp import Address, PnpClient
from bootstrapd.sim.result import Result


class Stage(enum.StrEnum):
    OFF = "off"
    DHCP = "dhcp"
    PNP = "pnp"
    DOWNLOAD = "download"
    UPLOAD = "upload"
    PROVISIONED = "provisioned"
    FAILED = "failed"


@dataclass(frozen=True)
class Options:
    pnp: bool = True  # the phone's PnP Active (factory default: on)
    dhcp6: bool = False  # DHCPv6 too (its option 59 is the phone's IPv6 provisioning source)
    pnp_wait: float = 5.0
    dhcp_only: bool = False  # stop at the ACK (DHCP-only storms)
    custom_option: int | None = None  # the phone's IPv4 Custom Option
    flash_url: str | None = None  # the Server URL in the phone's flash: the last source
    broadcast_flag: bool = False
    dhcp_tries: int = 5
    tftp_timeout: float = 5.0
    tftp_tries: int = 5
    local_cfg: str | None = None  # personal settings (key = value lines) the phone backs up as <mac>-local.cfg
    init_reboot: bool = True  # a phone that had an address asks for it again (INIT-REBOOT) before any DISCOVER


@dataclass(frozen=True)
class SendDhcp:
    payload: bytes  # from 0.0.0.0:68 to 255.255.255.255:67, Ethernet source = the phone's MAC


@dataclass(frozen=True)
class SendDhcp6:
    payload: bytes  # from the interface's link-local address, port 546, to ff02::1:2 port 547


@dataclass(frozen=True)
class Configure:
    lease: Lease  # put the address on the interface, announce it, open the phone's SIP socket; then configured()
    ipv6: IPv6Address | None = None  # the DHCPv6 address, when the phone has one


@dataclass(frozen=True)
class SendSip:
    data: bytes
    dest: Address


@dataclass(frozen=True)
class Get:
    url: str
    kind: Kind


@dataclass(frozen=True)
class Put:
    url: str
    data: bytes


Action = SendDhcp | SendDhcp6 | Configure | SendSip | Get | Put

# Model findings that mean the phone did not get the configuration it was meant to have.
FAILING_FINDINGS = ("include-missing", "no-key", "bad-encryption", "bad-key-file", "missing-header")


def short(url: str) -> str:
    """The path of a URL without its leading '/' (``sip.cfg``, ``T46U_1/account.cfg``)."""
    try:
        return urlsplit(url).path.lstrip("/") or url
    except ValueError:
        return url


@dataclass
class Transfer:
    url: str
    kind: str  # the model's Kind, or "upload"
    start: float
    end: float = 0.0
    status: str = ""
    size: int = 0
    retries: int = 0
    detail: str = ""


@dataclass
class SimPhone:
    identity: Identity
    options: Options
    rng: random.Random
    last_md5: dict[str, str] = field(default_factory=dict)  # from the previous boot, for the MD5 check
    previous_address: str | None = None  # the address of the previous boot (INIT-REBOOT)
    stage: Stage = Stage.OFF
    failure: str = ""
    problems: list[str] = field(default_factory=list)  # every failure reason, the first is ``failure``
    lease: Lease | None = None
    source: UrlSource | None = None
    sources: list[UrlSource] = field(default_factory=list)
    url: str | None = None
    outcome: Outcome | None = None
    transfers: list[Transfer] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # power_on, bound, pnp_end, url, downloaded, done
    dhcp: Dhcp4Client | None = None
    dhcp6: Dhcp6Client | None = None
    pnp: PnpClient | None = None
    _session: Session | None = None
    _pending: Transfer | None = None
    _uploading: Transfer | None = None

    @property
    def mac(self) -> str:
        return self.identity.mac

    @property
    def version(self) -> str:
        firmware = self.identity.firmware or 86
        return f"{self.identity.model.hardware_id}.{firmware}.0.90"

    @property
    def done(self) -> bool:
        return self.stage in (Stage.PROVISIONED, Stage.FAILED)

    @property
    def deadline(self) -> float | None:
        if self.stage is Stage.DHCP and self.dhcp is not None:
            pending = [d for d in (self.dhcp.deadline, self.dhcp6.deadline if self.dhcp6 else None) if d is not None]
            return min(pending) if pending else None
        if self.stage is Stage.PNP and self.pnp is not None:
            return self.pnp.deadline
        return None

    # -- 1. DHCP --------------------------------------------------------------------------------------------------

    def power_on(self, now: float) -> list[Action]:
        self.stage = Stage.DHCP
        self.times["power_on"] = now
        previous = IPv4Address(self.previous_address) if self.previous_address and self.options.init_reboot else None
        self.dhcp = Dhcp4Client(bytes.fromhex(self.mac), self.rng, hostname=f"SIP-{self.identity.model.id}",
                                custom_option=self.options.custom_option,
                                broadcast_flag=self.options.broadcast_flag, tries=self.options.dhcp_tries,
                                previous=previous)
        out: list[Action] = [SendDhcp(p) for p in self.dhcp.start(now)]
        if self.options.dhcp6:
            self.dhcp6 = Dhcp6Client(bytes.fromhex(self.mac), self.rng, tries=self.options.dhcp_tries)
            out += [SendDhcp6(p) for p in self.dhcp6.start(now)]
        return out

    def on_dhcp6(self, payload: bytes, now: float) -> list[Action]:
        if self.stage is not Stage.DHCP or self.dhcp6 is None:
            return []
        out: list[Action] = [SendDhcp6(p) for p in self.dhcp6.receive(payload, now)]
        return out + self._dhcp_progress(now)

    def on_dhcp(self, payload: bytes, now: float) -> list[Action]:
        if self.stage is not Stage.DHCP or self.dhcp is None:
            return []
        out: list[Action] = [SendDhcp(p) for p in self.dhcp.receive(payload, now)]
        return out + self._dhcp_progress(now)

    def _dhcp_progress(self, now: float) -> list[Action]:
        assert self.dhcp is not None
        if self.dhcp.state == "failed":
            return self._fail(now, f"DHCP: {self.dhcp.failure}")
        if self.dhcp6 is not None and self.dhcp6.state not in ("bound", "failed"):
            return []  # the phone goes on once both have an answer (or gave up)
        if self.dhcp.state == "bound" and self.dhcp.lease is not None and self.lease is None:
            self.lease = self.dhcp.lease
            self.times["bound"] = now
            if self.options.dhcp_only:
                self._finish(now)
                return []
            return [Configure(self.lease, self.dhcp6.address if self.dhcp6 is not None else None)]
        return []

    def configured(self, now: float, error: str | None = None) -> list[Action]:
        """The adapter put the leased address on the interface (or could not: ``error``)."""
        if self.done:
            return []
        if error is not None:
            return self._fail(now, f"cannot use the leased address: {error}")
        assert self.lease is not None
        if not self.options.pnp:
            return self._choose(now)
        self.stage = Stage.PNP
        self.pnp = PnpClient(self.mac, self.identity.model.id, self.version, str(self.lease.address), self.rng,
                             wait=self.options.pnp_wait)
        return [SendSip(data, dest) for data, dest in self.pnp.start(now)]

    # -- 2. PnP ---------------------------------------------------------------------------------------------------

    def on_sip(self, data: bytes, source: Address, now: float) -> list[Action]:
        if self.pnp is None:
            return []
        out: list[Action] = [SendSip(d, a) for d, a in self.pnp.receive(data, source, now)]
        if self.stage is Stage.PNP and self.pnp.state in ("done", "failed"):
            out += self._choose(now)
        return out

    def on_timer(self, now: float) -> list[Action]:
        if self.stage is Stage.DHCP and self.dhcp is not None:
            out: list[Action] = [SendDhcp(p) for p in self.dhcp.on_timer(now)]
            if self.dhcp6 is not None:
                out += [SendDhcp6(p) for p in self.dhcp6.on_timer(now)]
            return out + self._dhcp_progress(now)
        if self.stage is Stage.PNP and self.pnp is not None:
            sip: list[Action] = [SendSip(d, a) for d, a in self.pnp.on_timer(now)]
            if self.pnp.state in ("done", "failed"):
                sip += self._choose(now)
            return sip
        return []

    # -- 3. the URL, 4. the download algorithm -------------------------------------------------------------------

    def _choose(self, now: float) -> list[Action]:
        self.times["pnp_end"] = now
        pnp_url = self.pnp.url if self.pnp is not None else None
        pnp_note = (self.pnp.failure if self.pnp is not None and self.pnp.failure else
                    "" if self.pnp is not None else "PnP is off on this phone")
        self.sources = discovery.received_sources(
            pnp=pnp_url, dhcp4=self.lease.options if self.lease else None,
            dhcp6_59=self.dhcp6.bootfile_url if self.dhcp6 else None, pnp_note=pnp_note)
        if self.options.flash_url:
            self.sources.append(UrlSource("phone flash", self.options.flash_url))
        self.source = discovery.chosen(self.sources, self.options.custom_option)
        if self.source is None or not self.source.url:
            heard = "; ".join(f"{s.name}: {s.note}" for s in self.sources if s.note)
            return self._fail(now, f"no provisioning URL ({heard})")
        self.url = self.source.url
        self.times["url"] = now
        self.stage = Stage.DOWNLOAD
        phone = Phone(self.mac, self.identity.model, self.identity.firmware, self.identity.preset,
                      last_md5=self.last_md5)
        self._session = Session(phone, self.url)
        return self._request(self._session.start(), now)

    def _request(self, fetch: Any, now: float) -> list[Action]:
        if fetch is None:
            return self._provisioned(now)
        self._pending = Transfer(fetch.url, fetch.kind.value, now)
        self.transfers.append(self._pending)
        return [Get(fetch.url, fetch.kind)]

    def fetched(self, result: Result, now: float) -> list[Action]:
        """The answer to the last :class:`Get` or :class:`Put`."""
        if self._uploading is not None:
            return self._uploaded(result, now)
        if self._pending is None or self._session is None or self.done:
            return []
        transfer = self._pending
        self._pending = None
        transfer.end, transfer.status, transfer.retries = now, result.status, result.retries
        transfer.detail = result.detail
        transfer.size = len(result.data) if result.data is not None else 0
        if result.status not in results.DEFINITE:
            self.problems.append(f"{short(transfer.url)}: {result.detail or result.status}")
        return self._request(self._session.feed(result.data if result.status == results.OK else None), now)

    def _provisioned(self, now: float) -> list[Action]:
        assert self._session is not None
        self.outcome = self._session.outcome
        self.times["downloaded"] = now
        if self.outcome is not None:
            self.problems += self._model_problems(self.outcome)
        if self.outcome is not None and self.outcome.local_url and self.options.local_cfg is not None \
                and self.outcome.value(SYNC) == "1":
            self.stage = Stage.UPLOAD
            data = ("#!version:1.0.0.1\n" + self.options.local_cfg.strip() + "\n").encode()
            self._uploading = Transfer(self.outcome.local_url, "upload", now, size=len(data))
            self.transfers.append(self._uploading)
            return [Put(self.outcome.local_url, data)]
        self._finish(now)
        return []

    def _model_problems(self, outcome: Outcome) -> list[str]:
        by_url = {t.url: t for t in self.transfers}
        out: list[str] = []
        for finding in outcome.findings:
            if finding.severity != "error" or finding.code not in FAILING_FINDINGS:
                continue
            target = finding.target or finding.file
            transfer = by_url.get(target)
            if finding.code == "include-missing" and transfer is not None:
                if transfer.status not in results.DEFINITE:
                    continue  # already reported with its transport reason
                why = f" ({transfer.detail})" if transfer.detail else ""
                out.append(f"{short(target)} not found{why}")
            else:
                out.append(f"{short(finding.file)}: {finding.message}")
        if not any(d.applied for d in outcome.downloads):
            out.append(f"no boot file or CFG file found at {mask_url(outcome.server_url)}")
        return out

    def _uploaded(self, result: Result, now: float) -> list[Action]:
        assert self._uploading is not None
        upload = self._uploading
        self._uploading = None
        upload.end, upload.status, upload.retries, upload.detail = now, result.status, result.retries, result.detail
        if result.status != results.OK:
            self.problems.append(f"upload of {short(upload.url)}: {result.detail or result.status}")
        self._finish(now)
        return []

    def _finish(self, now: float) -> None:
        self.times["done"] = now
        if self.problems:
            self.failure = self.problems[0]
            self.stage = Stage.FAILED
        else:
            self.stage = Stage.PROVISIONED

    def _fail(self, now: float, reason: str) -> list[Action]:
        self.problems.append(reason)
        self._finish(now)
        return []

    # -- the record -----------------------------------------------------------------------------------------------

    def elapsed(self) -> float | None:
        if "done" not in self.times:
            return None
        return self.times["done"] - self.times["power_on"]

    def stage_times(self) -> dict[str, float]:
        """Seconds spent in each stage (only the stages the phone went through)."""
        t = self.times
        out: dict[str, float] = {}
        uploaded = any(x.kind == "upload" for x in self.transfers)
        marks = [("dhcp", "power_on", "bound", True), ("pnp", "bound", "pnp_end", self.pnp is not None),
                 ("download", "url", "downloaded", True), ("upload", "downloaded", "done", uploaded)]
        for name, start, end, went in marks:
            if went and start in t and end in t:
                out[name] = t[end] - t[start]
        return out

    def effective(self, show_secrets: bool = False) -> dict[str, str]:
        """Every parameter's final value, as ``explain`` shows it (secrets masked unless asked for)."""
        if self.outcome is None:
            return {}
        out: dict[str, str] = {}
        for key, param in self.outcome.params.items():
            if not any(a.applied for a in param.history):
                continue
            value = param.value
            out[key] = MASK if value and is_secret(key) and not show_secrets else value
        return out

    def record(self, start: float, show_secrets: bool = False) -> dict[str, Any]:
        lease = self.lease
        return {
            "mac": self.mac, "model": self.identity.model.id, "stage": self.stage.value,
            "provisioned": self.stage is Stage.PROVISIONED, "failure": self.failure or None,
            "problems": self.problems,
            "address": str(lease.address) if lease else None,
            "ipv6": str(self.dhcp6.address) if self.dhcp6 and self.dhcp6.address else None,
            "url_source": self.source.name if self.source else None,
            "url": mask_url(self.url) if self.url else None,
            "sources": [{"name": s.name, "url": mask_url(s.url) if s.url else None, "note": s.note}
                        for s in self.sources],
            "seconds": self.elapsed(),
            "stages": self.stage_times(),
            "timeline": {k: round(v - start, 6) for k, v in self.times.items()},
            "transfers": [{"url": mask_url(x.url), "kind": x.kind, "status": x.status, "bytes": x.size,
                           "retries": x.retries, "detail": x.detail, "start": round(x.start - start, 6),
                           "end": round(x.end - start, 6)} for x in self.transfers],
            "pnp": None if self.pnp is None else {"subscribes": self.pnp.subscribes, "notifies": self.pnp.notifies,
                                                  "status": self.pnp.status, "url": self.pnp.url},
            "dhcp": None if self.dhcp is None else {"sent": self.dhcp.sent,
                                                    "retransmissions": self.dhcp.retransmissions,
                                                    "init_reboot": self.dhcp.init_reboot or None},
            "dhcp6": None if self.dhcp6 is None else {"state": self.dhcp6.state, "failure": self.dhcp6.failure,
                                                      "bootfile_url": self.dhcp6.bootfile_url},
            "updated": self.outcome.updated if self.outcome else None,
            "md5": self.outcome.cfg_md5() if self.outcome else {},
            "configuration": self.effective(show_secrets),
        }
