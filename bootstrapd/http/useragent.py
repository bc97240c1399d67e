"""The phone behind an HTTP request, from its User-Agent. Pure.

Yealink phones send ``Yealink SIP-T46U 108.86.0.90 80:5e:c0:d5:7d:72``: vendor, model (``SIP-`` is not part of it),
firmware version, MAC. Only values made of the expected characters are taken; a User-Agent holding control
characters or line breaks is refused whole (it would be copied into events, the journal and logs).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

MAX_LENGTH = 512

_YEALINK = re.compile(
    r"yealink\s+(?:sip[- ])?(?P<model>[a-z0-9][a-z0-9_+\-]{0,31})"
    r"(?:\s+(?P<version>\d{1,4}(?:\.\d{1,4}){1,5}))?"
    r"(?:\s+(?P<mac>[0-9a-f]{2}(?::[0-9a-f]{2}){5}|[0-9a-f]{12}))?(?:\s|$)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class PhoneAgent:
    vendor: str
    model: str
    version: str | None
    mac: str | None  # 12 lower-case hex digits


class BadUserAgent(ValueError):
    """A User-Agent with control characters, line breaks or absurd length."""


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_text(value: str) -> str:
    if len(value) > MAX_LENGTH:
        raise BadUserAgent("User-Agent too long")
    if _CONTROL.search(value):
        raise BadUserAgent("control character or line break in User-Agent")
    return value


@functools.lru_cache(maxsize=4096)
def parse_user_agent(value: str) -> PhoneAgent | None:
    """The phone a User-Agent names, None when it names none we know; raises :class:`BadUserAgent` (not
    remembered). Remembered per string: a phone sends the same one with each of its requests."""
    check_text(value)
    match = _YEALINK.match(value.strip())
    if match is None:
        return None
    mac = match.group("mac")
    return PhoneAgent("yealink", match.group("model").upper(), match.group("version"),
                      mac.replace(":", "").lower() if mac else None)
