"""A phone's stage, folded step by step: no address -> address -> told -> boot file -> configs -> done, or stuck.

Pure: :func:`fold` takes a phone's summary and its next step (:data:`~bootstrapd.journal.steps.Step`) and updates the
summary in place; nothing here reads a clock or a database, so the same fold runs in the journal's writer, in tests
and over a stored journey.

"stuck" carries the reason: the latest failure that nothing after it made good. What makes a failure good again:
- the same file served later (a retried transfer), a later ACK (DHCPv6: REPLY with an address) after a NAK or
  after a reply that was withheld because its lease could not be committed, a later acknowledged NOTIFY;
- for a boot file that was not found, any later download (the guide: no MAC-oriented boot file -> the common boot
  file; no boot file at all -> the common CFG then the MAC CFG);
- a "NOTIFY never acknowledged" is made good by any later request for a file (the phone learned where to go).
A ``<mac>-local.cfg`` that is not found is normal on a first boot and is no failure at all.

Several appliances sharing a store each fold the steps they saw; :func:`merge` makes one phone of their summaries.

"done" means every file the phone is expected to download was served. The list comes from the provisioning model
(``expected``, see ``journal/expected.py``, once the phone's model is known); without it, the phone's own
MAC-oriented CFG (``<mac>.cfg``, the last file of the guide's download order) served counts as done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bootstrapd.journal.steps import Step, text_of

NO_ADDRESS = "no_address"
ADDRESS = "address"
TOLD = "told"
BOOT = "boot"
CONFIGS = "configs"
DONE = "done"
STUCK = "stuck"
STAGES = (NO_ADDRESS, ADDRESS, TOLD, BOOT, CONFIGS, DONE, STUCK)
LABELS = {NO_ADDRESS: "no address", ADDRESS: "address", TOLD: "told where to provision", BOOT: "boot file",
          CONFIGS: "configs", DONE: "done", STUCK: "stuck"}

FILES_KEPT = 64  # file names remembered per phone for the stage (the journey keeps every step)


@dataclass
class Phone:
    mac: str
    first_seen: float = 0.0
    last_seen: float = 0.0
    address: str | None = None
    address6: str | None = None
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    vendor_class: str | None = None
    told: bool = False
    boot: bool = False
    configs: int = 0
    served: list[str] = field(default_factory=list)  # names served, oldest first, at most FILES_KEPT
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason, for files not (yet) served
    failure: str | None = None  # a failure that is not about one file (NAK, NOTIFY, exhausted)
    failure_key: str | None = None  # the file behind ``error`` when it is about one
    error: str | None = None  # the reason the phone is stuck, if it is
    expected: list[str] | None = None  # from the provisioning model, when known
    last_step: str = ""  # the last step's line (rendered when the document is written)
    last_time: float = 0.0
    steps: int = 0
    done: bool = False  # every expected file served (kept up to date by fold)
    stage: str = NO_ADDRESS  # computed: by fold after each step, and on creation

    def __post_init__(self) -> None:
        self.stage = self.compute_stage()
        self.last: Step | None = None  # the last step folded, rendered into last_step by as_dict

    def expect(self, files: list[str]) -> None:
        """The provisioning model's download list arrived: done and the stage follow it from now on."""
        self.expected = files
        self.done = self.is_done()
        self.stage = self.compute_stage()

    def compute_stage(self) -> str:
        if self.error:
            return STUCK
        if self.done:
            return DONE
        if self.configs:
            return CONFIGS
        if self.boot:
            return BOOT
        if self.told:
            return TOLD
        if self.address or self.address6:
            return ADDRESS
        return NO_ADDRESS

    def is_done(self) -> bool:
        served = {name.replace("\\", "/").lstrip("/").lower() for name in self.served}
        if self.expected is not None:
            return bool(self.expected) and all(name.lstrip("/").lower() in served for name in self.expected)
        own = self.mac.replace(":", "") + ".cfg"
        return any(name.rsplit("/", 1)[-1] == own for name in served)

    def as_dict(self) -> dict[str, Any]:
        """The stored document: fields at their default are left out (from_dict restores them)."""
        if self.last is not None:
            self.last_step = text_of(self.last)
            self.last = None
        out: dict[str, Any] = {"mac": self.mac, "stage": self.stage, "first_seen": self.first_seen,
                               "last_seen": self.last_seen, "last_step": self.last_step,
                               "last_time": self.last_time, "steps": self.steps}
        # By hand, only what is set: dataclasses.asdict deep-copies recursively and was the writer's largest cost.
        for name in ("address", "address6", "vendor", "model", "firmware", "vendor_class", "failure",
                     "failure_key", "error"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.told:
            out["told"] = True
        if self.boot:
            out["boot"] = True
        if self.configs:
            out["configs"] = self.configs
        if self.done:
            out["done"] = True
        if self.served:
            out["served"] = list(self.served)
        if self.failed:
            out["failed"] = dict(self.failed)
        if self.expected is not None:
            out["expected"] = list(self.expected)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Phone:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        phone = cls(**known)
        phone.done = phone.is_done()
        phone.stage = phone.compute_stage()
        return phone


def _is_local_cfg(name: str, mac: str) -> bool:
    return name.rsplit("/", 1)[-1].lower() == mac.replace(":", "") + "-local.cfg"


def _recompute(phone: Phone) -> None:
    """The error in force: the general failure, else the most recent file still failed."""
    if phone.failure:
        phone.error = phone.failure
        phone.failure_key = None
    elif phone.failed:
        name, reason = next(reversed(phone.failed.items()))
        phone.error, phone.failure_key = reason, name
    else:
        phone.error = phone.failure_key = None


def _served(phone: Phone, name: str, kind: str) -> None:
    served = phone.served
    if not served or served[-1] != name:  # the same file again (a phone polling it): its place is already last
        low = name.lower()
        again = False
        for other in served:
            if other.lower() == low:
                again = True
                break
        if again:
            phone.served = served = [n for n in served if n.lower() != low]
        served.append(name)
        del served[:-FILES_KEPT]
        if not again:  # a name served before leaves the set of names served, so "done", as it was
            phone.done = phone.is_done()
    if phone.failed:
        phone.failed.pop(name, None)
        # A boot file that was not found is made good by any later download (the guide's fallbacks).
        for other in [n for n in phone.failed if n.lower().endswith(".boot") and "not found" in phone.failed[n]]:
            del phone.failed[other]
    if kind == "boot":
        phone.boot = True
    elif kind == "config":
        phone.configs += 1
        phone.boot = True  # configs imply the phone is past its boot file, whether it has one or not


def fold(phone: Phone, step: Step) -> Phone:
    """Update ``phone`` with ``step`` (in place) and return it."""
    now = step["time"]
    proto = step["proto"]
    kind = step["kind"]
    ok = step.get("ok", True)
    error = step.get("error")
    if not phone.first_seen:
        phone.first_seen = now
    if now > phone.last_seen:
        phone.last_seen = now
    phone.last = step
    phone.last_time = now
    phone.steps += 1
    if proto == "dhcp4":
        if step.get("vendor_class"):
            phone.vendor_class = step["vendor_class"]
        if kind == "ack":
            phone.address = step.get("address") or phone.address
            phone.failure = None
        elif kind == "release":
            phone.address = None
        elif not ok:
            phone.failure = error
        if step.get("told"):
            phone.told = True
            if phone.failure == "NOTIFY never acknowledged":
                phone.failure = None
    else:
        for key in ("vendor", "model", "firmware"):
            value = step.get(key)
            if value:
                setattr(phone, key, value)
        if proto == "dhcp6":
            if kind == "reply" and step.get("address6"):
                phone.address6 = step["address6"]
                if phone.failure and phone.failure.startswith(("DHCP NAK", "no address", "DHCPv6")):
                    phone.failure = None
            elif not ok:
                phone.failure = error
            if step.get("told"):
                phone.told = True
        elif proto == "pnp":
            if ok:
                phone.told = True
                if phone.failure == "NOTIFY never acknowledged":
                    phone.failure = None
            elif not phone.told:
                phone.failure = error
        elif "file" in step and not step.get("write"):
            name = str(step["file"])
            if phone.failure == "NOTIFY never acknowledged":
                phone.failure = None  # the phone asked for a file: it knows where to go
            if ok:
                _served(phone, name, str(step.get("file_kind")))
            elif not (_is_local_cfg(name, phone.mac) and step.get("outcome") == "not_found"):
                phone.failed.pop(name, None)
                phone.failed[name] = error or "failed"
                while len(phone.failed) > FILES_KEPT:
                    del phone.failed[next(iter(phone.failed))]
    _recompute(phone)
    phone.stage = phone.compute_stage()
    return phone


IDENTITY = ("address", "address6", "vendor", "model", "firmware", "vendor_class")


def merge(phones: Sequence[Phone]) -> Phone:
    """One phone as several appliances saw it, each its summary of the steps it recorded, as one summary.

    The newest known value of what the phone is (address, model, firmware …, and the download list); the progress
    any appliance saw (told, boot file, configs, files served); a file failed on one appliance and served since on
    another is made good; the failure that is not about a file (a NAK, a NOTIFY, a withheld reply) is the one of the
    appliance that saw the phone last. The last step is that appliance's too."""
    if len(phones) == 1:
        return phones[0]
    ordered = sorted(phones, key=lambda p: p.last_seen)
    newest = ordered[-1]
    out = Phone(newest.mac, first_seen=min((p.first_seen for p in ordered if p.first_seen), default=0.0),
                last_seen=newest.last_seen, last_step=newest.last_step, last_time=newest.last_time,
                steps=sum(p.steps for p in ordered), failure=newest.failure)
    for phone in ordered:  # oldest first: the newer value wins
        for name in IDENTITY:
            value = getattr(phone, name)
            if value is not None:
                setattr(out, name, value)
        if phone.expected is not None:
            out.expected = list(phone.expected)
        out.told |= phone.told
        out.boot |= phone.boot
        out.configs += phone.configs
        for name in phone.served:
            low = name.lower()
            out.served = [n for n in out.served if n.lower() != low] + [name]
            out.failed.pop(name, None)
        if phone.served:  # as in fold: a boot file not found is made good by any later download
            for other in [n for n in out.failed if n.lower().endswith(".boot") and "not found" in out.failed[n]]:
                del out.failed[other]
        for name, reason in phone.failed.items():  # the most recent failure last, as fold keeps them
            out.failed.pop(name, None)
            out.failed[name] = reason
    del out.served[:-FILES_KEPT]
    while len(out.failed) > FILES_KEPT:
        del out.failed[next(iter(out.failed))]
    _recompute(out)
    out.done = out.is_done()
    out.stage = out.compute_stage()
    return out
