"""What went wrong, from a phone's decoded timeline: the rules of ``bootstrapd trace``.

Pure: the input is a list of :class:`Ev` (decoded packets, see ``tracing.py``), the output a list of
:class:`Diagnosis`. No scapy, no file, no clock: every rule is unit-tested on hand-written timelines.

Rules (``kind``):
- ``no_offer``: the phone sent DISCOVERs and no server offered it anything.
- ``offer_missing_option``: an OFFER/ACK lacks option 66, or an option 128-254 / 43 / 150 the phone asked for in
  its parameter request list (option 55).
- ``rogue_dhcp``: more than one DHCP server answered on the LAN (with ``ours``: any server other than ours).
- ``idle_after_lease``: the phone got its ACK and never asked for anything after it (no SIP, TFTP, HTTP, FTP).
- ``notify_unacknowledged``: a PnP NOTIFY the phone never confirmed with a 2xx.
- ``mac_boot_then_common``: the MAC-oriented boot file was not found, then the common one was asked for (normal;
  said so that nobody chases it).
- ``include_missing``: a configuration file (``.cfg``) that was asked for was not found.
- ``file_missing``: another file (firmware, resource) that was not found.
- ``blksize_refused``: a TFTP blksize option was not granted (the server ignored it, or the phone refused the OACK).
- ``transfer_timeout``: a TFTP transfer ended with its last block never confirmed, and which side went quiet.
- ``auth_401``: HTTP 401 on a directory (with or without credentials sent).
- ``login_refused``: FTP 530.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PROVISIONING_OPTIONS = frozenset({43, 66, 150, *range(128, 255)})
_BOOT_MAC = re.compile(r"(^|/)[0-9a-f]{12}\.boot$", re.IGNORECASE)
_BOOT_COMMON = re.compile(r"(^|/)y0{12}\.boot$", re.IGNORECASE)


@dataclass(frozen=True)
class Ev:
    """One decoded packet of one phone's conversation."""

    time: float
    mac: str | None
    proto: str  # DHCP, DHCPv6, SIP, TFTP, HTTP, FTP
    src: str
    dst: str
    info: str  # the Wireshark-like info column
    facts: dict[str, Any] = field(default_factory=dict)
    number: int = 0  # frame number in the capture (1-based)


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    text: str
    time: float | None = None
    severity: str = "error"  # error, warning, info

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "time": self.time, "severity": self.severity}


def _dhcp(events: list[Ev], ours: str | None) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    discovers = [e for e in events if e.proto == "DHCP" and e.facts.get("type") == "DISCOVER"]
    offers = [e for e in events if e.proto == "DHCP" and e.facts.get("type") == "OFFER"]
    acks = [e for e in events if e.proto == "DHCP" and e.facts.get("type") == "ACK"]
    if discovers and not offers:
        out.append(Diagnosis("no_offer", f"{len(discovers)} DISCOVER(s) and no OFFER: no DHCP server answered "
                                          "(is the server on this VLAN, is the pool exhausted, is a relay missing?)",
                             discovers[0].time))
    requested: set[int] = set()
    for e in events:
        if e.proto == "DHCP" and e.facts.get("type") in ("DISCOVER", "REQUEST"):
            requested.update(e.facts.get("prl") or [])
    for reply in offers + acks:
        if ours is not None and reply.facts.get("server") not in (ours, None):
            continue
        given = set(reply.facts.get("options") or [])
        missing = sorted(c for c in (requested & PROVISIONING_OPTIONS) - given)
        if 66 not in given and 66 not in missing:
            missing = [66, *missing]
        if missing:
            names = ", ".join(str(c) for c in missing)
            out.append(Diagnosis("offer_missing_option",
                                 f"the {reply.facts.get('type')} from {reply.facts.get('server') or reply.src} has no "
                                 f"option {names}" + (" (asked for in option 55)" if requested & set(missing) else ""),
                                 reply.time, "error" if reply.facts.get("type") == "ACK" else "warning"))
            break
    servers = sorted({str(e.facts["server"]) for e in offers + acks if e.facts.get("server")})
    others = [s for s in servers if s != ours] if ours else servers[1:] if len(servers) > 1 else []
    if others:
        shown = ", ".join(servers)
        why = f"not ours ({ours})" if ours else "a second server or a rogue"
        out.append(Diagnosis("rogue_dhcp", f"DHCP answers from {len(servers)} servers: {shown}; "
                                           f"{', '.join(others)}: {why}", None))
    if acks:
        last_ack = acks[-1].time
        later = [e for e in events if e.time > last_ack and e.proto in ("SIP", "TFTP", "HTTP", "FTP")
                 and e.facts.get("from_phone")]
        if not later:
            out.append(Diagnosis("idle_after_lease",
                                 f"the phone got its lease ({acks[-1].facts.get('address')}) and never asked for "
                                 "anything after it: no PnP SUBSCRIBE, no TFTP/HTTP/FTP request (check option 66 "
                                 "and the phone's auto-provisioning settings)", last_ack, "warning"))
    return out


