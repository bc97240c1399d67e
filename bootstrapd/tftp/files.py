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

from bootstrapd.provisioning.resolver import READ_AHEAD, Opened, Refused, readinto_nowait
from bootstrapd.provisioning.work import FileWork
from bootstrapd.tftp.server import OpenedFile

Loaded = Callable[[OpenedFile | Refused], None]


class PrefetchReader:
    """Sequential reads of a streamed file that never wait for the disk; :meth:`read` answers None instead.

    What the kernel has in memory (the page cache: a firmware image the previous phone fetched, or the kernel's own
    read-ahead) is read on the spot, about ``READ_AHEAD`` bytes at a time, without a thread hop; anything else is
    read by a worker thread while the transfer stalls, and ``wake`` is called on the loop once it is in. Reads use
    explicit offsets (``pread``), so the descriptor's position is never shared between the loop and a worker; the
    worker reads a duplicate of the descriptor, so closing the reader at any time is safe.

    The per-block path is a slice of what is in hand (a memoryview, valid until the next ``read``: the transfer
    encodes it at once). Reads from the page cache go into one buffer the reader keeps and reuses, in whole blocks
    from the first byte not yet handed out, so a refill neither allocates, zeroes, nor copies a leftover partial
    block (it is read again with the rest): per 1428-byte block that saved about 3,700 of 42,600 instructions.
    """

    def __init__(self, opened: Opened, work: FileWork, wake: Callable[[], None], chunk: int = READ_AHEAD) -> None:
        assert opened.fd is not None
        self.opened = opened
        self.fd = opened.fd
        self.size: int | None = opened.size
        self._work = work
        self._wake = wake
        self._chunk = chunk
        self._own: bytearray | None = None  # the reused buffer of reads from the page cache
        self._view = memoryview(b"")  # the data in hand: file bytes from offset _at
        self._at = 0
        self._offset = 0  # next byte of _view to hand out
        self._end = 0  # bytes in _view
        self._ahead: tuple[int, bytes] | None = None  # (file offset, data) a worker read, not yet in hand
        self._reading = False
        self._eof = False  # _view ends at the end of the file
        self._error: OSError | None = None
        self._closed = False
        self._wanted = False  # read() answered None: wake() is due when data comes

    def read(self, n: int) -> bytes | memoryview | None:
        start = self._offset
        end = start + n
        if end <= self._end:
            self._offset = end
            return self._view[start:end]
        return self._refill(n)

    def _refill(self, n: int) -> bytes | memoryview | None:
        """Fewer than ``n`` bytes in hand: the last ones at the end of the file, else the next chunk from ``pos``."""
        if self._eof:
            rest = self._view[self._offset:self._end]
            self._offset = self._end
            return rest
        pos = self._at + self._offset
        want = max(n, self._chunk // n * n)
        ahead = self._ahead
        if ahead is not None and ahead[0] == pos:
            self._ahead = None
            data = ahead[1]
            self._take(memoryview(data), pos, len(data), eof=len(data) < want)
            return self.read(n) if self._end >= n else self._refill(n)
        self._ahead = None
        if self._reading:
            self._wanted = True
            return None
        if self._error is not None:
            raise self._error
        if self._own is None or len(self._own) != want:
            self._own = bytearray(want)
        own = memoryview(self._own)
        got = 0
        while got < n:
            more = readinto_nowait(self.fd, own[got:], pos + got)  # OSError: the core ends with read_error
            if more is None:
                self._submit(want, pos)
                if self._error is not None:
                    raise self._error
                self._wanted = True
                return None
            if more == 0:
                break
            got += more
        self._take(own[:got], pos, got, eof=got < n)
        return self.read(n) if got >= n else self._refill(n)

    def _take(self, view: memoryview, at: int, end: int, eof: bool) -> None:
        self._view = view
        self._at = at
        self._offset = 0
        self._end = end
        self._eof = eof

    def _submit(self, size: int, offset: int) -> None:
        self._reading = True
        try:
            future = self._work.read_later(self.fd, size, offset)
        except (OSError, RuntimeError) as exc:  # out of descriptors; the service is stopping
            self._reading = False
            self._error = OSError(str(exc))
            return
        future.add_done_callback(lambda done: self._arrived(offset, done))

    def _arrived(self, offset: int, future: asyncio.Future[bytes]) -> None:
        self._reading = False
        if self._closed:
            return
        error = OSError("the service is stopping") if future.cancelled() else future.exception()
        if error is None:
            self._ahead = (offset, future.result())
        else:
            self._error = error if isinstance(error, OSError) else OSError(str(error))
        if self._wanted:
            self._wanted = False
            self._wake()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._view = memoryview(b"")
        self._own = None
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
