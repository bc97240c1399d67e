"""A TFTP transfer worker: a process of the daemon's that runs large downloads handed to it (``[tftp] workers``).

One thread of Python serves every transfer of the daemon's loop; a firmware storm (a hundred phones fetching tens
of MB each, lock-step) wants more than one core. The daemon decides everything a request needs (limits, the
resolver and its access rules, the options) and starts the transfer as usual; a large streamed download is then
handed to a worker over a Unix socket pair (:mod:`bootstrapd.tftp.workers`): the transfer's own UDP socket and the
file's descriptor (``SCM_RIGHTS``), and the client, the file's size and the negotiated options as JSON. The worker
builds the same transfer core over the same file, runs it with the same socket code as the daemon
(:class:`bootstrapd.tftp.sessions.Sessions`, file reads off its loop through its own
:class:`bootstrapd.provisioning.work.FileWork`) and answers, when it is done, with its outcome, bytes,
retransmissions and the counters it kept. The daemon emits the transfer's one event and frees its slots: state
stays in the daemon; a worker holds only the transfers in flight, opens nothing and needs no privilege.

The worker ends when the daemon closes its end of the pair (or dies: the kernel closes it), ending its transfers;
SIGINT, SIGHUP and SIGTERM are the daemon's to handle, not the worker's (SIGKILL still ends it).

    python -m bootstrapd.tftp.worker FD   (FD: this worker's end of the socket pair; started by the daemon only)
"""

from __future__ import annotations

import array
import asyncio
import json
import signal
import socket
import sys
from collections import Counter
from typing import Any

from bootstrapd import cpus
from bootstrapd.provisioning.resolver import Opened, Resolver
from bootstrapd.provisioning.work import FileWork
from bootstrapd.tftp.files import PrefetchReader
from bootstrapd.tftp.server import Started
from bootstrapd.tftp.sessions import Session, Sessions
from bootstrapd.tftp.transfer import Limits, Negotiated, ReadTransfer, Source

MAX_MESSAGE = 1 << 16  # a hand-over: the client, a file name of at most 256 characters, options


def hand_over_message(number: int, transfer: ReadTransfer, local: tuple[Any, ...], size: int,
                      spin: float = 0.0) -> bytes:
    """What the daemon sends with the two descriptors; :func:`transfer_from` reads it back."""
    negotiated = transfer.negotiated
    limits = transfer.limits
    return json.dumps({
        "id": number, "client": list(transfer.client), "local": list(local), "file": transfer.filename,
        "size": size, "spin": spin,
        "negotiated": {"accepted": negotiated.accepted, "blksize": negotiated.blksize,
                       "windowsize": negotiated.windowsize, "timeout": negotiated.timeout},
        "limits": {"blksize_max": limits.blksize_max, "windowsize_max": limits.windowsize_max,
                   "timeout": limits.timeout, "retries": limits.retries,
                   "first_ack_retries": limits.first_ack_retries, "session_lifetime": limits.session_lifetime},
    }).encode()


def transfer_from(message: dict[str, Any], source: Source, now: float) -> ReadTransfer:
    """The transfer a :func:`hand_over_message` describes, over ``source`` (the same file), started at ``now``."""
    return ReadTransfer(tuple(message["client"]), message["file"], source, Limits(**message["limits"]),
                        Negotiated(**message["negotiated"]), now)


def _recv_fds(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it, without waiting (Python 3.11's ``socket.recv_fds``
    drops its ``flags`` argument, so it would block on this blocking socket)."""
    fds = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(MAX_MESSAGE, socket.CMSG_LEN(2 * fds.itemsize), socket.MSG_DONTWAIT)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _no_resolver() -> Resolver:
    raise RuntimeError("a transfer worker opens no file of its own")


class Worker:
    """The transfers handed to this process, on its event loop."""

    def __init__(self, conn: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn  # blocking: a send waits for the daemon; reads are MSG_DONTWAIT
        self.loop = loop
        self.work = FileWork(_no_resolver, loop)
        self.sessions = Sessions(loop, self._count, self._ended)
        self.counts: Counter[str] = Counter()
        self.done = asyncio.Event()

    def _count(self, name: str) -> None:
        self.counts[name] += 1

    def start(self) -> None:
        self.loop.add_reader(self.conn.fileno(), self._incoming)
        self.conn.sendall(b'{"ready": true}')  # the daemon hands transfers only to a worker that said this

    def _incoming(self) -> None:
        while True:
            try:
                data, fds = _recv_fds(self.conn)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data, fds = b"", []
            if not data:  # the daemon closed its end (stopping, or gone)
                for fd in fds:
                    socket.close(fd)
                self.loop.remove_reader(self.conn.fileno())
                self.done.set()
                return
            self._begin(data, fds)

    def _begin(self, data: bytes, fds: list[int]) -> None:
        if len(fds) != 2:
            for fd in fds:
                socket.close(fd)
            return
        message = json.loads(data)
        now = self.loop.time()
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        opened = Opened(path="", size=int(message["size"]), data=None, fd=fds[1])
        transfer = transfer_from(message, PrefetchReader(opened, self.work, self.sessions.wake), now)
        started = Started(transfer, transfer.start(now), large=True)
        self.sessions.spin = max(0.0, float(message.get("spin", 0.0)))
        self.sessions.begin(sock, started, tuple(message["local"]), note=message["id"])

    def _ended(self, session: Session) -> None:
        completion = session.started.transfer.completion
        assert completion is not None
        reply = {"id": session.note, "outcome": completion.outcome, "bytes": completion.bytes,
                 "retransmits": completion.retransmits, "counts": dict(self.counts)}
        self.counts.clear()
        try:
            self.conn.sendall(json.dumps(reply).encode())
        except OSError:
            pass  # the daemon is gone: nobody to tell

    def stop(self) -> None:
        self.sessions.close_all()
        self.work.close()


async def _serve(conn: socket.socket) -> None:
    worker = Worker(conn, asyncio.get_running_loop())
    worker.start()
    try:
        await worker.done.wait()
    finally:
        worker.stop()


def main(argv: list[str]) -> int:
    # Its life is the socket pair's: a stop of the whole process group (Ctrl-C, systemd's SIGTERM to the unit's
    # processes) is the daemon's to handle, which then closes the pair; a worker gone first would be started again.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    cpus.release()  # started from the pinned event loop (cpus.py): a worker's transfers may run on any CPU
    conn = socket.socket(fileno=int(argv[1]))
    conn.setblocking(True)
    asyncio.run(_serve(conn))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
