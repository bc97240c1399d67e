"""The provisioning file resolver: escapes refused, odd files refused, the hot cache, atomic uploads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootstrapd.provisioning.cache import Cached
from bootstrapd.provisioning.resolver import HotCache, Reason, Refused, Resolver, normalize


@pytest.mark.parametrize("name,reason", [
    ("../secret", Reason.ESCAPE),
    ("dir/../../secret", Reason.ESCAPE),
    ("..\\secret", Reason.ESCAPE),
    ("dir//b.cfg", Reason.EMPTY),
    ("dir/", Reason.EMPTY),
    ("", Reason.EMPTY),
    ("a\x01b", Reason.BAD_NAME),
    ("a\udcffb", Reason.BAD_NAME),
])
def test_normalize_refuses(name: str, reason: Reason) -> None:
    with pytest.raises(Refused) as info:
        normalize(name)
    assert info.value.reason == reason


def test_normalize_accepts() -> None:
    assert normalize("dir\\b.cfg") == ("dir", "b.cfg")
    assert normalize("/dir/b.cfg") == ("dir", "b.cfg")
    assert normalize("/srv/root/dir/b.cfg", "/srv/root") == ("dir", "b.cfg")


def test_open_and_refusals(tree: Path) -> None:
    resolver = Resolver(tree)
    assert resolver.open("a.cfg").data == b"alpha"
    assert resolver.open("dir\\b.cfg").data == b"beta"
    assert resolver.open("/a.cfg").data == b"alpha"
    assert resolver.open(f"{tree}/dir/b.cfg").data == b"beta"
    (tree / "out").symlink_to(tree.parent / "secret")
    (tree / "in").symlink_to(tree / "a.cfg")
    os.mkfifo(tree / "fifo")
    cases = {
        "out": Reason.ESCAPE,
        "/etc/passwd": Reason.ABSOLUTE,
        "dir/../../x": Reason.ESCAPE,
        "fifo": Reason.NOT_REGULAR,
        "dir": Reason.NOT_REGULAR,
        "nope": Reason.NOT_FOUND,
        "/dev/null": Reason.ABSOLUTE,
    }
    for name, reason in cases.items():
        with pytest.raises(Refused) as info:
            resolver.open(name)
        assert info.value.reason == reason, name
    assert resolver.open("in").data == b"alpha"  # a symlink that stays inside is fine


def test_cache_invalidation(tree: Path) -> None:
    resolver = Resolver(tree, cache_size=1000, stream_above=100)
    assert resolver.open("a.cfg").data == b"alpha"
    assert resolver.open("a.cfg").data == b"alpha"
    assert resolver.cache.hits == 1
    path = tree / "a.cfg"
    path.write_bytes(b"alpha2")  # size changes
    assert resolver.open("a.cfg").data == b"alpha2"
    st = path.stat()
    path.write_bytes(b"ALPHA2")  # same size: the mtime (forced apart) tells
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert resolver.open("a.cfg").data == b"ALPHA2"
    tmp = tree / "new"
    tmp.write_bytes(b"ALPHA3")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    os.replace(tmp, path)  # same size, same mtime, another inode
    assert resolver.open("a.cfg").data == b"ALPHA3"


def test_large_files_streamed_and_cache_bounded(tree: Path) -> None:
    (tree / "big").write_bytes(b"B" * 500)
    resolver = Resolver(tree, cache_size=12, stream_above=100)
    opened = resolver.open("big")
    assert opened.data is None and opened.size == 500
    reader = opened.reader()
    assert bytes(reader.read(300)) + bytes(reader.read(300)) == b"B" * 500
    reader.close()
    resolver.open("a.cfg")
    resolver.open("dir/b.cfg")
    (tree / "c").write_bytes(b"c" * 6)
    resolver.open("c")
    assert resolver.cache.total <= 12


def test_cache_lru() -> None:
    cache = HotCache(10, 10)
    st = os.stat(".")
    entry = Cached(b"12345", '"e"')
    cache.put("a", st, entry)
    cache.put("b", st, entry)
    assert cache.get("a", st) == entry
    cache.put("c", st, entry)  # evicts b, the least recently used
    assert cache.get("b", st) is None and cache.get("a", st) is not None and cache.total == 10


def test_remembered_names_pass_every_rule_again(tree: Path) -> None:
    """The resolver remembers what a name is (Resolver._name), never who may have it: a MAC file served to its
    owner is refused to another client asking the same name next, and a suffix hidden after a name was served
    (tree.plug) is refused from then on."""
    from bootstrapd.provisioning.access import OWNER, AccessRules

    (tree / "001565aabbcc.cfg").write_bytes(b"mine")
    (tree / "x.cfg.tmpl").write_bytes(b"template")

    class Leases:
        def mac_for(self, address: str, now: float) -> bytes | None:
            return bytes.fromhex("001565aabbcc") if address == "10.0.0.5" else None

    resolver = Resolver(tree, access=AccessRules(mac_files=OWNER, owners=Leases()))
    for _ in range(2):
        assert resolver.open("001565AABBCC.cfg", "10.0.0.5").data == b"mine"
        with pytest.raises(Refused) as info:
            resolver.open("001565AABBCC.cfg", "10.0.0.6")
        assert info.value.reason == Reason.NOT_OWNER
    assert resolver.open("x.cfg.tmpl").data == b"template"
    resolver.hidden = (".tmpl",)
    with pytest.raises(Refused) as info:
        resolver.open("x.cfg.tmpl")
    assert info.value.reason == Reason.NOT_FOUND
