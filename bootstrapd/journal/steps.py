"""Events -> journal steps: what one exchange of one phone was, in words and in a few typed fields.

Pure: no clock, no socket, no database. The journal calls :func:`phone_of` to learn which phone an event is about
(the event's own MAC, else the caller resolves :func:`address_of` through the leases) and :func:`step_of` to turn it
into a :class:`Step`. Every service's event is read here and nowhere else, so a new event kind is one function.

Everything copied from an event may come from the wire (a vendor class, a file name, a User-Agent): :func:`clean`
removes control characters and bounds the length before it is stored or printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# DHCPv4 options that tell a phone where to provision: 66 (TFTP server / URL), 43 (vendor-specific), 150 (Cisco
# TFTP), and the site-specific range 128-254 that Yealink (160, 161 …) and others use for URLs.
PROVISIONING4 = frozenset({43, 66, 150, *range(128, 255)})
# DHCPv6: 59 (boot-file URL, RFC 5970) and 17 (vendor-specific information).
PROVISIONING6 = frozenset({17, 59})

TEXT_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAC12 = re.compile(r"^[0-9a-f]{12}$")

OUTCOME_TEXT = {
    "ok": "ok",
    "not_found": "not found",
    "denied": "permission denied",
    "escape": "refused (outside the tree)",
    "absolute": "refused (absolute path)",
    "empty": "refused (empty name)",
    "bad_name": "refused (bad name)",
    "not_regular": "not a regular file",
    "timeout": "timed out",
    "client_error": "aborted by the phone",
    "lifetime": "took longer than the session lifetime",
    "option_refused": "options refused (blksize)",
    "busy": "server busy",
    "busy_large": "server busy with large files",
    "busy_uploads": "server busy with uploads",
    "rate_limited": "rate limited",
    "bad_mode": "transfer mode not supported",
    "upload_disabled": "uploads are disabled",
    "refused_upload": "upload refused",
    "too_large": "too large",
    "exists": "exists",
    "disk_full": "disk full",
    "unauthorized": "401 unauthorized",
    "forbidden": "403 forbidden",
    "no_socket": "no socket for the transfer",
    "stopped": "stopped with the server",
}


def clean(value: object, limit: int = TEXT_MAX) -> str:
    """Text safe to store and print: control characters replaced, at most ``limit`` characters."""
    text = _CONTROL.sub("?", str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def normal_mac(value: object) -> str | None:
    """``00:15:65:aa:bb:cc`` from any common spelling (bytes, ``001565AABBCC``, ``00-15-65-…``), else None."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex(":") if len(value) == 6 else None
    if not isinstance(value, str):
        return None
    digits = value.strip().lower().replace(":", "").replace("-", "").replace(".", "")
    if not _MAC12.match(digits):
        return None
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def file_kind(name: str) -> str:
    """What a requested file is to a phone: ``boot``, ``config``, ``firmware`` or ``resource``."""
    base = name.rsplit("/", 1)[-1].lower()
    if base.endswith(".boot"):
        return "boot"
    if base.endswith((".cfg", ".xml", ".cfg.enc")):
        return "config"
    if base.endswith((".rom", ".bin", ".img", ".zip", ".fw", ".ld")):
        return "firmware"
    return "resource"


def outcome_text(outcome: str) -> str:
    return OUTCOME_TEXT.get(outcome, clean(outcome, 60).replace("_", " "))


@dataclass(slots=True)
class Step:
    """One exchange of one phone. ``fields`` holds only plain JSON values (strings, numbers, lists, booleans)."""

    mac: str
    time: float
    proto: str  # dhcp4, dhcp6, pnp, tftp, http, https, ftp, resync
    kind: str  # offer, ack, nak, reply, subscribe, get, put, …
    text: str  # one line for people
    ok: bool = True
    error: str | None = None  # the reason, for a step that failed
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": self.time, "proto": self.proto, "kind": self.kind, "text": self.text}
        if not self.ok:
            out["ok"] = False
            out["error"] = self.error
        out.update(self.fields)
        return out


def phone_of(kind: str, fields: dict[str, Any]) -> str | None:
    """The MAC an event names itself (DHCP, PnP, an HTTP User-Agent), normalized."""
    return normal_mac(fields.get("mac"))


