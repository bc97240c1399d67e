"""Events -> journal steps: what one exchange of one phone was, in words and in a few typed fields.

Pure: no clock, no socket, no database. The journal calls :func:`phone_of` to learn which phone an event is about
(the event's own MAC, else the caller resolves :func:`address_of` through the leases) and :func:`step_of` to turn it
into a :data:`Step`. Every service's event is read here and nowhere else, so a new event kind is one function.

Everything copied from an event may come from the wire (a vendor class, a file name, a User-Agent): :func:`clean`
removes control characters and bounds the length before it is stored or printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# DHCPv4 options that tell a phone where to provision: 66 (TFTP server / URL), 43 (vendor-specific), 150 (Cisco
# TFTP), and the site-specific range 128-254 that Yealink (160, 161 …) and others use for URLs.
PROVISIONING4 = frozenset({43, 66, 150, *range(128, 255)})
# DHCPv6: 59 (boot-file URL, RFC 5970) and 17 (vendor-specific information).
PROVISIONING6 = frozenset({17, 59})

TEXT_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAC12 = re.compile(r"^[0-9a-f]{12}$")
_CANONICAL = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")

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
    if value.__class__ is str and len(value) <= limit and value.isprintable():  # type: ignore[arg-type]
        return value  # type: ignore[return-value]  # nearly always (isprintable is False for every _CONTROL)
    text = _CONTROL.sub("?", str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def normal_mac(value: object) -> str | None:
    """``00:15:65:aa:bb:cc`` from any common spelling (bytes, ``001565AABBCC``, ``00-15-65-…``), else None."""
    if value.__class__ is str and len(value) == 17 and _CANONICAL.match(value):  # type: ignore[arg-type]
        return value  # type: ignore[return-value]  # the DHCP servers' own spelling: most events
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex(":") if len(value) == 6 else None
    if not isinstance(value, str):
        return None
    known = _MACS.get(value)
    if known is not None:
        return known  # an HTTP User-Agent's MAC: every request of a phone names the same one
    digits = value
    if not _MAC12.match(digits):  # twelve lower-case digits already: an HTTP User-Agent's MAC, every request's
        digits = value.strip().lower().replace(":", "").replace("-", "").replace(".", "")
        if not _MAC12.match(digits):
            return None
    mac = bytes.fromhex(digits).hex(":")
    if len(_MACS) >= MACS_KEPT:  # spellings from the wire: bounded
        _MACS.clear()
    _MACS[value] = mac
    return mac


MACS_KEPT = 65536
_MACS: dict[str, str] = {}  # a spelling seen -> its canonical MAC


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


Step = dict[str, Any]
"""One exchange of one phone, as stored: ``time``, ``proto`` (dhcp4, dhcp6, pnp, tftp, http, https, ftp, resync),
``kind`` (offer, ack, nak, reply, subscribe, get, upload …), ``ok`` (absent when true) and ``error`` (the reason, when
not), and the facts of the exchange (address, options, file, outcome, bytes …), plain JSON values only. The line
people read is rendered from these by :func:`text_of` when shown, not on the journal's hot path."""


def _step(now: float, proto: str, kind: str, facts: dict[str, Any], error: str | None = None) -> Step:
    facts["time"], facts["proto"], facts["kind"] = now, proto, kind
    if error is not None:
        facts["ok"] = False
        facts["error"] = error
    return facts


def phone_of(kind: str, fields: dict[str, Any]) -> str | None:
    """The MAC an event names itself (DHCP, PnP, an HTTP User-Agent), normalized."""
    return normal_mac(fields.get("mac"))


def address_of(kind: str, fields: dict[str, Any]) -> str | None:
    """The client address of a file request, to be resolved to a MAC through the leases."""
    client = fields.get("client")
    return client if isinstance(client, str) else None


