"""One AES secret for every appliance sharing a database, so they all serve byte-identical encrypted files.

Per-file keys derive from ``state_dir/yealink-aes.secret`` (:class:`~bootstrapd.provisioning.overlays.KeyStore`).
Two appliances with secrets of their own would hand a phone different keys for the same file, and a phone switching
box would re-apply its whole configuration. With a shared store the database holds the secret: the first appliance
to start stores its own (or a new one), every other one takes that one. It is written to the local file before any
service starts (0600, atomically, its modification time the secret's creation time, so Last-Modified of the key
files agrees too), and the KeyStore, ``check`` and ``explain`` read it from there as they do with SQLite.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bootstrapd.provisioning.overlays import SECRET_FILE, KeyStoreError, _read_secret

log = logging.getLogger("bootstrapd.provisioning")

KEY = "provisioning.aes_secret"


class SharedValues(Protocol):
    async def shared_value(self, key: str, make: Callable[[], bytes]) -> tuple[bytes, float]: ...


def _write(path: Path, secret: bytes, created: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.shared")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (secret.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(tmp, (created, created))
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def share_secret(store: SharedValues, state_dir: Path) -> bytes:
    """Make ``state_dir``'s secret the database's (storing this appliance's if the database has none yet)."""
    path = state_dir / SECRET_FILE
    local: bytes | None = None
    if path.exists():
        try:
            local = _read_secret(path)
        except KeyStoreError as exc:
            log.warning("%s; it is replaced by the secret in the database", exc)
    shared, created = await store.shared_value(KEY, lambda: local or secrets.token_bytes(32))
    if len(shared) != 32:
        raise OSError(f"the database holds an AES secret of {len(shared)} bytes, not 32 (meta {KEY!r})")
    if local != shared:
        if local is not None:
            log.warning("%s differs from the secret the other appliances use: replaced by the database's (phones "
                        "this appliance served get new keys once)", path)
        _write(path, shared, created)
    elif abs(path.stat().st_mtime - created) > 1e-3:
        os.utime(path, (created, created))
    return shared