def _sip(events: list[Ev]) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    notifies = [e for e in events if e.proto == "SIP" and e.facts.get("method") == "NOTIFY"]
    confirmed = {(e.facts.get("call_id"), e.facts.get("cseq")) for e in events
                 if e.proto == "SIP" and e.facts.get("status") and 200 <= int(e.facts["status"]) < 300
                 and e.facts.get("cseq_method") == "NOTIFY"}
    seen: set[tuple[Any, Any]] = set()
    for n in notifies:
        key = (n.facts.get("call_id"), n.facts.get("cseq"))
        if key in seen or key in confirmed:
            continue
        seen.add(key)
        sent = sum(1 for e in notifies if (e.facts.get("call_id"), e.facts.get("cseq")) == key)
        out.append(Diagnosis("notify_unacknowledged",
                             f"NOTIFY never acknowledged: sent {sent} time(s) to {n.dst}, no 2xx came back (the "
                             "phone did not take the provisioning URL; is its SIP port reachable?)", n.time))
    return out


def _not_found(e: Ev) -> bool:
    return bool(e.facts.get("not_found"))


def _files(events: list[Ev]) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    results = [e for e in events if e.facts.get("result_for")]
    asked = [e for e in events if e.facts.get("request_file") and e.facts.get("from_phone")]
    for e in results:
        name = str(e.facts["result_for"])
        if _not_found(e) and _BOOT_MAC.search(name):
            later = [a for a in asked if a.time >= e.time and _BOOT_COMMON.search(str(a.facts["request_file"]))]
            if later:
                out.append(Diagnosis("mac_boot_then_common",
                                     f"MAC boot file {name} not found, then the common boot file "
                                     f"{later[0].facts['request_file']} was asked for (normal without a per-phone "
                                     "boot file)", e.time, "info"))
            continue
        if _not_found(e):
            base = name.rsplit("/", 1)[-1].lower()
            if base.endswith("-local.cfg"):
                continue  # normal on a first boot
            kind = "include_missing" if base.endswith(".cfg") else "file_missing"
            what = "an include missing" if kind == "include_missing" else "a file missing"
            out.append(Diagnosis(kind, f"{what}: {name} was asked for and not found ({e.info})", e.time))
        elif e.facts.get("status") == 401:
            path = name if name.endswith("/") else name.rsplit("/", 1)[0] + "/"
            path = path if path.startswith("/") else "/" + path
            sent = "with credentials that were refused" if e.facts.get("authorization") else "without credentials"
            out.append(Diagnosis("auth_401", f"401 on {path}: asked for {name} {sent}", e.time))
    for e in events:
        if e.facts.get("ftp_code") == 530:
            out.append(Diagnosis("login_refused", f"FTP login refused: {e.info}", e.time))
    return out


