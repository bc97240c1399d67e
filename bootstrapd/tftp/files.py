"""TFTP's file work, kept off the event loop that DHCP and PnP share (issue #8 item 16).

A slow disk (a busy SD card, a network mount that stopped answering) must stall only the transfers waiting for it.
So the loop does only what the kernel answers from memory: resolving the name, ``open`` and ``fstat``, the
hot-file cache, and reads of data the kernel holds in its page cache (``RWF_NOWAIT``: such a read fails rather
than wait). Everything that would wait for the disk runs in worker threads:

- a small file neither in the hot cache nor in the page cache is read whole in a worker (:meth:`FileWork.load`),
  then cached; requests for the same name arriving meanwhile wait for that one read instead of starting their own;
- a large file is streamed through :class:`PrefetchReader`: chunks in the page cache are read on the spot, others
  in a worker while the transfer stalls (``read`` answers ``None``; the transfer is resumed when the data is in);
- an upload is stored (written, fsynced, renamed) in a worker of its own (:meth:`FileWork.store`), one at a time, so
  the upload folder's accounting in the resolver never runs twice at once.

Results come back to the loop as callbacks (``loop.run_in_executor``); nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from bootstrapd.provisioning.resolver import READ_AHEAD, Opened, Reason, Refused, read_nowait
from bootstrapd.tftp.server import OpenedFile, Sink

log = logging.getLogger("bootstrapd.tftp")

READ_WORKERS = 4

Loaded = Callable[[OpenedFile | Refused], None]


class Tree(Protocol):
    """What TFTP serves from: the resolver, or the resolver behind the provisioning overlays (ServedTree)."""

    def open(self, name: str) -> Opened: ...

    def open_nowait(self, name: str) -> Opened | None: ...

    def upload_target(self, name: str) -> str: ...

    def store_upload(self, name: str, data: bytes) -> str: ...


def _read_chunk(fd: int, size: int, offset: int) -> bytes:
    """In a worker thread: ``size`` bytes at ``offset``, waiting for the disk (fewer only at the end of the file)."""
    chunks = []
    want = size
    while want > 0:
        more = os.pread(fd, want, offset)
        if not more:
            break
        chunks.append(more)
        want -= len(more)
        offset += len(more)
    return b"".join(chunks)


class PrefetchReader:
    """Sequential reads of a streamed file that never wait for the disk; :meth:`read` answers None instead.

    What the kernel has in memory (the page cache: a firmware image the previous phone fetched, or the kernel's own
    read-ahead) is read on the spot, ``READ_AHEAD`` bytes at a time, without a thread hop; anything else is read by
    a worker thread while the transfer stalls, and ``wake`` is called on the loop once it is in. Reads use explicit
    offsets (``pread``), so the descriptor's position is never shared between the loop and a worker. Closing while a
    worker reads closes the descriptor when that read returns, so the worker never reads a number reused meanwhile.
    """

    def __init__(self, opened: Opened, work: FileWork, chunk: int = READ_AHEAD) -> None:
        assert opened.fd is not None
        self.opened = opened
        self.fd = opened.fd
        self.size: int | None = opened.size
        self._work = work
        self._chunk = chunk
        self._buf = b""
        self._offset = 0  # in _buf
        self._pos = 0  # in the file: where the next read starts
        self._ahead: bytes | None = None  # what a worker read, not yet in _buf
        self._reading = False
        self._eof = False
        self._error: OSError | None = None
        self._closed = False
        self._wanted = False  # read() answered None: wake() is due when data comes

    def read(self, n: int) -> bytes | memoryview | None:
        while len(self._buf) - self._offset < n and not self._eof:
            more: bytes | None
            if self._ahead is not None:
                more = self._ahead
                self._ahead = None
            elif self._reading:
                break
            elif self._error is not None:
                raise self._error
            else:
                more = read_nowait(self.fd, self._chunk, self._pos)  # OSError: the core ends with read_error
                if more is None:
                    self._submit()
                    break
            self._pos += len(more)
            if len(more) == 0:
                self._eof = True
            self._buf = self._buf[self._offset:] + more
            self._offset = 0
        if len(self._buf) - self._offset < n and not self._eof:
            self._wanted = True
            return None
        chunk = memoryview(self._buf)[self._offset:self._offset + n]
        self._offset += len(chunk)
        return chunk

    def _submit(self) -> None:
        self._reading = True
        future = self._work.loop.run_in_executor(self._work.readers, _read_chunk, self.fd, self._chunk, self._pos)
        future.add_done_callback(self._arrived)

    def _arrived(self, future: asyncio.Future[bytes]) -> None:
        self._reading = False
        if self._closed:
            self.opened.close()
            return
        try:
            self._ahead = future.result()
        except OSError as exc:
            self._error = exc
        except asyncio.CancelledError:  # the service is stopping
            self._error = OSError("the service is stopping")
        if self._wanted:
            self._wanted = False
            self._work.wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buf = b""
        self._ahead = None
        if not self._reading:
            self.opened.close()


class _Streamed:
    """A large file as the TFTP core sees it: its size, and a reader that reads ahead off the loop."""

    data: bytes | None = None

    def __init__(self, opened: Opened, work: FileWork) -> None:
        self.opened = opened
        self.size = opened.size
        self._work = work

    def reader(self) -> PrefetchReader:
        return PrefetchReader(self.opened, self._work)


class FileWork:
    """The files, as the TFTP core uses them (:class:`bootstrapd.tftp.server.Files`), plus the worker threads."""

    def __init__(self, tree: Tree, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        self.tree = tree
        self.loop = loop
        self.wake = wake  # a streamed file has data for a stalled transfer
        self.readers = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="tftp-read")
        self.uploads = ThreadPoolExecutor(1, thread_name_prefix="tftp-upload")
        self._loading: dict[str, list[Loaded]] = {}  # name being read -> who waits for it

    # -- the core's Files protocol -------------------------------------------------------------------------------

    def open_nowait(self, name: str) -> Opened | _Streamed | None:
        opened = self.tree.open_nowait(name)
        if opened is not None and opened.fd is not None:
            return _Streamed(opened, self)
        return opened

    def upload_target(self, name: str) -> str:
        return self.tree.upload_target(name)

    def store_upload(self, name: str, data: bytes) -> str:
        return self.tree.store_upload(name, data)

    # -- work in the threads -------------------------------------------------------------------------------------

    def load(self, name: str, done: Loaded) -> None:
        """Read ``name`` into the cache in a worker; ``done`` gets the opened file (or the refusal) on the loop."""
        waiting = self._loading.get(name)
        if waiting is not None:
            waiting.append(done)
            return
        self._loading[name] = [done]
        self.loop.run_in_executor(self.readers, self.tree.open, name).add_done_callback(
            lambda future: self._loaded(name, future))

    def _loaded(self, name: str, future: asyncio.Future[Opened]) -> None:
        first, *others = self._loading.pop(name)
        outcome = self._outcome(future)
        first(outcome)
        for done in others:
            if not isinstance(outcome, _Streamed):
                done(outcome)  # bytes in memory (or a refusal): the same for everyone who asked meanwhile
                continue
            # It grew into a streamed file: a descriptor cannot be shared, each waiter opens the file for itself.
            try:
                opened = self.open_nowait(name)
            except Refused as exc:
                done(exc)
                continue
            if opened is None:
                self.load(name, done)
            else:
                done(opened)

    def _outcome(self, future: asyncio.Future[Opened]) -> OpenedFile | Refused:
        if future.cancelled():
            return Refused(Reason.DENIED, "the service is stopping")
        error = future.exception()
        if isinstance(error, Refused):
            return error
        if error is not None:
            log.warning("tftp: reading a file failed: %s", error)
            return Refused(Reason.DENIED, str(error))
        opened = future.result()
        # It grew past the cache's size limit since open_nowait(): stream it like any large file.
        return _Streamed(opened, self) if opened.fd is not None else opened

    def store(self, sink: Sink, data: bytes, done: Callable[[BaseException | None], None]) -> None:
        """Store an upload in the upload worker; ``done`` gets None or the error, on the loop."""
        def stored(future: asyncio.Future[None]) -> None:
            done(OSError("the service is stopping") if future.cancelled() else future.exception())

        self.loop.run_in_executor(self.uploads, sink.store, data).add_done_callback(stored)

    def close(self) -> None:
        # Work in flight finishes in its thread (an upload being written is completed, not torn); nothing new starts.
        self.readers.shutdown(wait=False, cancel_futures=True)
        self.uploads.shutdown(wait=False)
