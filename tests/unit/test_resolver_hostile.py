"""Adversarial review of the resolver: unusual names, a directory swapped for a symlink mid-request, read errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootstrapd.provisioning.resolver import Reason, Refused, Resolver


@pytest.mark.parametrize("name", [
    "%2e%2e/outside/b.cfg", "....//outside/b.cfg", "..\\outside\\b.cfg", "dir\\..\\..\\outside\\b.cfg",
    "a.cfg\0", "x" * 5000, "a" * 300 + "/b", "c:\\a.cfg", "c:/../outside/b.cfg", "//tmp/../outside/b.cfg",
    "\\\\server\\share\\a.cfg", "dir/./b.cfg", "dir/b.cfg/", "/../outside/b.cfg", "\u2025/outside/b.cfg",
])
def test_unusual_names_never_leave_the_root(tree: Path, name: str) -> None:
    resolver = Resolver(tree)
    try:
        opened = resolver.open(name)
    except Refused:
        return
    assert opened.data in (b"alpha", b"beta")


class SwappingResolver(Resolver):
    """Replaces ``dir`` by a symlink to a folder outside the root between resolving and opening."""

    def _static(self, parts: tuple[str, ...], name: str) -> str:
        real = super()._static(parts, name)
        folder = Path(self.root) / "dir"
        if folder.is_dir() and not folder.is_symlink():
            folder.rename(Path(self.root) / "dir.old")
            folder.symlink_to(Path(self.root).parent / "outside")
        return real


def test_a_directory_swapped_for_a_symlink_after_resolving_is_refused(tree: Path) -> None:
    # O_NOFOLLOW covers only the last component: the opened descriptor itself must be checked to lie in the root.
    with pytest.raises(Refused) as info:
        SwappingResolver(tree).open("dir/b.cfg")
    assert info.value.reason == Reason.ESCAPE


def test_a_file_swapped_after_open_keeps_serving_what_was_opened(tree: Path) -> None:
    big = tree / "big.bin"
    big.write_bytes(b"A" * 5000)
    opened = Resolver(tree, cache_size=1000, stream_above=1000).open("big.bin")
    assert opened.data is None  # streamed from its descriptor
    big.unlink()
    (tree / "big.bin").symlink_to(tree.parent / "outside" / "b.cfg")
    reader = opened.reader()
    assert bytes(reader.read(6000)) == b"A" * 5000
    reader.close()


def test_a_read_error_is_a_refusal(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int, n: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "read", failing)  # the resolver calls os.read through the module
    with pytest.raises(Refused) as info:
        Resolver(tree).open("a.cfg")
    assert info.value.reason == Reason.DENIED
