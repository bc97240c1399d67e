"""The resolver's two plug-in points: overlays (files that are not, or not only, in the static tree) and
transforms (applied to file bytes on the way out). The provisioning model implements the rendered-files overlay,
the ``<name>_Security.enc`` overlay and the Yealink AES transform against exactly these.

- An overlay is asked before the static tree, with the normalized relative path, ``/``-joined (MAC file names in
  lower case); it returns :class:`Content` or None. ``names`` lists everything it can produce (``check``,
  collisions with the static tree, FTP listings).
- A transform gets the bytes of every static or rendered file held in memory (files below the large-file size;
  firmware is streamed untouched) and returns the bytes to send, or the same object when it does not apply.
- Both may be called from a worker thread, and must not keep per-request state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Content:
    """A file that is not (only) in the static tree."""

    data: bytes
    mtime: float  # seconds since the epoch, for Last-Modified; stable for unchanged inputs
    origin: str  # e.g. "rendered:{mac}.cfg.j2", "upload", "security-key" (events, explain)


class Overlay(Protocol):
    """Rendered per-phone files, generated key files: looked up before the static tree."""

    def get(self, name: str) -> Content | None: ...

    def names(self) -> Iterable[str]: ...


class Transform(Protocol):
    """Applied to the bytes of static and rendered files on the way out (encryption)."""

    def apply(self, name: str, data: bytes) -> bytes: ...