def _codes(value: object) -> list[int]:
    """Option codes as the server sent them (its own list: in its order, ints only)."""
    if value.__class__ is tuple:
        try:
            if value in _INT_TUPLES:  # the DHCP servers' cached tuples: a boot storm has a few
                return list(value)  # type: ignore[arg-type]
        except TypeError:  # unhashable items: not one of those
            pass
    if not isinstance(value, (list, tuple, set, frozenset)):  # a tuple of types: faster than a union in 3.11
        return []
    codes = [c for c in value if c.__class__ is int]
    if value.__class__ is tuple and len(codes) == len(value) and len(_INT_TUPLES) < 256:  # type: ignore[arg-type]
        _INT_TUPLES.add(value)  # type: ignore[arg-type]
    return codes


_INT_TUPLES: set[tuple[int, ...]] = set()  # option-code tuples seen to hold ints only (bounded)


def _dhcp4(kind: str, f: dict[str, Any], now: float) -> Step:
    # The hot path of the journal (every DORA is two of these). The type, request and address are the DHCP
    # server's own strings, cleaned all the same (cheap): what is printed never depends on a service's care.
    name = kind[6:]
    facts: dict[str, Any] = {"request": clean(f.get("request") or "?", 20)}
    address = f.get("address")
    if address:
        facts["address"] = address = clean(address, 45)
    options = _codes(f.get("options"))
    if options:
        facts["options"] = options
    vendor_class = f.get("vendor_class")
    if vendor_class:
        facts["vendor_class"] = clean(vendor_class, 100)
    if name in ("offer", "ack", "inform"):
        facts["told"] = name != "offer" and not PROVISIONING4.isdisjoint(options)
        return _step(now, "dhcp4", name, facts)
    if name == "nak":
        facts["reason"] = why = clean(f.get("reason") or "refused", 80)
        return _step(now, "dhcp4", "nak", facts, f"DHCP NAK: {why}")
    if name == "exhausted":
        return _step(now, "dhcp4", "exhausted", facts, "no address: the DHCPv4 pool is exhausted")
    if name == "reserved_in_use":
        return _step(now, "dhcp4", name, facts, f"its reserved address {address} is held by another client")
    if name == "decline":
        return _step(now, "dhcp4", "decline", facts, f"declined {address} (the address is in use on the LAN)")
    if name == "withheld":  # the reply above it never left: its lease was not committed
        facts["reply"] = reply = clean(f.get("type") or "ACK", 20)
        facts["reason"] = why = clean(f.get("reason") or "not committed", 120)
        return _step(now, "dhcp4", "withheld", facts, f"DHCP {reply} withheld: {why}")
    return _step(now, "dhcp4", clean(name, 20), facts)


def _dhcp6(kind: str, f: dict[str, Any], now: float) -> Step:
    reply = clean(f.get("type") or "reply", 20).lower()
    withheld = kind == "dhcp6.withheld"
    options = _codes(f.get("options"))
    facts: dict[str, Any] = {"request": clean(f.get("request") or "?", 30), "options": options,
                             "told": not withheld and reply != "advertise" and not PROVISIONING6.isdisjoint(options)}
    if f.get("address") is not None:
        facts["address6"] = clean(f["address"], 45)
    if withheld:  # the reply never left: its leases were not committed
        facts["reply"] = reply.upper()
        facts["reason"] = why = clean(f.get("reason") or "not committed", 120)
        return _step(now, "dhcp6", "withheld", facts, f"DHCPv6 {reply.upper()} withheld: {why}")
    return _step(now, "dhcp6", reply, facts)


def _pnp(kind: str, f: dict[str, Any], now: float) -> Step:
    acknowledged = bool(f.get("acknowledged"))
    facts: dict[str, Any] = {k: clean(f[k], 60) for k in ("vendor", "model") if f.get(k)}
    if f.get("version"):
        facts["firmware"] = clean(f["version"], 60)
    facts.update(url=clean(f.get("url") or "", 200), acknowledged=acknowledged, told=acknowledged)
    return _step(now, "pnp", "subscribe", facts, None if acknowledged else "NOTIFY never acknowledged")


def _directory(path: str) -> str:
    head = path.rsplit("/", 1)[0] if "/" in path.strip("/") else ""
    return "/" + head.strip("/") + "/" if head.strip("/") else "/"


