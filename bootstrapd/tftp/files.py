"""The files as the TFTP core asks for them, over the daemon's file work off the event loop (issue #8 item 16).

The core is synchronous: it asks :meth:`TftpFiles.open_nowait` and gets cached bytes, a stream, or None (the
request becomes :class:`bootstrapd.tftp.server.Pending` and the adapter :meth:`TftpFiles.load`\\ s it in a worker,
see :mod:`bootstrapd.provisioning.work`). A streamed (large) file's reader is a :class:`PrefetchReader`, whose
``read`` answers None instead of waiting: the transfer stalls and is resumed (``wake``) when the worker's chunk is
in. Uploads go to the same upload worker as HTTP's and FTP's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bootstrapd.provisioning.resolver import READ_AHEAD, Opened, Refused, read_nowait
from bootstrapd.provisioning.work import FileWork
from bootstrapd.tftp.server import OpenedFile

Loaded = Callable[[OpenedFile | Refused], None]


class PrefetchReader:
    """Sequential reads of a streamed file that never wait for the disk; :meth:`read` answers None instead.

    What the kernel has in memory (the page cache: a firmware image the previous phone fetched, or the kernel's own
    read-ahead) is read on the spot, ``READ_AHEAD`` bytes at a time, without a thread hop; anything else is read by
    a worker thread while the transfer stalls, and ``wake`` is called on the loop once it is in. Reads use explicit
    offsets (``pread``), so the descriptor's position is never shared between the loop and a worker; the worker
    reads a duplicate of the descriptor, so closing the reader at any time is safe.
    """

    def __init__(self, opened: Opened, work: FileWork, wake: Callable[[], None], chunk: int = READ_AHEAD) -> None:
        assert opened.fd is not None
        self.opened = opened
        self.fd = opened.fd
        self.size: int | None = opened.size
        self._work = work
        self._wake = wake
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
        try:
            future = self._work.read_later(self.fd, self._chunk, self._pos)
        except (OSError, RuntimeError) as exc:  # out of descriptors; the service is stopping
            self._reading = False
            self._error = OSError(str(exc))
            return
        future.add_done_callback(self._arrived)

    def _arrived(self, future: asyncio.Future[bytes]) -> None:
        self._reading = False
        if self._closed:
            return
        error = OSError("the service is stopping") if future.cancelled() else future.exception()
        if error is None:
            self._ahead = future.result()
        else:
            self._error = error if isinstance(error, OSError) else OSError(str(error))
        if self._wanted:
            self._wanted = False
            self._wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buf = b""
        self._ahead = None
        self.opened.close()


class _Streamed:
    """A large file as the TFTP core sees it: its size, and a reader that reads ahead off the loop."""

    data: bytes | None = None

    def __init__(self, opened: Opened, files: TftpFiles) -> None:
        self.opened = opened
        self.size = opened.size
        self._files = files

    def reader(self) -> PrefetchReader:
        return PrefetchReader(self.opened, self._files.work, self._files.wake)


class TftpFiles:
    """The core's :class:`bootstrapd.tftp.server.Files` over :class:`FileWork`."""

    def __init__(self, work: FileWork, wake: Callable[[], None]) -> None:
        self.work = work
        self.wake = wake  # a streamed file has data for a stalled transfer

    def _wrap(self, opened: Opened) -> Opened | _Streamed:
        return _Streamed(opened, self) if opened.fd is not None else opened

    def open_nowait(self, name: str, client: str | None = None) -> Opened | _Streamed | None:
        opened = self.work.open_nowait(name, client)
        return None if opened is None else self._wrap(opened)

    def load(self, name: str, client: str | None, done: Loaded) -> None:
        """Read ``name`` in a worker; ``done`` gets the opened file (or the refusal) on the loop."""
        self.work.load(name, client, None, lambda got: done(got if isinstance(got, Refused) else self._wrap(got)))

    def upload_target(self, name: str, client: str | None = None) -> str:
        return self.work.resolver().upload_target(name, client)

    def store_upload(self, name: str, data: bytes, client: str | None = None) -> str:
        return self.work.resolver().store_upload(name, data, client)
