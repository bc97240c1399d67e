"""Activation-code directories: ``[[auth]]`` entries give a path prefix a user name and a password.

Passwords are stored as ``scrypt:N:r:p:<salt>:<key>`` (base64, from ``bootstrapd hash-password``) or, with a
warning from ``check-config``, as plain text. Verifying a scrypt hash costs tens of milliseconds and 16 MiB on
purpose; a phone sends the same credentials with every request, so verified pairs are remembered (keyed by an HMAC
of the password under a per-process key: the password itself is never kept), and wrong ones too, so a flood of the
same wrong password costs one verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

SCHEME = "scrypt"
N, R, P = 1 << 14, 8, 1
KEY_LEN = 32
MAXMEM = 64 << 20


def hash_password(password: str, *, n: int = N, r: int = R, p: int = P, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_LEN, maxmem=MAXMEM)
    b64 = base64.b64encode
    return f"{SCHEME}:{n}:{r}:{p}:{b64(salt).decode()}:{b64(key).decode()}"


def parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key) of a stored hash; raises ValueError naming what is wrong."""
    fields = text.split(":")
    if len(fields) != 6 or fields[0] != SCHEME:
        raise ValueError("expected scrypt:N:r:p:salt:key (from `bootstrapd hash-password`)")
    try:
        n, r, p = int(fields[1]), int(fields[2]), int(fields[3])
        salt, key = base64.b64decode(fields[4], validate=True), base64.b64decode(fields[5], validate=True)
    except ValueError:
        raise ValueError("scrypt hash with a malformed number or base64 field") from None
    if n < 2 or n & (n - 1) or n > 1 << 20 or not 1 <= r <= 64 or not 1 <= p <= 16 or not salt or len(key) < 16:
        raise ValueError("scrypt parameters out of range (N a power of two up to 2^20, r 1-64, p 1-16)")
    if 128 * r * n * p > MAXMEM:
        raise ValueError("scrypt parameters need more than 64 MiB")
    return n, r, p, salt, key


def is_hashed(text: str) -> bool:
    return text.startswith(SCHEME + ":")


def check_password(stored: str, password: str) -> bool:
    if not is_hashed(stored):
        return hmac.compare_digest(stored.encode(), password.encode())
    n, r, p, salt, key = parse_hash(stored)
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(key), maxmem=MAXMEM)
    return hmac.compare_digest(got, key)


@dataclass(frozen=True)
class AuthEntry:
    prefix: tuple[str, ...]  # normalized path components of the directory
    user: str
    password: str = field(repr=False)  # a scrypt hash or plain text; never logged

    @property
    def path(self) -> str:
        return "/" + "/".join(self.prefix) + "/"


class AuthTable:
    """The ``[[auth]]`` entries: which one covers a path, and whether a user's password is right."""

    CACHE = 1024

    def __init__(self, entries: tuple[AuthEntry, ...] = ()) -> None:
        # Longest prefix first: a directory inside another's is governed by its own entry.
        self.entries = tuple(sorted(entries, key=lambda e: -len(e.prefix)))
        self.by_user = {e.user: e for e in entries}
        self._key = os.urandom(32)
        self._verified: OrderedDict[tuple[str, bytes], bool] = OrderedDict()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def entry_for(self, parts: tuple[str, ...]) -> AuthEntry | None:
        for entry in self.entries:
            if parts[:len(entry.prefix)] == entry.prefix and len(parts) >= len(entry.prefix):
                return entry
        return None

    def protects(self, parts: tuple[str, ...]) -> bool:
        """``parts`` is an [[auth]] directory or lies inside one (FTP hides them from anonymous listings)."""
        return self.entry_for(parts) is not None

    def known(self, user: str, password: str) -> bool | None:
        """The remembered outcome of checking this pair, or None: cheap, safe on the event loop."""
        tag = (user, hmac.digest(self._key, password.encode(), "sha256"))
        with self._lock:
            return self._verified.get(tag)

    def verify(self, user: str, password: str) -> AuthEntry | None:
        """The entry of ``user`` if ``password`` is right. Costs a scrypt run on first sight (call it off the loop)."""
        entry = self.by_user.get(user)
        tag = (user, hmac.digest(self._key, password.encode(), "sha256"))
        with self._lock:
            known = self._verified.get(tag)
        if known is None:
            known = entry is not None and check_password(entry.password, password)
            with self._lock:
                self._verified[tag] = known
                while len(self._verified) > self.CACHE:
                    self._verified.popitem(last=False)
        return entry if known else None
