"""TFTP's file work off the event loop (issue #8 item 16): a real loop, real files, reads held back by the test.

``cold`` makes every file look absent from the page cache (``RWF_NOWAIT`` reads find nothing), as after a reboot or
on a disk that stopped answering; without it, the files the test just wrote are in memory and are read on the spot.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from bootstrapd.provisioning import resolver as resolver_module
from bootstrapd.provisioning.resolver import Opened, Reason, Refused, Resolver
from bootstrapd.tftp import files as files_module
from bootstrapd.tftp.files import FileWork, PrefetchReader


class GatedResolver(Resolver):
    """A resolver whose blocking open (the one that reads a file into the cache) waits for the test."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.opens: list[str] = []

    def open(self, name: str) -> Opened:
        self.opens.append(name)
        assert self.gate.wait(10)
        return super().open(name)


@pytest.fixture
def cold(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing_in_memory(fd: int, size: int, offset: int) -> None:
        return None

    monkeypatch.setattr(resolver_module, "read_nowait", nothing_in_memory)
    monkeypatch.setattr(files_module, "read_nowait", nothing_in_memory)


async def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.usefixtures("cold")
def test_a_cache_miss_is_read_in_a_worker_while_the_loop_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a.cfg").write_bytes(b"alpha" * 100)
    resolver = GatedResolver(tmp_path)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        work = FileWork(resolver, loop, lambda: None)
        assert work.open_nowait("a.cfg") is None  # not in the cache: must be read first
        got: list[object] = []
        for _ in range(3):
            work.load("a.cfg", got.append)
        ticks = 0
        while ticks < 20:  # the loop runs on while the read waits (before the fix, open() ran right here)
            await asyncio.sleep(0.001)
            ticks += 1
        assert got == [] and resolver.opens == ["a.cfg"]  # three requests, one read
        resolver.gate.set()
        await _until(lambda: len(got) == 3)
        assert all(getattr(o, "data", None) == b"alpha" * 100 for o in got)
        hit = work.open_nowait("a.cfg")  # now the hot cache answers on the loop
        assert hit is not None and hit.data == b"alpha" * 100
        missing: list[object] = []
        work.load("missing.cfg", missing.append)
        await _until(lambda: bool(missing))
        assert isinstance(missing[0], Refused) and missing[0].reason == Reason.NOT_FOUND
        work.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cold")
def test_a_streamed_file_not_in_memory_is_read_in_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(600_000)
    (tmp_path / "fw.bin").write_bytes(data)
    gate = threading.Event()
    real = files_module._read_chunk

    def gated(fd: int, size: int, offset: int) -> bytes:
        assert gate.wait(10)
        return real(fd, size, offset)

    monkeypatch.setattr(files_module, "_read_chunk", gated)
    woken: list[int] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        work = FileWork(Resolver(tmp_path, stream_above=1000), loop, lambda: woken.append(1))
        opened = work.open_nowait("fw.bin")
        assert opened is not None and opened.data is None and opened.size == len(data)
        reader = opened.reader()
        assert isinstance(reader, PrefetchReader)
        assert reader.read(1468) is None  # being read: the transfer stalls instead of the loop
        await asyncio.sleep(0.02)
        assert woken == []
        gate.set()
        await _until(lambda: bool(woken))
        out = bytearray()
        while True:
            block = reader.read(1468)
            if block is None:  # the next chunk is being read: wait to be woken, as a stalled transfer does
                seen = len(woken)
                await _until(lambda: len(woken) > seen)  # noqa: B023 (awaited right here, in this iteration)
                continue
            out += block
            if len(block) < 1468:
                break
        assert bytes(out) == data
        assert len(woken) >= 3  # 600 KB in 256 KB chunks, each read by the worker
        reader.close()
        work.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cold")
def test_closing_a_stream_while_its_read_runs_closes_the_descriptor_after_it(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Closing at once would free the descriptor number while the worker still reads it: the next open() could get
    # that number, and the worker would read another file.
    (tmp_path / "fw.bin").write_bytes(b"f" * 100_000)
    gate = threading.Event()
    real = files_module._read_chunk

    def gated(fd: int, size: int, offset: int) -> bytes:
        assert gate.wait(10)
        return real(fd, size, offset)

    monkeypatch.setattr(files_module, "_read_chunk", gated)

    async def scenario() -> None:
        work = FileWork(Resolver(tmp_path, stream_above=1000), asyncio.get_running_loop(), lambda: None)
        opened = work.open_nowait("fw.bin")
        assert opened is not None
        reader = opened.reader()
        assert isinstance(reader, PrefetchReader)
        fd = reader.opened.fd
        assert fd is not None
        assert reader.read(512) is None  # a worker reads it now
        reader.close()
        os.fstat(fd)  # still open: the read in flight owns it
        gate.set()
        await _until(lambda: reader.opened.fd is None)
        with pytest.raises(OSError):
            os.fstat(fd)
        work.close()

    asyncio.run(scenario())


def test_an_upload_is_stored_in_the_upload_worker(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    resolver = Resolver(tmp_path / "root", upload_dir=tmp_path / "up")

    class Sink:
        def __init__(self) -> None:
            self.thread = ""

        def store(self, data: bytes) -> None:
            self.thread = threading.current_thread().name
            resolver.store_upload("phone.log", data)

    async def scenario() -> list[BaseException | None]:
        work = FileWork(resolver, asyncio.get_running_loop(), lambda: None)
        results: list[BaseException | None] = []
        sink = Sink()
        work.store(sink, b"log line\n", results.append)
        await _until(lambda: bool(results))
        assert sink.thread.startswith("tftp-upload")
        work.close()
        return results

    assert asyncio.run(scenario()) == [None]
    assert (tmp_path / "up" / "phone.log").read_bytes() == b"log line\n"


def test_what_the_kernel_has_in_memory_is_read_on_the_spot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The files were just written: their pages are in the page cache. Neither the small file nor the streamed one
    # needs a worker thread (no hop, no stall): the fast path is as fast as before.
    small, big = b"s" * 3000, os.urandom(700_000)
    (tmp_path / "s.cfg").write_bytes(small)
    (tmp_path / "fw.bin").write_bytes(big)

    def no_worker(*args: object) -> bytes:
        raise AssertionError("a worker read data the kernel had in memory")

    monkeypatch.setattr(files_module, "_read_chunk", no_worker)

    async def scenario() -> None:
        work = FileWork(Resolver(tmp_path, stream_above=100_000), asyncio.get_running_loop(), lambda: None)
        opened = work.open_nowait("s.cfg")
        assert opened is not None and opened.data == small  # read and cached now
        streamed = work.open_nowait("fw.bin")
        assert streamed is not None and streamed.data is None
        reader = streamed.reader()
        out = bytearray()
        while (block := reader.read(1468)) is not None:
            out += block
            if len(block) < 1468:
                break
        assert bytes(out) == big
        reader.close()
        work.close()

    asyncio.run(scenario())


def test_rendered_and_encrypted_files_are_built_off_the_loop_once_for_everyone_waiting(tmp_path: Path) -> None:
    # Through the provisioning overlays (ServedTree): a static file the kernel has in memory is served on the spot;
    # a rendered, encrypted MAC file is built by open() in a worker, and the phones asking for it meanwhile all get
    # that one result.
    from tests.unit.test_served_tree import MAC, served

    tree = served(tmp_path)
    assert tree.open_nowait(f"{MAC}.cfg") is None  # rendered + encrypted: not on the loop
    plain = tree.open_nowait("sip.cfg")
    assert plain is not None and plain.data == b"#!version:1.0.0.1\na = 1\n"
    expected = tree.lookup(f"{MAC}.cfg").data

    async def scenario() -> list[object]:
        work = FileWork(tree, asyncio.get_running_loop(), lambda: None)
        got: list[object] = []
        for _ in range(5):
            work.load(f"{MAC}.cfg", got.append)
        await _until(lambda: len(got) == 5)
        work.close()
        return got

    results = asyncio.run(scenario())
    assert all(getattr(r, "data", None) == expected for r in results)
    assert len({id(r) for r in results}) == 1  # one build, shared
