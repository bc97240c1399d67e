"""The file services' disk work, kept off the event loop that DHCP, PnP, TFTP, HTTP and FTP share.

A slow disk (a busy SD card, a network mount that stopped answering) must stall only the requests waiting for it.
So the loop does only what the kernel answers from memory: the resolver's whole pipeline up to the file's bytes
(names, rules, ``open`` and ``fstat``, overlays, the hot cache) and reads of data the kernel holds in its page
cache (``RWF_NOWAIT``: such a read fails rather than wait), through :meth:`Resolver.open_nowait`. Everything that
would wait for the disk runs in worker threads, here, for every protocol:

- a small file neither in the hot cache nor in the page cache is opened and read whole by :meth:`Resolver.open` in
  a worker (:meth:`FileWork.load`, or ``await`` :meth:`FileWork.open`), which puts it in the hot cache; requests
  for the same name arriving meanwhile wait for that one read, then each passes the pipeline again on the loop
  (its own rules, the bytes from the cache);
- a streamed (large) file is read a chunk at a time: from the page cache on the spot, else in a worker
  (:meth:`FileWork.read_later`; TFTP's :class:`bootstrapd.tftp.files.PrefetchReader`, HTTP and FTP bodies through
  :meth:`FileWork.send`);
- an upload is stored (written, fsynced, renamed) in the one upload worker (:meth:`FileWork.store`,
  :meth:`FileWork.store_upload`).

Results come back to the loop as callbacks or awaited futures; nothing here blocks the loop. One instance serves
the whole daemon (:func:`file_work`), over whichever resolver is in force (a reload builds a new one).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from bootstrapd import cpus
from bootstrapd.provisioning.resolver import READ_AHEAD, Opened, Reason, Refused, Resolver, read_chunk, read_nowait

if TYPE_CHECKING:
    from bootstrapd.service import Context

__all__ = ["FileWork", "file_work", "read_chunk", "resolver_of"]

log = logging.getLogger("bootstrapd.files")

READ_WORKERS = 4

Loaded = Callable[[Opened | Refused], None]


def _read_own(fd: int, size: int, offset: int) -> bytes:
    try:
        return read_chunk(fd, size, offset)
    finally:
        os.close(fd)


def _close_unread(fd: int) -> Callable[[Future[bytes]], None]:
    def done(future: Future[bytes]) -> None:
        if future.cancelled():  # never ran (the service is stopping): its descriptor is still ours to close
            os.close(fd)

    return done


class FileWork:
    """The resolver's disk work in worker threads, for the services on the event loop."""

    def __init__(self, resolver: Callable[[], Resolver], loop: asyncio.AbstractEventLoop) -> None:
        self.resolver = resolver  # the resolver in force (a reload replaces it)
        self.loop = loop
        # Readers and the upload writer work outside the interpreter lock: not on the event loop's CPU (cpus.py).
        self.readers = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="file-read", initializer=cpus.release)
        self.uploads = ThreadPoolExecutor(1, thread_name_prefix="file-upload", initializer=cpus.release)
        self._loading: dict[str, list[tuple[str | None, str | None, Loaded]]] = {}  # name -> who waits besides
        self.closed = False

    # -- opening ---------------------------------------------------------------------------------------------

    def open_nowait(self, name: str, client: str | None = None, user: str | None = None) -> Opened | None:
        """:meth:`Resolver.open_nowait` of the resolver in force: None when the file must be :meth:`load`\\ ed."""
        return self.resolver().open_nowait(name, client, user)

    def load(self, name: str, client: str | None, user: str | None, done: Loaded) -> None:
        """Open ``name`` for ``client``/``user`` in a worker (after :meth:`open_nowait` answered None); ``done``
        gets the opened file or the refusal, on the loop."""
        if self.closed:
            done(Refused(Reason.DENIED, "the service is stopping"))
            return
        waiting = self._loading.get(name)
        if waiting is not None:
            waiting.append((client, user, done))
            return
        self._loading[name] = []
        future = self.loop.run_in_executor(self.readers, self.resolver().open, name, client, user)
        future.add_done_callback(lambda f: self._loaded(name, f, done))

    def _loaded(self, name: str, future: asyncio.Future[Opened], done: Loaded) -> None:
        others = self._loading.pop(name, [])
        done(self._outcome(future))
        for client, user, waiter in others:
            # The worker's read filled the cache; each request still passes every rule itself (another client,
            # another user), on the loop, and only the bytes are shared.
            try:
                opened = self.open_nowait(name, client, user)
            except Refused as exc:
                waiter(exc)
                continue
            if opened is None:  # not cacheable and gone from the page cache again: read it for this one too
                self.load(name, client, user, waiter)
            else:
                waiter(opened)

    @staticmethod
    def _outcome(future: asyncio.Future[Opened]) -> Opened | Refused:
        if future.cancelled():
            return Refused(Reason.DENIED, "the service is stopping")
        error = future.exception()
        if isinstance(error, Refused):
            return error
        if error is not None:
            log.warning("files: reading a file failed: %s", error)
            return Refused(Reason.DENIED, str(error))
        return future.result()

    async def open(self, name: str, client: str | None = None, user: str | None = None) -> Opened:
        """The file a request gets, without blocking the loop; raises :class:`Refused`."""
        opened = self.open_nowait(name, client, user)
        if opened is not None:
            return opened
        arrived: asyncio.Future[Opened | Refused] = self.loop.create_future()

        def done(result: Opened | Refused) -> None:
            if not arrived.done():
                arrived.set_result(result)
            elif isinstance(result, Opened):
                result.close()  # the request went away meanwhile (its task was cancelled)

        self.load(name, client, user, done)
        result = await arrived
        if isinstance(result, Refused):
            raise result
        return result

    # -- reading streamed files ------------------------------------------------------------------------------

    def read_later(self, fd: int, size: int, offset: int) -> asyncio.Future[bytes]:
        """``size`` bytes at ``offset`` (fewer only at the end), read by a worker. The worker reads a duplicate of
        the descriptor and closes it, so the caller may close ``fd`` at any time: its number, reused by the next
        open, is never read by a read still in flight."""
        own = os.dup(fd)
        try:
            job = self.readers.submit(_read_own, own, size, offset)
        except BaseException:
            os.close(own)
            raise
        job.add_done_callback(_close_unread(own))
        return asyncio.wrap_future(job, loop=self.loop)

    async def send(self, fd: int, offset: int, count: int, write: Callable[[bytes], Awaitable[None]]) -> None:
        """``count`` bytes of a descriptor from ``offset`` to ``write`` (a flow-controlled stream write), in chunks:
        what the page cache holds on the spot, the rest read by a worker meanwhile the loop goes on."""
        end = offset + count
        while offset < end:
            want = min(READ_AHEAD, end - offset)
            chunk = read_nowait(fd, want, offset)
            if not chunk:  # None: not in memory; b"": the end, earlier than expected (the worker tells for sure)
                chunk = await self.read_later(fd, want, offset)
            if not chunk:
                raise OSError("file shrank while it was being sent")
            await write(chunk)
            offset += len(chunk)

    # -- uploads ---------------------------------------------------------------------------------------------

    def store(self, store: Callable[[bytes], object], data: bytes,
              done: Callable[[BaseException | None], None]) -> None:
        """``store(data)`` in the upload worker; ``done`` gets None or the error, on the loop."""
        def stored(future: asyncio.Future[object]) -> None:
            done(OSError("the service is stopping") if future.cancelled() else future.exception())

        if self.closed:
            done(OSError("the service is stopping"))
            return
        self.loop.run_in_executor(self.uploads, store, data).add_done_callback(stored)

    async def store_upload(self, name: str, data: bytes, client: str | None = None, user: str | None = None) -> str:
        """:meth:`Resolver.store_upload` (every rule again, then written, fsynced and renamed) in the upload
        worker; raises :class:`Refused` or OSError."""
        resolver = self.resolver()
        return await self.loop.run_in_executor(self.uploads, resolver.store_upload, name, data, client, user)

    def close(self) -> None:
        # Work in flight finishes in its thread (an upload being written is completed, not torn); nothing new starts.
        self.closed = True
        self.readers.shutdown(wait=False, cancel_futures=True)
        self.uploads.shutdown(wait=False)


def resolver_of(ctx: Context) -> Resolver:
    """The resolver in force: the daemon's (built before the services, again on reload)."""
    if ctx.files is None:  # services run without the daemon
        from bootstrapd.provisioning.files import build_resolver

        ctx.files = build_resolver(ctx.settings, ctx.owners)
    return ctx.files


def file_work(ctx: Context) -> FileWork:
    """The daemon's one :class:`FileWork` (call on the running loop): TFTP, HTTP and FTP share its threads."""
    if ctx.work is None:
        ctx.work = FileWork(lambda: resolver_of(ctx), asyncio.get_running_loop())
    return ctx.work
