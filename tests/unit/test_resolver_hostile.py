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

    def resolve(self, name: str) -> str:
        real = super().resolve(name)
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


def test_upload_names_stay_in_the_upload_folder(tree: Path) -> None:
    resolver = Resolver(tree, upload_dir="uploads", upload_max_size=100)
    for name in ("../a.cfg", "..\\a.cfg", "/../a.cfg", "uploads/../../a.cfg", "a\0.cfg"):
        with pytest.raises(Refused):
            resolver.store_upload(name, b"evil")
    with pytest.raises(OSError):
        resolver.store_upload("x" * 300, b"too long a name")
    assert (tree / "a.cfg").read_bytes() == b"alpha"
    assert not os.listdir(tree / "uploads") if (tree / "uploads").exists() else True


def test_the_upload_folder_has_a_size_cap(tree: Path) -> None:
    # Each upload is capped, but a phone could upload distinct names until the disk is full.
    resolver = Resolver(tree, upload_dir="uploads", upload_max_size=10000, upload_dir_max_size=10000)
    resolver.store_upload("one.log", b"1" * 6000)
    with pytest.raises(Refused) as info:
        resolver.store_upload("two.log", b"2" * 6000)
    assert info.value.reason == Reason.TOO_LARGE
    resolver.store_upload("one.log", b"3" * 6000)  # replacing a file does not add to the folder
    (tree / "uploads" / "one.log").unlink()  # the operator cleans up: room again
    resolver.store_upload("two.log", b"2" * 6000)
    assert sorted(p.name for p in (tree / "uploads").iterdir()) == ["two.log"]


def test_empty_uploads_count_against_the_folder_cap(tree: Path) -> None:
    # Empty files cost no bytes but an inode and a directory entry each: charged a filesystem block apiece.
    resolver = Resolver(tree, upload_dir="uploads", upload_max_size=100, upload_dir_max_size=3 * 4096)
    for n in range(3):
        resolver.store_upload(f"empty{n}.log", b"")
    with pytest.raises(Refused) as info:
        resolver.store_upload("empty3.log", b"")
    assert info.value.reason == Reason.TOO_LARGE
