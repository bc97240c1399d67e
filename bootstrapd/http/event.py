"""The one ``http.request`` event of every request, whichever path answered it (aiohttp's or the fast path)."""

from __future__ import annotations

from typing import Any

from bootstrapd.events import Events
from bootstrapd.http.files import Outcome
from bootstrapd.http.useragent import BadUserAgent, parse_user_agent

SHOWN_PATH = 256


def emit_request(events: Events, client: str, method: str, path: str, status: int, outcome: Outcome,
                 duration: float, tls: bool, agent: str | None) -> None:
    """``path`` is the raw request target (shortened past :data:`SHOWN_PATH`); ``agent`` the User-Agent, whose
    phone (vendor, model, version, MAC) joins the event when it names one."""
    fields: dict[str, Any] = {
        "client": client,
        "method": method,
        "path": path if len(path) <= SHOWN_PATH else path[:SHOWN_PATH] + "...",
        "status": status,
        "outcome": outcome.outcome,
        "bytes": outcome.bytes,
        "duration": round(duration, 6),
        "user": outcome.user,
        "tls": tls,
    }
    if outcome.file_mac:
        fields["file_mac"] = outcome.file_mac
    fields.update(outcome.extra)
    if agent:
        try:
            phone = parse_user_agent(agent)
        except BadUserAgent:
            events.count("http.bad_user_agent")
            phone = None
        if phone is not None:
            fields.update(vendor=phone.vendor, model=phone.model, version=phone.version, mac=phone.mac)
    events.publish("http.request", fields)
