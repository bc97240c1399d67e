"""A streamed file's bytes from the page cache to a plain TCP socket: ``sendfile``, with the disk off the loop.

``loop.sendfile`` (what aiohttp's own FileResponse uses) calls ``os.sendfile`` on the event loop, so a page not in
memory stalls every service on it while the disk answers; our copy path (read a chunk, write it) keeps the disk off
the loop but copies every byte twice through Python. Here a worker thread of :class:`FileWork` calls ``os.sendfile``
on the connection's socket, which asyncio keeps non-blocking: the kernel moves what the socket buffer takes, straight
from the page cache (reading the disk in the worker if it must), and answers ``EAGAIN`` when the buffer is full
instead of waiting for the client. The worker waits a few milliseconds for a fast reader to make room; for a slow
one the loop waits (holding no thread) and hands the next part to a worker. No byte passes through Python.

FTP's data connections use the same path. The socket is used beside its transport, so: everything the transport
holds (the response head, a multipart prefix) is flushed before ``sendfile`` starts; the worker gets its own
duplicates of the socket and file descriptors, so a connection closed meanwhile (its numbers reused by the next
accept or open) never receives a stranger's bytes; and the loop watches writability on a duplicate too (asyncio does
not let a second watcher on the transport's own descriptor). TLS cannot use this (the kernel does not encrypt); nor
can a transport without a socket.

Every wait for the client to take more bytes is bounded by ``send_timeout``: a client that stops reading is closed
(:class:`SendTimeout`).
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
from concurrent.futures import Executor, Future

SOCKET_SHARE = 4 << 20  # bytes one worker call may move at most, so one download does not hold a worker long
PATIENCE_MS = 20  # how long a worker waits for a full socket to take more before handing the wait to the loop


class SendTimeout(TimeoutError):
    """The client took no byte for ``send_timeout`` seconds."""


def socket_of(transport: asyncio.BaseTransport | None) -> int | None:
    """The descriptor of a plain TCP connection's socket, or None (TLS, gone, not a socket)."""
    if transport is None or transport.is_closing() or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    fd = sock.fileno()
    return fd if fd >= 0 else None


def _sendfile_own(sock: int, fd: int, offset: int, count: int) -> int:
    """Up to ``count`` bytes of ``fd`` at ``offset`` to ``sock``, until the socket stays full for ``PATIENCE``;
    closes both descriptors (the caller's duplicates). Raises EOFError when the file ends early."""
    try:
        sent = 0
        writable = select.poll()
        writable.register(sock, select.POLLOUT)
        while sent < count:
            try:
                n = os.sendfile(sock, fd, offset + sent, count - sent)
            except BlockingIOError:
                # A client reading at full speed empties the buffer within moments: wait here rather than go back
                # to the loop and be handed the next part (two thread switches per buffer, costly on a busy box).
                if not writable.poll(PATIENCE_MS):
                    break  # a slow reader: the loop waits for it, holding no worker
                continue
            if n == 0:
                raise EOFError("file shrank while it was being sent")
            sent += n
        return sent
    finally:
        os.close(sock)
        os.close(fd)


def _close_unsent(sock: int, fd: int) -> object:
    def done(future: Future[int]) -> None:
        if future.cancelled():  # never ran: its duplicates are still ours to close
            os.close(sock)
            os.close(fd)

    return done


class SocketSender:
    """Sends ranges of files on one plain-TCP connection; :meth:`close` when the response is done."""

    def __init__(self, transport: asyncio.Transport, sock: int, executor: Executor, send_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.sock = sock
        self.watch = os.dup(sock)  # the loop's own handle for writability
        self.executor = executor
        self.send_timeout = send_timeout

    async def send(self, fd: int, offset: int, count: int) -> int:
        """``count`` bytes of ``fd`` from ``offset``; the bytes sent. Raises SendTimeout, EOFError, OSError."""
        await self._flushed()
        end = offset + count
        sent_total = 0
        while offset < end:
            if self.transport.is_closing():
                raise ConnectionResetError("the connection closed")
            sock, own = os.dup(self.sock), os.dup(fd)
            try:
                job = self.executor.submit(_sendfile_own, sock, own, offset, min(end - offset, SOCKET_SHARE))
            except BaseException as exc:
                os.close(sock)
                os.close(own)
                if isinstance(exc, RuntimeError):  # the executor is shut down: the daemon is stopping
                    raise ConnectionResetError("the service is stopping") from None
                raise
            job.add_done_callback(_close_unsent(sock, own))  # type: ignore[arg-type]
            sent = await asyncio.wrap_future(job, loop=self.loop)
            offset += sent
            sent_total += sent
            if offset < end and sent < SOCKET_SHARE:
                await self._writable()  # the socket is full: the client has to read before more goes
        return sent_total

    async def _flushed(self) -> None:
        """Until the transport has written everything it holds to the socket."""
        while self.transport.get_write_buffer_size():
            await self._writable()
            await asyncio.sleep(0)  # the transport's own writer, woken by the same readiness, goes first

    async def _writable(self) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_writer(self.watch, wake)
        try:
            async with asyncio.timeout(self.send_timeout):
                await ready
        except TimeoutError:
            raise SendTimeout(f"the client took nothing for {self.send_timeout:g} s") from None
        finally:
            self.loop.remove_writer(self.watch)

    def close(self) -> None:
        os.close(self.watch)
