"""The file services' disk work off the event loop (bootstrapd/provisioning/work.py): a real loop, real files, reads
held back by the test.

``cold`` makes every file look absent from the page cache (``RWF_NOWAIT`` reads find nothing), as after a reboot or
on a disk that stopped answering; without it, the files the test just wrote are in memory and are read on the spot.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bootstrapd.provisioning import resolver as resolver_module
from bootstrapd.provisioning import work as work_module
from bootstrapd.provisioning.access import OWNER, AccessRules
from bootstrapd.provisioning.resolver import Opened, Reason, Refused, Resolver
from bootstrapd.provisioning.uploads import UploadStore
from bootstrapd.provisioning.work import FileWork

MAC = "001565000001"


class GatedResolver(Resolver):
    """A resolver whose blocking open (the one that reads a file into the cache) waits for the test."""

    def __init__(self, root: Path, **kwargs: object) -> None:
        super().__init__(root, **kwargs)  # type: ignore[arg-type]
        self.gate = threading.Event()
        self.opens: list[tuple[str, str | None]] = []

    def open(self, name: str, client: str | None = None, user: str | None = None) -> Opened:
        self.opens.append((name, client))
        assert self.gate.wait(10)
        return super().open(name, client, user)


def nothing_in_memory(fd: int, size: int, offset: int) -> None:
    return None


@pytest.fixture
def cold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolver_module, "read_nowait", nothing_in_memory)
    monkeypatch.setattr(work_module, "read_nowait", nothing_in_memory)


def gate_worker_reads(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    gate = threading.Event()
    real = work_module.read_chunk

    def gated(fd: int, size: int, offset: int) -> bytes:
        assert gate.wait(10)
        return real(fd, size, offset)

    monkeypatch.setattr(work_module, "read_chunk", gated)
    return gate


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def work_over(resolver: Resolver) -> FileWork:
    return FileWork(lambda: resolver, asyncio.get_running_loop())


@pytest.mark.usefixtures("cold")
def test_a_cache_miss_is_read_in_a_worker_while_the_loop_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a.cfg").write_bytes(b"alpha" * 100)
    resolver = GatedResolver(tmp_path)

    async def scenario() -> None:
        work = work_over(resolver)
        assert work.open_nowait("a.cfg") is None  # not in the cache: must be read first
        got: list[object] = []
        for _ in range(3):
            work.load("a.cfg", None, None, got.append)
        for _ in range(20):  # the loop runs on while the read waits
            await asyncio.sleep(0.001)
        assert got == [] and resolver.opens == [("a.cfg", None)]  # three requests, one read
        resolver.gate.set()
        await until(lambda: len(got) == 3)
        assert all(isinstance(o, Opened) and o.data == b"alpha" * 100 for o in got)
        hit = work.open_nowait("a.cfg")  # now the hot cache answers on the loop
        assert hit is not None and hit.data == b"alpha" * 100
        missing: list[object] = []
        work.load("missing.cfg", None, None, missing.append)
        await until(lambda: bool(missing))
        assert isinstance(missing[0], Refused) and missing[0].reason == Reason.NOT_FOUND
        work.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cold")
def test_requests_waiting_for_one_read_each_pass_the_rules_themselves(tmp_path: Path) -> None:
    # Two requests for the phone's file while it is read: the read is shared, the decision is not. The second
    # request comes from an address that no longer holds the phone's lease when the bytes are in (its check on
    # arrival passed; the lease moved meanwhile): it is refused, whatever the first one got.
    (tmp_path / f"{MAC}.cfg").write_bytes(b"secret" * 50)
    leases = {"10.0.0.5": bytes.fromhex(MAC), "10.0.0.9": bytes.fromhex(MAC)}

    class Leases:
        def mac_for(self, address: str, now: float) -> bytes | None:
            return leases.get(address)

    resolver = GatedResolver(tmp_path, access=AccessRules(mac_files=OWNER, owners=Leases()))

    async def scenario() -> None:
        work = work_over(resolver)
        with pytest.raises(Refused):
            work.open_nowait(f"{MAC}.cfg", "10.0.0.7")  # no lease at all: refused at once, before any read
        first: list[object] = []
        second: list[object] = []
        assert work.open_nowait(f"{MAC}.cfg", "10.0.0.5") is None
        work.load(f"{MAC}.cfg", "10.0.0.5", None, first.append)
        assert work.open_nowait(f"{MAC}.cfg", "10.0.0.9") is None
        work.load(f"{MAC}.cfg", "10.0.0.9", None, second.append)
        await asyncio.sleep(0.02)
        del leases["10.0.0.9"]
        resolver.gate.set()
        await until(lambda: first and second)
        assert resolver.opens == [(f"{MAC}.cfg", "10.0.0.5")]  # one read
        assert isinstance(first[0], Opened) and first[0].data == b"secret" * 50
        assert isinstance(second[0], Refused) and second[0].reason == Reason.NOT_OWNER
        work.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cold")
def test_awaiting_a_file_and_going_away_meanwhile(tmp_path: Path) -> None:
    data = os.urandom(5000)
    (tmp_path / "a.cfg").write_bytes(data)
    resolver = GatedResolver(tmp_path)

    async def scenario() -> None:
        work = work_over(resolver)
        waiting = asyncio.ensure_future(work.open("a.cfg"))
        gone = asyncio.ensure_future(work.open("a.cfg"))
        await asyncio.sleep(0.02)
        gone.cancel()  # an HTTP client that hung up
        resolver.gate.set()
        opened = await waiting
        assert opened.data == data
        with pytest.raises(asyncio.CancelledError):
            await gone
        with pytest.raises(Refused):
            await work.open("nothing.cfg")
        work.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cold")
def test_a_streamed_body_not_in_memory_is_read_by_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(700_000)
    (tmp_path / "fw.bin").write_bytes(data)
    gate = gate_worker_reads(monkeypatch)

    async def scenario() -> bytes:
        work = work_over(Resolver(tmp_path, stream_above=1000))
        opened = await work.open("fw.bin")
        assert opened.data is None and opened.fd is not None
        out = bytearray()

        async def write(chunk: bytes) -> None:
            out.extend(chunk)

        sending = asyncio.ensure_future(work.send(opened.fd, 100, len(data) - 100, write))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.001)  # the loop goes on while the worker waits for the disk
            ticks += 1
        assert ticks == 20 and not out and not sending.done()
        gate.set()
        await sending
        opened.close()
        work.close()
        return bytes(out)

    assert asyncio.run(scenario()) == data[100:]


def files_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    """s.cfg and fw.bin, just written (so in the page cache); a worker read of them fails the test."""
    small, big = b"s" * 3000, os.urandom(700_000)
    (tmp_path / "s.cfg").write_bytes(small)
    (tmp_path / "fw.bin").write_bytes(big)

    def no_worker(*args: object) -> bytes:
        raise AssertionError("a worker read data the kernel had in memory")

    monkeypatch.setattr(work_module, "read_chunk", no_worker)
    return small, big


def test_what_the_kernel_has_in_memory_is_sent_on_the_spot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Files just written are in the page cache: neither the small file nor the streamed body needs a worker.
    small, big = files_in_memory(tmp_path, monkeypatch)

    async def scenario() -> None:
        work = work_over(Resolver(tmp_path, stream_above=100_000))
        opened = work.open_nowait("s.cfg")
        assert opened is not None and opened.data == small  # read and cached now
        streamed = work.open_nowait("fw.bin")
        assert streamed is not None and streamed.fd is not None
        out = bytearray()

        async def write(chunk: bytes) -> None:
            out.extend(chunk)

        await work.send(streamed.fd, 0, streamed.size, write)
        assert bytes(out) == big
        streamed.close()
        work.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cold")
def test_closing_a_file_while_a_worker_reads_it_is_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker reads its own duplicate of the descriptor: closing the file at once cannot let the next open()
    # reuse a number the worker still reads, and the duplicate is closed when the read ends.
    (tmp_path / "fw.bin").write_bytes(b"f" * 100_000)
    (tmp_path / "other.bin").write_bytes(b"o" * 100_000)
    gate = gate_worker_reads(monkeypatch)

    async def scenario() -> None:
        work = work_over(Resolver(tmp_path, stream_above=1000))
        before = len(os.listdir("/proc/self/fd"))
        opened = work.open_nowait("fw.bin")
        assert opened is not None and opened.fd is not None
        future = work.read_later(opened.fd, 512, 0)
        opened.close()
        other = work.open_nowait("other.bin")  # very likely the number just freed
        assert other is not None
        gate.set()
        assert await future == b"f" * 512  # the first file's bytes, not the other's
        other.close()
        await until(lambda: len(os.listdir("/proc/self/fd")) == before)
        work.close()

    asyncio.run(scenario())


def test_uploads_are_stored_in_the_upload_worker(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    resolver = Resolver(tmp_path / "root", uploads=UploadStore(tmp_path / "up"))
    threads: list[str] = []

    def store(data: bytes) -> None:
        threads.append(threading.current_thread().name)
        resolver.store_upload(f"{MAC}-a.log", data)

    async def scenario() -> list[BaseException | None]:
        work = work_over(resolver)
        results: list[BaseException | None] = []
        work.store(store, b"log line\n", results.append)
        await until(lambda: bool(results))
        await work.store_upload(f"{MAC}-local.cfg", b"x = 1\n")
        with pytest.raises(Refused):
            await work.store_upload("notes.txt", b"no")
        work.close()
        return results

    assert asyncio.run(scenario()) == [None]
    assert threads[0].startswith("file-upload")
    assert (tmp_path / "up" / MAC / f"{MAC}-a.log").read_bytes() == b"log line\n"
    assert (tmp_path / "up" / MAC / f"{MAC}-local.cfg").read_bytes() == b"x = 1\n"


@pytest.mark.usefixtures("cold")
def test_rendered_and_encrypted_files_are_served_from_memory_on_the_loop(tmp_path: Path) -> None:
    # Rendered files are built by the provisioning service ahead of requests and held in memory, and the transform
    # works on bytes in memory: no worker, no disk, even with nothing in the page cache.
    from tests.unit.test_served_tree import MAC as RENDERED_MAC
    from tests.unit.test_served_tree import served

    tree = served(tmp_path)
    expected = tree.lookup(f"{RENDERED_MAC}.cfg").data
    opened = tree.resolver.open_nowait(f"{RENDERED_MAC}.cfg")
    assert opened is not None and opened.data == expected and opened.origin == "rendered:{mac}.cfg.j2"
    key = tree.resolver.open_nowait(f"{RENDERED_MAC}_Security.enc")
    assert key is not None and key.data == tree.lookup(f"{RENDERED_MAC}_Security.enc").data