def _tftp(events: list[Ev]) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    convs: dict[str, list[Ev]] = {}
    for e in events:
        if e.proto == "TFTP" and e.facts.get("conv"):
            convs.setdefault(str(e.facts["conv"]), []).append(e)
    for conv in convs.values():
        requests = [e for e in conv if e.facts.get("op") in ("RRQ", "WRQ")]
        if not requests:
            continue
        request = requests[0]
        name = request.facts.get("file")
        options = request.facts.get("options") or {}
        oack = next((e for e in conv if e.facts.get("op") == "OACK"), None)
        datas = [e for e in conv if e.facts.get("op") == "DATA"]
        acks = [e for e in conv if e.facts.get("op") == "ACK"]
        errors = [e for e in conv if e.facts.get("op") == "ERROR"]
        if "blksize" in options:
            if oack is None and datas and not errors:
                out.append(Diagnosis("blksize_refused", f"{name}: blksize {options['blksize']} asked for, the server "
                                                        "ignored it (DATA of 512 bytes without OACK)",
                                     datas[0].time, "warning"))
            elif oack is not None and "blksize" not in (oack.facts.get("options") or {}):
                out.append(Diagnosis("blksize_refused", f"{name}: blksize {options['blksize']} asked for, the OACK "
                                                        "left it out", oack.time, "warning"))
            option_errors = [e for e in errors if e.facts.get("code") == 8]
            if option_errors:
                out.append(Diagnosis("blksize_refused", f"{name}: the option negotiation was refused "
                                                        f"({option_errors[0].info})", option_errors[0].time))
        if errors or request.facts.get("op") != "RRQ" or not datas:
            continue
        blksize = int((oack.facts.get("options") or {}).get("blksize", 512)) if oack else 512
        last = max(datas, key=lambda e: int(e.facts.get("block", 0)))
        complete = int(last.facts.get("size", blksize)) < blksize
        acked = {int(e.facts.get("block", -1)) for e in acks}
        final = int(last.facts.get("block", 0))
        if complete and final in acked:
            continue
        if complete:
            sends = sum(1 for e in datas if e.facts.get("block") == final)
            out.append(Diagnosis("transfer_timeout",
                                 f"{name}: timed out, the phone stopped acknowledging: the last block {final} was "
                                 f"sent {sends} time(s) and never acknowledged", last.time))
            continue
        top_ack = max(acked) if acked else None
        if top_ack is not None and top_ack >= final:
            out.append(Diagnosis("transfer_timeout",
                                 f"{name}: timed out, the server stopped sending after block {top_ack} (acknowledged "
                                 "by the phone)", max(e.time for e in acks)))
        else:
            sends = sum(1 for e in datas if e.facts.get("block") == final)
            out.append(Diagnosis("transfer_timeout",
                                 f"{name}: timed out, the phone stopped acknowledging at block {final} (sent {sends} "
                                 "time(s))", last.time))
    return out


def diagnose(events: Iterable[Ev], ours: str | None = None) -> list[Diagnosis]:
    """Every diagnosis for one phone's events (in capture order); ``ours``: our DHCP server's address, if known."""
    timeline = sorted(events, key=lambda e: (e.time, e.number))
    found = _dhcp(timeline, ours) + _sip(timeline) + _files(timeline) + _tftp(timeline)
    return sorted(found, key=lambda d: (d.time is None, d.time or 0.0))


def stopped_at(events: Iterable[Ev]) -> str:
    """Where the phone got to, in the journal's words."""
    stage = "no address"
    for e in sorted(events, key=lambda e: (e.time, e.number)):
        if e.proto in ("DHCP", "DHCPv6") and e.facts.get("type") in ("ACK", "REPLY"):
            stage = "address"
        elif e.proto == "SIP" and e.facts.get("method") == "NOTIFY" and stage in ("no address", "address"):
            stage = "told where to provision (PnP)"
        elif e.facts.get("result_for") and e.facts.get("ok"):
            name = str(e.facts["result_for"]).lower()
            stage = "boot file" if name.endswith(".boot") and stage != "configs" else "configs"
    return stage
