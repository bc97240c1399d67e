"""The two plug-in points of the resolver pipeline (DESIGN.md, "Serving a file: one pipeline for every protocol").

request -> normalize -> access rules -> source (uploads > rendered > static) -> transform -> bytes. An
:class:`Overlay` provides files that are not (only) in the static tree (rendered per-phone files, generated key
files), looked up before it; a :class:`Transform` rewrites the bytes of static and rendered files on the way out
(Yealink encryption). Names are the normalized relative path, '/'-joined.
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
