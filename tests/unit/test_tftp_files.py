"""TFTP's view of the files (bootstrapd/tftp/files.py): streamed reads that stall the transfer instead of the loop,
over the daemon's file work (tests/unit/test_file_work.py tests the work itself)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bootstrapd.provisioning import resolver as resolver_module
from bootstrapd.provisioning.resolver import Resolver
from bootstrapd.provisioning.work import FileWork
from bootstrapd.tftp import files as files_module
from bootstrapd.tftp.files import PrefetchReader, TftpFiles
from tests.unit.test_file_work import files_in_memory, gate_worker_reads, nothing_in_memory, until


@pytest.fixture
def cold(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader reads the page cache into its own reused buffer (readinto_nowait): nothing is there.
    monkeypatch.setattr(files_module, "readinto_nowait", nothing_in_memory)


@pytest.mark.usefixtures("cold")
def test_a_streamed_file_not_in_memory_is_read_in_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(600_000)
    (tmp_path / "fw.bin").write_bytes(data)
    gate = gate_worker_reads(monkeypatch)
    woken: list[int] = []

    async def scenario() -> None:
        resolver = Resolver(tmp_path, stream_above=1000)
        files = TftpFiles(FileWork(lambda: resolver, asyncio.get_running_loop()), lambda: woken.append(1))
        opened = files.open_nowait("fw.bin")
        assert opened is not None and opened.data is None and opened.size == len(data)
        reader = opened.reader()
        assert isinstance(reader, PrefetchReader)
        assert reader.read(1468) is None  # being read: the transfer stalls instead of the loop
        await asyncio.sleep(0.02)
        assert woken == []
        gate.set()
        await until(lambda: bool(woken))
        out = bytearray()
        while True:
            block = reader.read(1468)
            if block is None:  # the next chunk is being read: wait to be woken, as a stalled transfer does
                seen = len(woken)
                await until(lambda: len(woken) > seen)  # noqa: B023 (awaited right here, in this iteration)
                continue
            out += block
            if len(block) < 1468:
                break
        assert bytes(out) == data
        assert len(woken) >= 3  # 600 KB in 256 KB chunks, each read by the worker
        reader.close()
        files.work.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("cold")
def test_closing_a_stream_while_its_read_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The descriptor closes at once (the worker reads its own duplicate), the late chunk is dropped, and no wake-up
    # comes for a transfer that is gone.
    (tmp_path / "fw.bin").write_bytes(b"f" * 100_000)
    gate = gate_worker_reads(monkeypatch)
    woken: list[int] = []

    async def scenario() -> None:
        resolver = Resolver(tmp_path, stream_above=1000)
        work = FileWork(lambda: resolver, asyncio.get_running_loop())
        before = len(os.listdir("/proc/self/fd"))
        opened = TftpFiles(work, lambda: woken.append(1)).open_nowait("fw.bin")
        assert opened is not None
        reader = opened.reader()
        assert isinstance(reader, PrefetchReader)
        fd = reader.fd
        assert reader.read(512) is None  # a worker reads it now
        reader.close()
        with pytest.raises(OSError):
            os.fstat(fd)
        gate.set()
        await until(lambda: len(os.listdir("/proc/self/fd")) == before)  # the worker's duplicate closed too
        await asyncio.sleep(0.02)
        assert woken == []
        work.close()

    asyncio.run(scenario())


def test_what_the_kernel_has_in_memory_is_read_on_the_spot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, big = files_in_memory(tmp_path, monkeypatch)

    async def scenario() -> None:
        resolver = Resolver(tmp_path, stream_above=100_000)
        files = TftpFiles(FileWork(lambda: resolver, asyncio.get_running_loop()), lambda: None)
        opened = files.open_nowait("s.cfg")
        assert opened is not None and opened.data == small
        streamed = files.open_nowait("fw.bin")
        assert streamed is not None and streamed.data is None
        reader = streamed.reader()
        out = bytearray()
        while (block := reader.read(1468)) is not None:
            out += block
            if len(block) < 1468:
                break
        assert bytes(out) == big
        reader.close()
        files.work.close()

    asyncio.run(scenario())


def test_a_loaded_file_that_grew_is_streamed(tmp_path: Path) -> None:
    # load() hands the core what it can serve: a descriptor becomes a stream with a PrefetchReader.
    (tmp_path / "fw.bin").write_bytes(b"g" * 5000)

    async def scenario() -> object:
        resolver = Resolver(tmp_path, stream_above=1000)
        files = TftpFiles(FileWork(lambda: resolver, asyncio.get_running_loop()), lambda: None)
        got: list[object] = []
        files.load("fw.bin", None, got.append)
        await until(lambda: bool(got))
        reader = got[0].reader()  # type: ignore[attr-defined]
        assert isinstance(reader, PrefetchReader)
        reader.close()
        files.work.close()
        return got[0]

    assert getattr(asyncio.run(scenario()), "size", None) == 5000


def test_partial_page_cache_reads_and_worker_reads_give_every_byte_in_order(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader's own buffer is refilled from the first byte not yet handed out, whatever the page cache answers:
    # a few bytes, nothing (a worker reads instead), or a whole chunk; every block is the file's next bytes.
    data = os.urandom(300_001)
    (tmp_path / "fw.bin").write_bytes(data)
    real = resolver_module.readinto_nowait
    answers = iter([5, None, 3000, 0x7FFFFFFF, None, 1, 1, None] * 50)

    def flaky(fd: int, buf: memoryview, offset: int) -> int | None:
        answer = next(answers, 0x7FFFFFFF)
        if answer is None:
            return None
        return real(fd, buf[:answer], offset)

    monkeypatch.setattr(files_module, "readinto_nowait", flaky)
    woken: list[int] = []

    async def scenario() -> bytes:
        resolver = Resolver(tmp_path, stream_above=1000)
        files = TftpFiles(FileWork(lambda: resolver, asyncio.get_running_loop()), lambda: woken.append(1))
        opened = files.open_nowait("fw.bin")
        assert opened is not None
        reader = opened.reader()
        assert isinstance(reader, PrefetchReader)
        reader._chunk = 20_000  # many refills
        out = bytearray()
        while True:
            seen = len(woken)
            block = reader.read(1428)
            if block is None:
                await until(lambda: len(woken) > seen)  # noqa: B023 (awaited right here, in this iteration)
                continue
            out += block
            if len(block) < 1428:
                break
        assert reader.read(1428) == b""  # and nothing after the end
        reader.close()
        files.work.close()
        return bytes(out)

    assert asyncio.run(scenario()) == data
    assert woken  # some chunks came from the worker
