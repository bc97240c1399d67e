"""The provisioning tree as phones see it: overlays (rendered files, key files) over the static tree, then the AES
transform, for the file services and for ``check``/``explain`` alike.

:class:`Provisioning` is built from the settings and holds the overlays and the transform. :class:`ServedTree`
puts them in front of a :class:`~bootstrapd.provisioning.resolver.Resolver` with the resolver's own interface
(``open``, ``upload_target``, ``store_upload``), so a file service serves rendered and encrypted files without
knowing about them. Until the resolver has the pipeline's plug-in points (DESIGN.md), this is where they meet.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bootstrapd.config import Settings
from bootstrapd.provisioning.names import TEMPLATE_SUFFIX
from bootstrapd.provisioning.overlays import EncryptTransform, KeyStore, RenderedFiles, SecurityFiles
from bootstrapd.provisioning.resolver import Opened, Reason, Refused, Resolver, inside, normalize
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


class ServedTree:
    """A resolver with the provisioning overlays in front and the transform behind (same interface as Resolver)."""

    def __init__(self, resolver: Resolver, provisioning: Provisioning) -> None:
        self.resolver = resolver
        self.provisioning = provisioning
        self.root = resolver.root

    def _name(self, name: str) -> str:
        rel = "/".join(normalize(name, self.root))
        if rel.endswith(TEMPLATE_SUFFIX):
            raise Refused(Reason.NOT_FOUND, name)  # template sources are not served, only what they render
        return rel

    def lookup(self, name: str) -> Served:
        """The bytes a phone gets for ``name``; raises :class:`Refused` (not found included)."""
        rel = self._name(name)
        for overlay in self.provisioning.overlays():
            content = overlay.get(rel)
            if content is not None:
                data, origin, mtime = content.data, content.origin, content.mtime
                break
        else:
            opened = self.resolver.open(name)
            try:
                data = opened.data if opened.data is not None else _read(opened)
            finally:
                opened.close()
            origin, mtime = "static", 0.0
            try:
                mtime = os.stat(opened.path).st_mtime
            except OSError:
                pass
        transform = self.provisioning.transform
        if transform is not None and not origin.startswith("security-key") and transform.applies(rel):
            return Served(transform.apply(rel, data), origin, mtime, True)
        return Served(data, origin, mtime, False)

    def _plain(self, rel: str) -> bool:
        """Whether ``rel`` is a static file served untouched (no overlay has it, no transform applies)."""
        transform = self.provisioning.transform
        return not any(o.get(rel) is not None for o in self.provisioning.overlays()) and not (
            transform is not None and transform.applies(rel))

    def open(self, name: str) -> Opened:
        rel = self._name(name)
        if self._plain(rel):
            return self.resolver.open(name)  # the common case: static, untouched, streamed or cached as before
        served = self.lookup(name)
        return Opened(f"{served.origin}:{rel}", len(served.data), served.data, None)

    def open_nowait(self, name: str) -> Opened | None:
        """:meth:`Resolver.open_nowait` for static files; a rendered or encrypted one is None: :meth:`open` builds it
        (reading its source, rendering, encrypting) off the event loop."""
        rel = self._name(name)
        return self.resolver.open_nowait(name) if self._plain(rel) else None

    def upload_target(self, name: str) -> str:
        return self.resolver.upload_target(name)

    def store_upload(self, name: str, data: bytes) -> str:
        return self.resolver.store_upload(name, data)


def _read(opened: Opened) -> bytes:
    reader = opened.reader()
    chunks: list[bytes] = []
    while True:
        chunk = bytes(reader.read(1 << 20))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
