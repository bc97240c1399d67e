"""The transfers' own sockets and timers, for the daemon's TFTP service and for its transfer workers alike.

One :class:`Sessions` runs transfers that have started (a :class:`bootstrapd.tftp.server.Started` and the
ephemeral socket it answers from) on one event loop: it reads each socket, hands the datagrams to the transfer's
core, sends what the core answers, keeps one timer per transfer and, once a transfer is done, closes its socket
and tells its owner (``ended``). The daemon's service (:mod:`bootstrapd.tftp.adapter`) runs one, a transfer worker
process (:mod:`bootstrapd.tftp.worker`) another: there is one copy of this code path.

- Transfer sockets are read with ``loop.add_reader`` (no protocol object per transfer) and written with plain
  ``sendto``; a full send buffer drops the datagram and the retransmission timer recovers it.
- One ``call_at`` timer per transfer, re-armed only when the deadline moves earlier: a timer that fires early finds
  nothing due and is set again for the real deadline, so an ACK costs no timer churn.
- A window of full-size blocks goes out in one ``sendmsg`` with Linux UDP GSO (``UDP_SEGMENT``) where the kernel
  accepts it, else one ``sendto`` per block.
- A streamed transfer that ran ahead of its file's reads stalls and is resumed (:meth:`Sessions.wake`) when data
  comes; an upload's finished file goes to the owner's ``store`` and its final ACK leaves from :meth:`stored`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from bootstrapd.errors import ProtocolError
from bootstrapd.provisioning.resolver import Refused
from bootstrapd.tftp.server import Started
from bootstrapd.tftp.transfer import ReadTransfer, WriteTransfer

log = logging.getLogger("bootstrapd.tftp")

Address = tuple[Any, ...]
SOL_UDP = 17
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
# What a download's socket reads per datagram: an ACK (4 bytes), or an ERROR whose message is cut after 475 bytes
# (the codec reads an ERROR without its NUL). With CPython's bytes header that is 512 bytes, the most its own
# small-object allocator serves; reading each ACK into a 64 KB buffer went to malloc (and malloc_consolidate) and
# back, about 1,000 of a lock-step block's 30,000 instructions. An upload's socket reads whole DATA blocks.
READ_BUFSIZE = 512 - 33
WRITE_BUFSIZE = 65536


class Session:
    __slots__ = ("backoff", "bufsize", "gso", "local", "note", "skip", "sock", "spin_backoff", "spin_skip", "started",
                 "timer", "timer_at")

    def __init__(self, sock: socket.socket, started: Started, local: Address, note: Any = None) -> None:
        self.sock = sock
        self.started = started
        self.local = local
        self.note = note  # the owner's own (a worker: the daemon's number for the transfer)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.gso = True
        self.skip = 0  # wake-ups left that read one datagram only, not draining the socket (see _readable)
        self.backoff = 0
        self.spin_skip = 0  # blocks left that are sent without polling for their ACK (see Sessions._spin)
        self.spin_backoff = 0
        self.bufsize = READ_BUFSIZE if isinstance(started.transfer, ReadTransfer) else WRITE_BUFSIZE


class Sessions:
    """The running transfers of one event loop. ``count`` counts a named event (a dropped datagram, a socket
    error); ``ended`` gets each session once its transfer is done and its socket closed; ``store`` gets an upload's
    session and file to store (it calls :meth:`stored` when it has)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: Callable[[str], None],
                 ended: Callable[[Session], None],
                 store: Callable[[Session, bytes], None] | None = None) -> None:
        self._loop = loop
        self._count = count
        self._ended = ended
        self._store = store
        self.sessions: set[Session] = set()
        self._stalled: set[Session] = set()  # streamed transfers waiting for their file's next chunk
        self.gso_supported = hasattr(socket.socket, "sendmsg")
        # Seconds to poll for the next ACK when this loop runs exactly one lock-step transfer (a transfer worker's,
        # [tftp] spin_us; 0 on the daemon's loop, which has other work): see _spin.
        self.spin = 0.0
        # Its own clock, read on every poll: uvloop's loop.time() stays put within one round of the loop. The same
        # base as asyncio's (the transfer's deadline is compared to it).
        self.spin_clock: Callable[[], float] = time.monotonic
        self.spins = 0  # polls made, and those that found nothing (read by the tests)
        self.spin_misses = 0

    def __len__(self) -> int:
        return len(self.sessions)

    def begin(self, sock: socket.socket, started: Started, local: Address, note: Any = None) -> Session:
        """Run a started transfer on ``sock``: send its first datagrams, read its socket, arm its timer."""
        session = Session(sock, started, local, note)
        self.sessions.add(session)
        self._loop.add_reader(sock.fileno(), self._readable, session)
        self._send(session, started.datagrams)
        self._after(session)
        return session

    def close_all(self) -> None:
        for session in list(self.sessions):
            self.close(session)

    # -- a transfer's socket and timer --------------------------------------------------------------------------

    def _readable(self, session: Session) -> None:
        # After the answer to a datagram, the socket is read again (up to 64 datagrams per wake-up): in a single
        # lock-step transfer the client's next ACK is often already there, and that read spares a round of the
        # loop. When there are many transfers (a firmware storm) it nearly always finds the socket empty, an
        # EAGAIN system call and exception (2-3 us of a ~20 us block): after such a miss the transfer reads one
        # datagram per wake-up for 1, 3, 7, 15, at most 16 wake-ups (more after each miss in a row) before it
        # tries again. A datagram left unread keeps the socket readable for the next round.
        transfer = session.started.transfer
        client = transfer.client
        sock = session.sock
        recvfrom, bufsize, clock = sock.recvfrom, session.bufsize, self._loop.time  # (looked up once per wake-up)
        drain = 64
        if session.skip:
            session.skip -= 1
            drain = 1
        polled = False  # the last datagram read was answered with one DATA: its ACK may be polled for
        for i in range(drain):
            try:
                data, addr = recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                # The one lock-step transfer of a transfer worker polls a little for the ACK of what it just sent.
                received = None
                if polled and self.spin and len(self.sessions) == 1 and not self._stalled:
                    if session.spin_skip:
                        session.spin_skip -= 1
                    else:
                        received = self._spin(session)
                if received is None:
                    if i:
                        session.backoff = min(2 * session.backoff + 1, 16)
                        session.skip = session.backoff
                    break
                data, addr = received
            except OSError:
                self._count("tftp.socket_error")  # e.g. ICMP port unreachable from an earlier send
                continue
            if i:
                session.backoff = 0  # reading again paid
            now = clock()
            try:
                # An IPv4 address needs no normalising: compare it as it came (the hot path, one ACK per window).
                if addr == client or normal(addr) == client:
                    out = transfer.from_client(data, now)
                    polled = len(out) == 1 and transfer.windowsize == 1
                    if len(out) == 1:  # lock-step: one DATA, sent here without a further call
                        try:
                            sock.sendto(out[0], client)
                        except (BlockingIOError, InterruptedError):
                            self._count("tftp.send_dropped")  # the retransmission timer recovers
                        except OSError:
                            self._count("tftp.socket_error")
                    elif out:
                        self._send(session, out)
                else:
                    for datagram, to in transfer.receive(data, normal(addr), now):
                        self._sendto(session, datagram, to)
            except ProtocolError:
                self._count("tftp.dropped")
                continue
            if transfer.completion is not None and transfer.done:  # (no property call while it runs)
                break
        self._after(session)

    def _spin(self, session: Session) -> tuple[bytes, Address] | None:
        """Poll the socket of the one lock-step transfer of this loop for up to :attr:`spin` seconds after its DATA
        went out (never past the transfer's deadline: a retransmission is never late for it): the datagram, or
        None. The ACK of a phone on the LAN is usually back within ~40 us, less than going to sleep in epoll and
        being woken on another CPU costs (an IPI, the CPU out of idle, a round of the event loop).

        A poll that found nothing was CPU spent for nothing: a slow or distant client, a lost block, or a client
        that needs this very CPU to answer (on the same host). The next 1, 3, 7, ... at most 255 blocks then go
        without a poll (more after each miss in a row), so such a transfer polls for at most one block in 256;
        one that found its ACK polls for the next block again."""
        recvfrom, bufsize, clock = session.sock.recvfrom, session.bufsize, self.spin_clock
        start = clock()
        until = start + self.spin
        deadline = session.started.transfer.deadline
        if deadline is not None and deadline < until:
            until = deadline
        self.spins += 1
        self._count("tftp.ack_polls")  # a worker's counters reach the daemon's (/metrics) with each transfer's end
        while clock() < until:
            try:
                received = recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                self._count("tftp.socket_error")
                break
            session.spin_backoff = 0
            return received
        self.spin_misses += 1
        self._count("tftp.ack_poll_misses")
        session.spin_backoff = min(2 * session.spin_backoff + 1, 255)
        session.spin_skip = session.spin_backoff
        return None

    def _fire(self, session: Session) -> None:
        session.timer = None
        session.timer_at = None
        transfer = session.started.transfer
        out = transfer.timeout(self._loop.time())
        if out:
            self._send(session, out)
        self._after(session)

    # -- file work the transfer waits for ------------------------------------------------------------------------

    def _files(self, session: Session) -> None:
        """After the transfer moved: note a stall for data, or hand a finished upload to the owner to store."""
        transfer = session.started.transfer
        if isinstance(transfer, ReadTransfer):
            if transfer.stalled and not transfer.done:
                self._stalled.add(session)
            return
        upload = transfer.take_upload()
        if upload is not None and self._store is not None:
            self._store(session, upload)

    def wake(self) -> None:
        """A streamed file's next chunk is in memory: stalled transfers go on (those still without data stall
        again at once, for the price of one read() answering None)."""
        now = self._loop.time()
        for session in list(self._stalled):
            self._stalled.discard(session)
            transfer = session.started.transfer
            if session not in self.sessions or not isinstance(transfer, ReadTransfer):
                continue
            out = transfer.resume(now)
            if out:
                self._send(session, out)
            self._after(session)

    def stored(self, session: Session, error: BaseException | None) -> None:
        """The owner stored an upload (``error`` None) or could not."""
        transfer = session.started.transfer
        if session not in self.sessions or not isinstance(transfer, WriteTransfer):
            return  # stopped meanwhile
        if error is not None and not isinstance(error, Refused | OSError):
            log.error("tftp: storing an upload failed", exc_info=error)
        out = transfer.stored(error, self._loop.time())
        if out:
            self._send(session, out)
        self._after(session)

    def _after(self, session: Session) -> None:
        """Whatever moved the transfer (a datagram, the timer, the disk): file work it now waits for, then close it
        or re-arm its timer."""
        self._files(session)
        if session.started.transfer.done:
            self.close(session)
        else:
            self._rearm(session)

    def _rearm(self, session: Session) -> None:
        deadline = session.started.transfer.deadline
        if deadline is None:
            return
        if session.timer is not None and session.timer_at is not None and session.timer_at <= deadline:
            return  # fires early, finds nothing due and re-arms for the real deadline then
        if session.timer is not None:
            session.timer.cancel()
        session.timer = self._loop.call_at(deadline, self._fire, session)
        session.timer_at = deadline

    def close(self, session: Session) -> None:
        """Close the transfer's socket (ending it first if it still runs: the service stops), then ``ended``."""
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self._stalled.discard(session)
        if session.timer is not None:
            session.timer.cancel()
        self._loop.remove_reader(session.sock.fileno())
        session.sock.close()
        transfer = session.started.transfer
        if not transfer.done:
            transfer.abort("stopped", self._loop.time())  # stop(): end it, closing its file
        self._ended(session)

    # -- sending ------------------------------------------------------------------------------------------------

    def _sendto(self, session: Session, datagram: bytes, to: Address) -> None:
        try:
            session.sock.sendto(datagram, to)
        except (BlockingIOError, InterruptedError):
            self._count("tftp.send_dropped")
        except OSError:
            self._count("tftp.socket_error")

    def _send(self, session: Session, datagrams: list[bytes]) -> None:
        client = session.started.transfer.client
        if len(datagrams) > 1 and session.gso and self.gso_supported:
            datagrams = self._send_gso(session, datagrams, client)
        for datagram in datagrams:
            try:
                session.sock.sendto(datagram, client)
            except (BlockingIOError, InterruptedError):
                self._count("tftp.send_dropped")  # the retransmission timer recovers
            except OSError:
                self._count("tftp.socket_error")

    def _send_gso(self, session: Session, datagrams: list[bytes], client: Address) -> list[bytes]:
        """Send runs of equal-size datagrams as GSO super-datagrams; returns what is left to send one by one."""
        i = 0
        while i < len(datagrams):
            size = len(datagrams[i])
            count = min(GSO_MAX_SEGMENTS, max(1, GSO_MAX_BYTES // size))
            j = i
            while j < len(datagrams) and j - i < count and len(datagrams[j]) == size:
                j += 1
            # The last segment may be shorter: include one trailing short datagram.
            if j < len(datagrams) and j - i < count and len(datagrams[j]) < size:
                j += 1
            if j - i < 2:
                return datagrams[i:]
            try:
                session.sock.sendmsg([b"".join(datagrams[i:j])], [(SOL_UDP, UDP_SEGMENT, struct.pack("@H", size))],
                                     0, client)
            except (BlockingIOError, InterruptedError):
                self._count("tftp.send_dropped")
                return []  # the retransmission timer recovers
            except OSError:
                # Refused (old kernel, device without GSO): plain sends from now on, for this transfer and family.
                session.gso = False
                self.gso_supported = False
                self._count("tftp.gso_refused")
                log.debug("tftp: UDP GSO refused by the kernel; sending one datagram per block")
                return datagrams[i:]
            i = j
        return []


def normal(addr: Address) -> Address:
    # IPv6 addresses compare as (host, port, 0, scope): flow info is not part of the transfer ID.
    if len(addr) == 4:
        return (addr[0], addr[1], 0, addr[3])
    return (addr[0], addr[1])
