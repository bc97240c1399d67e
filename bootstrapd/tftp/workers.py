"""The daemon's TFTP transfer workers (``[tftp] workers``): started, fed and supervised here.

Each worker is a process (:mod:`bootstrapd.tftp.worker`) with one end of a Unix ``SOCK_SEQPACKET`` pair; the
daemon keeps the other end on its loop. :meth:`TransferWorkers.hand_over` sends a started large download (its
socket and file descriptors, and what the worker needs to build the same transfer) to the worker with the fewest
transfers; the worker's answer, when the transfer is done, comes back to ``finished`` with the transfer's number.
A worker that exits (killed, crashed) loses its transfers: each is finished with outcome ``worker_lost`` (the
phones retry) and the worker is started again, unless it died within :data:`EARLY` seconds of its start twice in
a row, in which case the daemon runs every transfer itself from then on (and logs why). Nothing here holds state
that outlives a transfer: limits, slots, the resolver and the event stream stay in the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bootstrapd.tftp.transfer import ReadTransfer
from bootstrapd.tftp.worker import MAX_MESSAGE, hand_over_message

log = logging.getLogger("bootstrapd.tftp")

READY_TIMEOUT = 15.0  # a worker imports the TFTP core and starts its loop: well under a second on an idle box
EARLY = 5.0  # a worker that exits this soon after its start, twice in a row, is not started again
LOST = "worker_lost"
# How a worker is started: ``sys.executable`` with these arguments and its end of the pair (tests/lab/slowdisk.py
# starts its workers under the same slow-disk shim as the daemon).
WORKER_ARGV = ["-m", "bootstrapd.tftp.worker"]


class _Worker:
    def __init__(self, proc: subprocess.Popen[bytes], conn: socket.socket) -> None:
        self.proc = proc
        self.conn = conn
        self.started = time.monotonic()
        self.transfers: set[int] = set()
        self.ready = False  # it said so once its loop ran: only then is it handed transfers


Finished = Callable[[int, dict[str, Any]], None]


class TransferWorkers:
    def __init__(self, loop: asyncio.AbstractEventLoop, count: int, finished: Finished, spin: float = 0.0) -> None:
        self.loop = loop
        self.count = count
        self.spin = spin  # seconds a worker alone with one lock-step transfer polls for its ACK ([tftp] spin_us)
        self._finished = finished
        self.workers: list[_Worker] = []
        self._number = 0
        self._early: dict[int, int] = {}  # slot -> exits in a row soon after start
        self._stopping = False

    async def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the workers and wait until each is ready (or ``timeout`` passed: the daemon serves meanwhile and
        hands transfers to the ones that are), so that the daemon's readiness means they are."""
        for slot in range(self.count):
            self._spawn(slot)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(w.ready for w in self.workers if w.conn.fileno() >= 0):
            await asyncio.sleep(0.02)
        late = sum(1 for w in self.workers if not w.ready)
        if late:
            log.warning("tftp: %d of %d transfer workers not ready after %.0f s; starting without them", late,
                        self.count, timeout)

    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen([sys.executable, *WORKER_ARGV, str(theirs.fileno())],
                                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            log.warning("tftp: cannot start a transfer worker (%s); the daemon runs those transfers itself", exc)
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        worker = _Worker(proc, ours)
        if slot < len(self.workers):
            self.workers[slot] = worker
        else:
            self.workers.append(worker)
        self.loop.add_reader(ours.fileno(), self._readable, worker)

    @property
    def alive(self) -> int:
        return sum(1 for w in self.workers if w.ready and w.conn.fileno() >= 0)

    def hand_over(self, sock: socket.socket, transfer: ReadTransfer, local: tuple[Any, ...], fd: int,
                  size: int) -> int | None:
        """Send a started download to the least busy worker; its number (for ``finished``), or None: no worker
        took it (none alive, its queue full) and the caller runs it itself."""
        candidates = [w for w in self.workers if w.ready and w.conn.fileno() >= 0]
        if not candidates:
            return None
        worker = min(candidates, key=lambda w: len(w.transfers))
        self._number += 1
        number = self._number
        message = hand_over_message(number, transfer, local, size, self.spin)
        try:
            socket.send_fds(worker.conn, [message], [sock.fileno(), fd])
        except OSError:
            return None  # (BlockingIOError: the worker is behind; anything else: it is going away)
        worker.transfers.add(number)
        return number

    def _readable(self, worker: _Worker) -> None:
        while True:
            try:
                data = worker.conn.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._lost(worker)
                return
            try:
                reply = json.loads(data)
                if reply.get("ready"):
                    worker.ready = True
                    continue
                number = int(reply["id"])
            except (ValueError, KeyError, TypeError, AttributeError):
                log.error("tftp: a transfer worker sent %r", data[:200])
                continue
            if number in worker.transfers:
                worker.transfers.discard(number)
                self._finished(number, reply)

    def _lost(self, worker: _Worker) -> None:
        self.loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        lost = sorted(worker.transfers)
        worker.transfers.clear()
        for number in lost:
            self._finished(number, {"outcome": LOST, "bytes": 0, "retransmits": 0, "counts": {}})
        with contextlib.suppress(OSError):
            worker.proc.kill()
        self._reap(worker.proc)
        if self._stopping:
            return
        slot = self.workers.index(worker)
        early = time.monotonic() - worker.started < EARLY
        self._early[slot] = self._early.get(slot, 0) + 1 if early else 0
        if self._early[slot] >= 2:
            log.error("tftp: transfer worker %d exited twice right after its start (status %s); not started again: "
                      "the daemon runs its share of the large transfers itself", slot, worker.proc.returncode)
            return
        log.warning("tftp: transfer worker %d exited (status %s) with %d transfers; starting it again", slot,
                    worker.proc.returncode, len(lost))
        self._spawn(slot)

    def _reap(self, proc: subprocess.Popen[bytes], tries: int = 50) -> None:
        # Never wait on the loop: poll now and again until the process is gone (it was killed, it goes at once).
        if proc.poll() is None and tries:
            self.loop.call_later(0.1, self._reap, proc, tries - 1)

    async def stop(self) -> None:
        """Close every pair: the workers end their transfers and exit; wait for them, a few seconds at most."""
        self._stopping = True
        for worker in self.workers:
            if worker.conn.fileno() >= 0:
                self.loop.remove_reader(worker.conn.fileno())
                worker.conn.close()
        deadline = time.monotonic() + 5.0
        for worker in self.workers:
            while worker.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if worker.proc.poll() is None:
                worker.proc.kill()
                await asyncio.sleep(0.05)
                worker.proc.poll()
        self.workers.clear()