# Outcomes of a request that served (or stored) the file: TFTP says "ok", HTTP and FTP "served", "stored",
# "not_modified" (the phone's copy is current) or "partial" (a range).
SERVED = frozenset({"ok", "served", "stored", "not_modified", "partial"})


def _name_of(file: object, path: object) -> tuple[str, str]:
    """The file a transfer event names (its ``file``, else its request ``path`` without the query), cleaned, and
    its :func:`file_kind`; remembered per name: a boot storm asks for a few names thousands of times."""
    source, is_path = (file, False) if file else (path or "", True)
    memo = _PATHS if is_path else _FILES
    known = memo.get(source) if source.__class__ is str else None
    if known is None:
        name = clean(str(source).split("?", 1)[0].lstrip("/") if is_path else source, 200)
        known = (name, file_kind(name))
        if source.__class__ is str:
            if len(memo) >= NAMES_KEPT:  # names from the wire: bounded (a scan of random names clears it)
                memo.clear()
            memo[source] = known  # type: ignore[index]
    return known


NAMES_KEPT = 4096
_FILES: dict[str, tuple[str, str]] = {}
_PATHS: dict[str, tuple[str, str]] = {}


_READS = ("GET", "HEAD", "RETR", "")  # the methods of nearly every request, which are no upload (compared, not hashed)
_IDENTITY = (("vendor", "vendor"), ("model", "model"), ("firmware", "firmware"), ("version", "firmware"),
             ("user", "user"))  # event field -> step fact, in this order (a later one wins)


def _transfer(proto: str, f: dict[str, Any], now: float) -> Step:
    name, kind = _name_of(f.get("file"), f.get("path"))
    outcome = clean(f.get("outcome") or "ok", 40)
    status = f.get("status")
    method = f.get("method") or f.get("command") or ""
    write = bool(f.get("write")) or (method not in _READS and str(method).upper() in ("PUT", "STOR"))
    if status == 401:
        outcome = "unauthorized"  # whatever the service called it (auth_required, bad credentials …)
    elif isinstance(status, int) and status >= 400 and outcome in SERVED:
        outcome = {403: "forbidden", 404: "not_found"}.get(status, f"http_{status}")
    if outcome in SERVED:
        outcome = "ok"
    facts: dict[str, Any] = {"file": name, "file_kind": kind, "outcome": outcome,
                             "bytes": int(f.get("bytes") or 0), "duration": float(f.get("duration") or 0.0)}
    if isinstance(status, int):
        facts["status"] = status
    if write:
        facts["write"] = True
    if f.get("retransmits"):
        facts["retransmits"] = int(f["retransmits"])
    for key, fact in _IDENTITY:
        value = f.get(key)
        if value:
            facts[fact] = clean(value, 60)
    verb = "upload" if write else "get"
    if outcome == "ok":
        return _step(now, proto, verb, facts)
    if outcome == "unauthorized":
        error = f"401 on {_directory(name)}"
    elif outcome == "timeout":
        side = "the phone stopped sending" if write else "the phone stopped acknowledging"
        error = f"asked for {name}: timed out ({side})"
    else:
        error = f"{'uploading' if write else 'asked for'} {name}: {outcome_text(outcome)}"
    return _step(now, proto, verb, facts, error)


def _tftp(kind: str, f: dict[str, Any], now: float) -> Step:
    return _transfer("tftp", f, now)


def _http(kind: str, f: dict[str, Any], now: float) -> Step:
    scheme = str(f.get("scheme") or ("https" if f.get("tls") else "http"))
    return _transfer("https" if scheme == "https" else "http", f, now)


def _ftp(kind: str, f: dict[str, Any], now: float) -> Step:
    if kind == "ftp.login":
        user = clean(f.get("user") or "anonymous", 60)
        refused = f.get("outcome", "ok") != "ok"
        return _step(now, "ftp", "login", {"user": user}, f"FTP login refused for {user}" if refused else None)
    return _transfer("ftp", f, now)


