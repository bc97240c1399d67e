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

    def _static(self, parts: tuple[str, ...], name: str) -> tuple[str, str]:
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
    def failing(fd: int, n: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pread", failing)  # the resolver calls os.pread through the module
    with pytest.raises(Refused) as info:
        Resolver(tree).open("a.cfg")
    assert info.value.reason == Reason.DENIED


def test_the_fast_path_follows_changes_to_the_tree(tree: Path) -> None:
    # A file vetted once is served on one stat() while it is the same inode; a symlink re-pointed (inside the
    # root) or swapped for one leaving the root takes the full path again.
    (tree / "fw1.rom").write_bytes(b"one")
    (tree / "fw2.rom").write_bytes(b"two")
    (tree / "current.rom").symlink_to("fw1.rom")
    resolver = Resolver(tree)
    assert resolver.open("current.rom").data == b"one"
    assert resolver.open("current.rom").data == b"one"
    (tree / "current.rom").unlink()
    (tree / "current.rom").symlink_to("fw2.rom")
    assert resolver.open("current.rom").data == b"two"
    (tree / "current.rom").unlink()
    (tree / "current.rom").symlink_to(tree.parent / "secret")
    with pytest.raises(Refused) as info:
        resolver.open("current.rom")
    assert info.value.reason == Reason.ESCAPE
    assert resolver.open("dir/b.cfg").data == b"beta"  # vetted: the next request takes the fast path
    (tree / "dir").rename(tree / "dir.old")
    (tree / "dir").symlink_to(tree.parent / "outside")  # outside/b.cfg exists, another inode
    assert resolver.open("dir.old/b.cfg").data == b"beta"
    with pytest.raises(Refused):
        resolver.open("dir/b.cfg")
