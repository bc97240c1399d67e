"""The provisioning tree as phones see it: overlays (rendered files, key files) over the static tree, then the AES
transform, for the file services and for ``check``/``explain`` alike.

:class:`Provisioning` is built from the settings and holds the overlays and the transform. :class:`ServedTree`
is the resolver with them plugged in (:func:`plug`, which the provisioning service also applies to the daemon's
resolver), for ``check`` and ``explain``: the same pipeline the file services serve through.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bootstrapd.config import Settings
from bootstrapd.provisioning.names import TEMPLATE_SUFFIX
from bootstrapd.provisioning.overlays import EncryptTransform, KeyStore, RenderedFiles, SecurityFiles
from bootstrapd.provisioning.resolver import Opened, Resolver, inside
from bootstrapd.provisioning.sources import Overlay


def static_names(root: str | Path) -> Iterator[str]:
    """Every regular file of the static tree ('/'-joined, sorted per folder), templates and hidden files left out."""
    root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and inside(os.path.realpath(
            os.path.join(folder, d)), root))
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.startswith(".") or name.endswith(TEMPLATE_SUFFIX) or not os.path.isfile(path):
                continue
            if inside(os.path.realpath(path), root):
                yield os.path.relpath(path, root).replace(os.sep, "/")


class Provisioning:
    """What the model adds to serving: the rendered files, the key store, the transform and the key files."""

    def __init__(self, settings: Settings, *, create_keys: bool = True) -> None:
        self.settings = settings
        self.root = os.path.realpath(settings.server.root)
        p = settings.provisioning
        self.rendered = RenderedFiles(self.root, p.inventory)
        self.keys = KeyStore(p.encrypt, settings.server.state_dir, create=create_keys) if p.encrypt.enabled else None
        self.transform = EncryptTransform(self.keys) if self.keys else None
        self.security = SecurityFiles(self.keys, self.source_exists, self.candidates) if self.keys else None

    def overlays(self) -> list[Overlay]:
        out: list[Overlay] = [self.rendered]
        if self.security is not None:
            out.append(self.security)
        return out

    def static_file(self, name: str) -> bool:
        path = os.path.join(self.root, *name.split("/"))
        return os.path.isfile(path) and inside(os.path.realpath(path), self.root)

    def source_exists(self, name: str) -> bool:
        return self.rendered.get(name) is not None or self.static_file(name)

    def candidates(self) -> list[str]:
        return sorted({*self.rendered.names(), *static_names(self.root)})


@dataclass(frozen=True)
class Served:
    data: bytes
    origin: str  # "static", "rendered:<template>", "security-key:<file>"
    mtime: float
    encrypted: bool


def plug(resolver: Resolver, provisioning: Provisioning) -> None:
    """Put the model's overlays in front of the resolver's static tree and its transform behind (DESIGN's pipeline:
    uploads > overlays > static, then transforms)."""
    resolver.overlays = tuple(provisioning.overlays())
    resolver.transforms = (provisioning.transform,) if provisioning.transform is not None else ()
    resolver.hidden = (TEMPLATE_SUFFIX,)


class ServedTree:
    """The resolver with the provisioning overlays and transform plugged in, for ``check`` and ``explain``: what a
    phone gets for a name, and whether it went out encrypted."""

    def __init__(self, resolver: Resolver, provisioning: Provisioning) -> None:
        self.resolver = resolver
        self.provisioning = provisioning
        self.root = resolver.root
        plug(resolver, provisioning)

    def lookup(self, name: str, client: str | None = None) -> Served:
        """The bytes a phone gets for ``name``; raises :class:`Refused` (not found included)."""
        opened = self.resolver.open(name, client)
        try:
            data = opened.data if opened.data is not None else _read(opened)
        finally:
            opened.close()
        transform = self.provisioning.transform
        # Streamed (large) files and key files never pass through the transform.
        encrypted = (transform is not None and opened.fd is None and not opened.origin.startswith("security-key")
                     and transform.applies(opened.name))
        return Served(data, opened.origin, opened.mtime, encrypted)

    def open(self, name: str, client: str | None = None) -> Opened:
        return self.resolver.open(name, client)

    def upload_target(self, name: str, client: str | None = None) -> str:
        return self.resolver.upload_target(name, client)

    def store_upload(self, name: str, data: bytes, client: str | None = None) -> str:
        return self.resolver.store_upload(name, data, client)


def _read(opened: Opened) -> bytes:
    reader = opened.reader()
    chunks: list[bytes] = []
    while True:
        chunk = bytes(reader.read(1 << 20))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
