"""Secret files by reference: ``"credential:NAME"`` names a file systemd hands the service, not a path on disk.

Under systemd a secret (the HTTPS key) is best passed with ``LoadCredential=NAME:SOURCE``: systemd reads SOURCE as
root and gives the service a private, read-only copy in the directory named by ``$CREDENTIALS_DIRECTORY``, readable by
the service's user only, so the key never has to be readable by the (dynamic) user on disk. A path setting written
as ``tls_key = "credential:tls.key"`` means ``$CREDENTIALS_DIRECTORY/tls.key``; anything else is an ordinary path.

Loaders read such settings with :func:`secret_file` (the name is checked at load time, so ``check-config`` catches
a bad one); the service calls :meth:`SecretFile.resolve` when it starts, which raises :class:`CredentialError`
naming the key and what to do when the credential is not there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bootstrapd.configfile import Table

PREFIX = "credential:"


class CredentialError(Exception):
    """A secret the configuration names cannot be found (the daemon turns it into a start-up error, exit 2)."""


def _credential_name(name: str) -> str:
    # systemd's rule for credential IDs: a plain file name.
    if not name or name in (".", "..") or "/" in name or len(name) > 255 or any(ord(c) < 0x21 for c in name):
        raise ValueError(f"{PREFIX}{name!r} must name a credential: a file name without '/' (LoadCredential=NAME:...)")
    return name


@dataclass(frozen=True)
class SecretFile:
    key: str  # the setting, e.g. "http.tls_key", for messages
    path: Path | None = None  # an ordinary path
    credential: str | None = None  # or the credential's name

    def resolve(self, environ: Mapping[str, str] = os.environ) -> Path:
        """The file to open: the path, or the credential inside ``$CREDENTIALS_DIRECTORY``."""
        if self.path is not None:
            return self.path
        assert self.credential is not None
        directory = environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise CredentialError(
                f"{self.key} = \"{PREFIX}{self.credential}\" but $CREDENTIALS_DIRECTORY is not set: run bootstrapd "
                f"under systemd with LoadCredential={self.credential}:... (systemd/bootstrapd.service), or give a path")
        path = Path(directory) / self.credential
        if not path.is_file():
            raise CredentialError(
                f"{self.key} = \"{PREFIX}{self.credential}\" but there is no credential {self.credential!r} in "
                f"{directory}: give the unit LoadCredential={self.credential}:SOURCE (systemd/bootstrapd.service "
                f"reads tls.key from /etc/credstore/bootstrapd.tls.key)")
        return path


def secret_file(table: Table, key: str) -> SecretFile | None:
    """Read an optional path setting that may be ``"credential:NAME"``; a bad name is a ConfigError on its line."""
    text = table.text(key, None)
    if text is None:
        return None
    where = table.key_path(key)
    if text.startswith(PREFIX):
        return SecretFile(where, credential=table.parse(key, lambda v: _credential_name(v[len(PREFIX):])))
    if not text:
        raise table.error(key, f"must be a file path or \"{PREFIX}NAME\", not empty")
    return SecretFile(where, path=Path(text))