def _resync(kind: str, f: dict[str, Any], now: float) -> Step:
    status = f.get("status")
    acknowledged = bool(f.get("acknowledged"))
    return _step(now, "resync", "check-sync", {"status": status if isinstance(status, int) else None,
                                                "acknowledged": acknowledged},
                 None if acknowledged else f"check-sync NOTIFY not acknowledged ({status or 'no answer'})")


def text_of(step: Step) -> str:
    """The line people read for a stored step."""
    proto, kind = step.get("proto", "?"), step.get("kind", "?")
    if proto == "dhcp4":
        address = step.get("address") or ""
        if kind in ("offer", "ack", "inform"):
            text = "INFORM → ACK" if kind == "inform" else f"{step.get('request', '?')} → {kind.upper()}"
            text = f"{text} {address}".rstrip()
            if step.get("options"):
                text += f" (options {' '.join(map(str, step['options']))})"
            if step.get("vendor_class"):
                text += f" vendor class {step['vendor_class']!r}"
            return text
        if kind == "nak":
            return f"{step.get('request', 'REQUEST')} → NAK ({step.get('reason', 'refused')})"
        if kind == "exhausted":
            return "DISCOVER: no address left to offer"
        if kind == "reserved_in_use":
            return f"DISCOVER: the reserved address {address} is held by another client"
        if kind == "withheld":
            return (f"{step.get('request', '?')} → {step.get('reply', 'ACK')} {address} not sent "
                    f"({step.get('reason', 'not committed')})").replace("  ", " ")
        return f"{kind.upper()} {address}".rstrip()
    if proto == "dhcp6":
        if kind == "withheld":
            return (f"{step.get('request', '?')} → {step.get('reply', 'REPLY')} {step.get('address6') or ''} not "
                    f"sent ({step.get('reason', 'not committed')})").replace("  ", " ")
        text = f"{step.get('request', '?')} → {kind.upper()} {step.get('address6') or ''}".rstrip()
        if step.get("options"):
            text += f" (options {' '.join(map(str, step['options']))})"
        return text
    if proto == "pnp":
        who = " ".join(str(step[k]) for k in ("vendor", "model", "firmware") if step.get(k)) or "unknown phone"
        ack = "acknowledged" if step.get("acknowledged") else "never acknowledged"
        return f"SUBSCRIBE from {who} → NOTIFY {step.get('url', '')} {ack}"
    if proto == "resync":
        ack = "acknowledged" if step.get("acknowledged") else "not acknowledged"
        return f"check-sync NOTIFY {ack} ({step.get('status') or 'no answer'})"
    if proto == "ftp" and kind == "login":
        return f"FTP login {step.get('user', '?')}" + ("" if step.get("ok", True) else " refused")
    if "file" in step:
        name = step["file"]
        if step.get("outcome") == "ok":
            return f"{proto.upper()} {kind} {name}: {step.get('bytes', 0)} bytes in {step.get('duration', 0.0):.2f}s"
        status = f" ({step['status']})" if isinstance(step.get("status"), int) else ""
        return f"{proto.upper()} {kind} {name}: {outcome_text(str(step.get('outcome')))}{status}"
    return f"{proto} {kind}"


_Builder = Callable[[str, dict[str, Any], float], Step]
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
                      "dhcp4.exhausted", "dhcp4.reserved_in_use", "dhcp4.withheld", "dhcp6.reply", "dhcp6.withheld",
                      "pnp.answer", "tftp.transfer", "http.request", "ftp.transfer", "ftp.login", "resync.sent"})
_BUILDER_OF = {kind: _BUILDERS[kind.split(".", 1)[0]] for kind in RECORDED}  # every recorded kind has one


def step_of(kind: str, fields: dict[str, Any], now: float) -> Step | None:
    """The step an event is, or None for events that are not about a phone's provisioning."""
    builder = _BUILDER_OF.get(kind)
    if builder is None or (kind == "http.request" and fields.get("outcome") == "route"):
        return None  # a route is the status page or the API, not a phone's file
    return builder(kind, fields, now)
