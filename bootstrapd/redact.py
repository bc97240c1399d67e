"""What must not leave the process in clear: parameter values that are secrets, passwords in URLs.

One place for every output that shows configuration values or URLs: ``explain``, the simulated phones' reports,
and events (a PnP URL may carry ``user:password@``, the way the guide writes credentials into a server URL).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET = re.compile(r"(password|passwd|aes_key_16|secret|token)", re.IGNORECASE)
MASK = "********"


def is_secret(key: str) -> bool:
    """Whether a parameter's value is a secret (a SIP or server password, an AES key, a token)."""
    return bool(_SECRET.search(key))


def mask_url(url: str) -> str:
    """A URL with the password of its user information replaced by :data:`MASK` (the user name stays)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{host}"))