def address_of(kind: str, fields: dict[str, Any]) -> str | None:
    """The client address of a file request, to be resolved to a MAC through the leases."""
    client = fields.get("client")
    return client if isinstance(client, str) else None


def _codes(value: object) -> list[int]:
    if not isinstance(value, list | tuple | set | frozenset):
        return []
    return sorted({c for c in value if isinstance(c, int)})


def _dhcp4(kind: str, f: dict[str, Any], mac: str, now: float) -> Step:
    # The hot path of the journal (every DORA is two of these): the type, request and address are the DHCP
    # server's own strings; only the vendor class comes from the wire and is cleaned.
    name = kind[6:]
    request = f.get("request") or "?"
    address = f.get("address")
    options = _codes(f.get("options"))
    extra: dict[str, Any] = {}
    if address:
        extra["address"] = address
    if options:
        extra["options"] = options
    vendor_class = f.get("vendor_class")
    if vendor_class:
        extra["vendor_class"] = vendor_class = clean(vendor_class, 100)
    if name in ("offer", "ack", "inform"):
        text = "INFORM → ACK" if name == "inform" else f"{request} → {name.upper()}"
        if address:
            text += " " + address
        if options:
            text += f" (options {' '.join(map(str, options))})"
        if vendor_class:
            text += f" vendor class {vendor_class!r}"
        extra["told"] = name != "offer" and not PROVISIONING4.isdisjoint(options)
        return Step(mac, now, "dhcp4", name, text, fields=extra)
    if name == "nak":
        why = clean(f.get("reason") or "refused", 80)
        return Step(mac, now, "dhcp4", "nak", f"{request} → NAK ({why})", False, f"DHCP NAK: {why}", extra)
    if name == "exhausted":
        return Step(mac, now, "dhcp4", "exhausted", "DISCOVER: no address left to offer", False,
                    "no address: the DHCPv4 pool is exhausted", extra)
    if name == "decline":
        return Step(mac, now, "dhcp4", "decline", f"DECLINE {address}", False,
                    f"declined {address} (the address is in use on the LAN)", extra)
    if name == "release":
        return Step(mac, now, "dhcp4", "release", f"RELEASE {address}", fields=extra)
    return Step(mac, now, "dhcp4", clean(name, 20), clean(name.upper(), 20), fields=extra)


def _dhcp6(kind: str, f: dict[str, Any], mac: str, now: float) -> Step:
    reply = clean(f.get("type") or "reply", 20)
    request = clean(f.get("request") or "?", 30)
    options = _codes(f.get("options"))
    address = f.get("address")
    extra: dict[str, Any] = {"options": options}
    if address is not None:
        extra["address6"] = clean(address, 45)
    told = bool(PROVISIONING6.intersection(options))
    text = f"{request} → {reply.upper()} {address or ''}".rstrip()
    if options:
        text += f" (options {' '.join(map(str, options))})"
    return Step(mac, now, "dhcp6", reply.lower(), text, fields={**extra, "told": told and reply != "advertise"})


def _pnp(kind: str, f: dict[str, Any], mac: str, now: float) -> Step:
    vendor, model, version = (clean(f[k], 60) if f.get(k) else None for k in ("vendor", "model", "version"))
    acknowledged = bool(f.get("acknowledged"))
    url = clean(f.get("url") or "", 200)
    who = " ".join(x for x in (vendor, model, version) if x) or "unknown phone"
    extra: dict[str, Any] = {"vendor": vendor, "model": model, "firmware": version, "url": url,
                             "acknowledged": acknowledged, "told": acknowledged}
    if acknowledged:
        return Step(mac, now, "pnp", "subscribe", f"SUBSCRIBE from {who} → NOTIFY {url} acknowledged", fields=extra)
    return Step(mac, now, "pnp", "subscribe", f"SUBSCRIBE from {who} → NOTIFY {url} never acknowledged", False,
                "NOTIFY never acknowledged", extra)


def _directory(path: str) -> str:
    head = path.rsplit("/", 1)[0] if "/" in path.strip("/") else ""
    return "/" + head.strip("/") + "/" if head.strip("/") else "/"


