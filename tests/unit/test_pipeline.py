"""The resolver's pipeline: access rules before any lookup, uploads > overlays > static, transforms, ETags,
case-insensitive MAC files, and what FTP listings show."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from bootstrapd.provisioning.access import ANY, OWNER, AccessRules
from bootstrapd.provisioning.auth import AuthEntry, AuthTable
from bootstrapd.provisioning.paths import Reason, Refused
from bootstrapd.provisioning.resolver import Resolver
from bootstrapd.provisioning.sources import Content
from bootstrapd.provisioning.uploads import UploadStore

MAC = "001565aa0001"
PHONE = "10.0.0.5"


class Owners:
    def __init__(self, table: dict[str, str]) -> None:
        self.table = table
        self.asked: list[tuple[str, float]] = []

    def mac_for(self, address: str, now: float) -> bytes | None:
        self.asked.append((address, now))
        mac = self.table.get(address)
        return bytes.fromhex(mac) if mac else None


class Rendered:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.asked: list[str] = []

    def get(self, name: str) -> Content | None:
        self.asked.append(name)
        data = self.files.get(name)
        return Content(data, 1_700_000_000.0, f"rendered:{name}.j2") if data is not None else None

    def names(self) -> Iterable[str]:
        return list(self.files)


class Upper:
    def apply(self, name: str, data: bytes) -> bytes:
        return data.upper() if name.endswith(".cfg") else data


def make(tree: Path, mode: str = OWNER, overlays: tuple[Rendered, ...] = (), transforms: tuple[Upper, ...] = (),
         uploads: bool = True, clock: float = 123.0) -> tuple[Resolver, Owners]:
    owners = Owners({PHONE: MAC})
    auth = AuthTable((AuthEntry(("T46U_1",), "floor3", "pw"),))
    access = AccessRules(auth, mode, owners, clock=lambda: clock)
    store = UploadStore(tree.parent / "state" / "uploads", enabled=uploads, max_size=100, total_max_size=100_000)
    return Resolver(tree, access=access, uploads=store, overlays=overlays, transforms=transforms), owners


def refused(call: object, *args: object) -> Reason:
    with pytest.raises(Refused) as info:
        call(*args)  # type: ignore[operator]
    return info.value.reason


def test_mac_files_only_to_their_owner(tree: Path) -> None:
    (tree / f"{MAC.upper()}.cfg").write_bytes(b"secret of aa0001")
    resolver, owners = make(tree)
    opened = resolver.open(f"{MAC}.cfg", PHONE)
    assert opened.data == b"secret of aa0001" and opened.mac == MAC  # saved in upper case, asked in lower
    assert owners.asked == [(PHONE, 123.0)]  # wall-clock now, injected
    assert refused(resolver.open, f"{MAC}.cfg", "10.0.0.6") == Reason.NOT_OWNER
    assert refused(resolver.open, f"{MAC}.cfg", None) == Reason.NOT_OWNER
    # Refused before any lookup: a missing file of another phone is a refusal too, not a 404.
    assert refused(resolver.open, "001565bb0002.boot", PHONE) == Reason.NOT_OWNER
    assert resolver.open("a.cfg", "10.0.0.6").data == b"alpha"  # common files go to anyone
    anyone, _ = make(tree, ANY)
    assert anyone.open(f"{MAC}.cfg", "10.0.0.6").data == b"secret of aa0001"


def test_auth_folders(tree: Path) -> None:
    (tree / "T46U_1").mkdir()
    (tree / "T46U_1" / f"{MAC}.cfg").write_bytes(b"activation")
    resolver, _ = make(tree)
    assert refused(resolver.open, "T46U_1/x.cfg", PHONE) == Reason.AUTH_REQUIRED  # before existence
    assert refused(resolver.open, "T46U_1/x.cfg", PHONE, "someone") == Reason.AUTH_REQUIRED
    # Passing the folder's [[auth]] also passes the MAC-file rule, from any address.
    assert resolver.open(f"T46U_1/{MAC}.cfg", "10.9.9.9", "floor3").data == b"activation"
    assert resolver.needs_auth("/T46U_1/a") and not resolver.needs_auth("a.cfg") and not resolver.needs_auth("../x")


def test_sources_in_order_and_transforms(tree: Path) -> None:
    (tree / "rendered.cfg").write_bytes(b"static")
    overlay = Rendered({"rendered.cfg": b"rendered", f"{MAC}.cfg": b"per phone"})
    resolver, _ = make(tree, overlays=(overlay,), transforms=(Upper(),))
    opened = resolver.open("rendered.cfg", PHONE)
    assert opened.data == b"RENDERED" and opened.origin == "rendered:rendered.cfg.j2"  # overlay > static, transformed
    assert opened.mtime == 1_700_000_000.0
    assert resolver.open(f"{MAC.upper()}.cfg", PHONE).data == b"PER PHONE"
    assert overlay.asked[-1] == f"{MAC}.cfg"  # overlays get MAC file names in lower case
    assert resolver.open("a.cfg").data == b"ALPHA"  # static through the transform too
    assert resolver.open("a.cfg").etag == resolver.open("a.cfg").etag != make(tree)[0].open("a.cfg").etag
    # An upload wins over both and is sent as stored (no transform).
    resolver.store_upload(f"{MAC}-local.cfg", b"uploaded", PHONE)
    opened = resolver.open(f"dir/{MAC}-local.cfg", PHONE)
    assert opened.data == b"uploaded" and opened.origin == "upload"
    assert refused(resolver.store_upload, "rendered.cfg", b"x", PHONE) == Reason.NOT_ALLOWED


def test_etag_is_stable_and_follows_the_bytes(tree: Path) -> None:
    first, _ = make(tree)
    second, _ = make(tree)  # another process, same file
    assert first.open("a.cfg").etag == second.open("a.cfg").etag
    (tree / "a.cfg").write_bytes(b"ALPHA!")
    assert first.open("a.cfg").etag != second.open("dir/b.cfg").etag
    big = tree / "big.bin"
    big.write_bytes(b"x" * 5000)
    streaming = Resolver(tree, cache_size=1000, stream_above=1000)
    opened = streaming.open("big.bin")
    assert opened.fd is not None and opened.etag == streaming.open("big.bin").etag
    os.utime(big, ns=(0, 10**18))
    assert streaming.open("big.bin").etag != opened.etag
    opened.close()


def test_uploads_obey_every_rule(tree: Path) -> None:
    (tree / "001565aa0009-local.cfg").write_bytes(b"provisioned")
    resolver, _ = make(tree)
    store = resolver.uploads
    assert store is not None
    path = resolver.store_upload(f"T46U/{MAC}-Local.CFG", b"mine", PHONE)
    assert Path(path) == Path(store.folder) / MAC / f"{MAC}-local.cfg" and Path(path).read_bytes() == b"mine"
    cases = {
        ("001565bb0002-local.cfg", PHONE): Reason.NOT_OWNER,  # another phone's MAC
        (f"{MAC}-local.cfg", "10.0.0.6"): Reason.NOT_OWNER,  # not from the phone's address
        ("notes.txt", PHONE): Reason.NOT_ALLOWED,
        ("a.cfg", PHONE): Reason.NOT_ALLOWED,
        ("../" + f"{MAC}-local.cfg", PHONE): Reason.ESCAPE,
        ("T46U_1/" + f"{MAC}-local.cfg", PHONE): Reason.AUTH_REQUIRED,
    }
    for (name, client), reason in cases.items():
        assert refused(resolver.store_upload, name, b"x", client) == reason, name
    anyone, _ = make(tree, ANY)
    assert refused(anyone.store_upload, "001565aa0009-local.cfg", b"x", PHONE) == Reason.PROVISIONED
    assert refused(anyone.store_upload, "001565AA0009-LOCAL.cfg", b"x", PHONE) == Reason.PROVISIONED
    assert refused(anyone.store_upload, f"{MAC}-big.log", b"x" * 101, PHONE) == Reason.TOO_LARGE
    disabled, _ = make(tree, uploads=False)
    assert refused(disabled.store_upload, f"{MAC}-local.cfg", b"x", PHONE) == Reason.UPLOAD_DISABLED
    assert (tree / "001565aa0009-local.cfg").read_bytes() == b"provisioned"
    with pytest.raises(ValueError):
        Resolver(tree, uploads=UploadStore(tree / "uploads"))  # a store inside the tree would be served


def test_listing_hides_what_the_client_may_not_have(tree: Path) -> None:
    (tree / "T46U_1").mkdir()
    (tree / f"{MAC}.cfg").write_bytes(b"mine")
    (tree / "001565bb0002.cfg").write_bytes(b"other")
    (tree / "out").symlink_to(tree.parent / "secret")
    os.mkfifo(tree / "fifo")
    overlay = Rendered({f"{MAC}.boot": b"rendered boot", "dir/r.cfg": b"r"})
    resolver, _ = make(tree, overlays=(overlay,))
    names = [e.name for e in resolver.listing((), PHONE, None)]
    assert names == [f"{MAC}.boot", f"{MAC}.cfg", "a.cfg", "dir"]
    assert [e.name for e in resolver.listing((), PHONE, "floor3")] == [f"{MAC}.boot", f"{MAC}.cfg", "T46U_1",
                                                                       "a.cfg", "dir"]
    assert [e.name for e in resolver.listing(("dir",), None, None)] == ["b.cfg", "r.cfg"]
    assert refused(resolver.directory, "T46U_1", None) == Reason.AUTH_REQUIRED
    assert refused(resolver.directory, "out", None) == Reason.ESCAPE
    assert resolver.directory("/", None) == () and resolver.directory("dir/", None) == ("dir",)