def _transfer(proto: str, f: dict[str, Any], mac: str, now: float) -> Step:
    name = clean(f.get("file") or f.get("path") or "", 200)
    outcome = clean(f.get("outcome") or "ok", 40)
    status = f.get("status")
    write = bool(f.get("write")) or str(f.get("method", "")).upper() in ("PUT", "POST", "STOR")
    if isinstance(status, int) and outcome == "ok" and status >= 400:
        outcome = {401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(status, f"http_{status}")
    extra: dict[str, Any] = {"file": name, "file_kind": file_kind(name), "outcome": outcome,
                             "bytes": int(f.get("bytes") or 0), "duration": float(f.get("duration") or 0.0)}
    if isinstance(status, int):
        extra["status"] = status
    if write:
        extra["write"] = True
    for key in ("model", "firmware", "version", "user"):
        if f.get(key):
            extra["firmware" if key == "version" else key] = clean(f[key], 60)
    verb = "upload" if write else "get"
    if outcome == "ok":
        size = extra["bytes"]
        return Step(mac, now, proto, verb, f"{proto.upper()} {verb} {name}: {size} bytes in {extra['duration']:.2f}s",
                    fields=extra)
    if outcome == "unauthorized":
        error = f"401 on {_directory(name)}"
    elif outcome == "timeout":
        side = "the phone stopped sending" if write else "the phone stopped acknowledging"
        error = f"asked for {name}: timed out ({side})"
    else:
        error = f"{'uploading' if write else 'asked for'} {name}: {outcome_text(outcome)}"
    shown = f" ({status})" if isinstance(status, int) else ""
    return Step(mac, now, proto, verb, f"{proto.upper()} {verb} {name}: {outcome_text(outcome)}{shown}", False,
                error, extra)


def _tftp(kind: str, f: dict[str, Any], mac: str, now: float) -> Step:
    step = _transfer("tftp", f, mac, now)
    if f.get("retransmits"):
        step.fields["retransmits"] = int(f["retransmits"])
    return step


def _http(kind: str, f: dict[str, Any], mac: str, now: float) -> Step:
    scheme = str(f.get("scheme") or ("https" if f.get("tls") else "http"))
    return _transfer("https" if scheme == "https" else "http", f, mac, now)


def _ftp(kind: str, f: dict[str, Any], mac: str, now: float) -> Step | None:
    if kind == "ftp.login":
        if f.get("outcome", "ok") == "ok":
            return Step(mac, now, "ftp", "login", f"FTP login {clean(f.get('user') or 'anonymous', 60)}")
        return Step(mac, now, "ftp", "login", f"FTP login {clean(f.get('user') or '?', 60)} refused", False,
                    f"FTP login refused for {clean(f.get('user') or '?', 60)}")
    return _transfer("ftp", f, mac, now)


def _resync(kind: str, f: dict[str, Any], mac: str, now: float) -> Step:
    status = f.get("status")
    if f.get("acknowledged"):
        return Step(mac, now, "resync", "check-sync", f"check-sync NOTIFY acknowledged ({status})",
                    fields={"status": status})
    return Step(mac, now, "resync", "check-sync", f"check-sync NOTIFY not acknowledged ({status or 'no answer'})",
                False, None, {"status": status})


_Builder = Callable[[str, dict[str, Any], str, float], "Step | None"]
_BUILDERS: dict[str, _Builder] = {
    "dhcp4": _dhcp4,
    "dhcp6": _dhcp6,
    "pnp": _pnp,
    "tftp": _tftp,
    "http": _http,
    "ftp": _ftp,
    "resync": _resync,
}
# Event kinds the journal records; everything else (counters, socket errors) is not a step of a phone.
RECORDED = frozenset({"dhcp4.offer", "dhcp4.ack", "dhcp4.nak", "dhcp4.inform", "dhcp4.decline", "dhcp4.release",
                      "dhcp4.exhausted", "dhcp6.reply", "pnp.answer", "tftp.transfer", "http.request",
                      "ftp.transfer", "ftp.login", "resync.sent"})


def step_of(kind: str, fields: dict[str, Any], mac: str, now: float) -> Step | None:
    """The step an event is, or None for events that are not about a phone's provisioning."""
    if kind not in RECORDED:
        return None
    builder = _BUILDERS.get(kind.split(".", 1)[0])
    return builder(kind, fields, mac, now) if builder else None
