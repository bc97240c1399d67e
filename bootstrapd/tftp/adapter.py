"""The asyncio side of TFTP: sockets, one timer per transfer, events. The decisions are in server.py/transfer.py.

- One listening socket per address of the provisioning interface (IPv4 and IPv6, link-local included), each bound
  to the interface; a transfer's ephemeral socket is bound to the very address the request came to, so the
  client sees its answers come from the server it asked, and never leaves the provisioning interface.
- Transfer sockets are read with ``loop.add_reader`` (no protocol object per transfer) and written with plain
  ``sendto``; a full send buffer drops the datagram and the retransmission timer recovers it.
- One ``call_at`` timer per transfer, re-armed only when the deadline moves earlier: a timer that fires early finds
  nothing due and is set again for the real deadline, so an ACK costs no timer churn.
- A window of full-size blocks goes out in one ``sendmsg`` with Linux UDP GSO (``UDP_SEGMENT``) where the kernel
  accepts it, else one ``sendto`` per block.
- File data is read and uploads are stored in worker threads (:mod:`bootstrapd.provisioning.work`, shared with
  HTTP and FTP; :mod:`bootstrapd.tftp.files`): a request whose file must be read first waits for it (holding its
  slot), a streamed transfer that ran ahead of its reads stalls and is resumed when data comes, an upload's final
  ACK leaves when the file is stored. The loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import struct
from collections.abc import Callable
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.errors import ProtocolError
from bootstrapd.net.sockets import udp_socket
from bootstrapd.net.udp import DatagramEndpoint, open_endpoint
from bootstrapd.provisioning.resolver import Refused
from bootstrapd.provisioning.work import file_work
from bootstrapd.service import Context
from bootstrapd.tftp.files import TftpFiles
from bootstrapd.tftp.server import OpenedFile, Pending, Refusal, Started, TftpServer, Waiting
from bootstrapd.tftp.transfer import Completion, ReadTransfer, WriteTransfer

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


def raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit (and the hard one, as root) to at least ``needed``; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return needed
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class _Session:
    __slots__ = ("backoff", "bufsize", "gso", "local", "skip", "sock", "started", "timer", "timer_at")

    def __init__(self, sock: socket.socket, started: Started, local: Address) -> None:
        self.sock = sock
        self.started = started
        self.local = local
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.gso = True
        self.skip = 0  # wake-ups left that read one datagram only, not draining the socket (see _readable)
        self.backoff = 0
        self.bufsize = READ_BUFSIZE if isinstance(started.transfer, ReadTransfer) else WRITE_BUFSIZE


class TftpService:
    name = "tftp"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events = ctx.events
        # The daemon's resolver and worker threads, shared with HTTP and FTP (built on the running loop).
        self.files = TftpFiles(file_work(ctx), self._wake)
        self.server = TftpServer(ctx.settings.tftp, self.files)
        self.endpoints: list[DatagramEndpoint] = []
        self.sessions: set[_Session] = set()
        self._stalled: set[_Session] = set()  # streamed transfers waiting for their file's next chunk
        self.gso_supported = hasattr(socket.socket, "sendmsg")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._releasing = False
        self._release_again = False

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        iface = self.ctx.interface
        settings = self.ctx.settings.tftp
        raise_nofile(settings.max_transfers + 256)
        binds: list[tuple[socket.AddressFamily, str, int]] = [(socket.AF_INET, str(a.ip), 0) for a in iface.ipv4]
        binds += [(socket.AF_INET6, str(a.ip), iface.index if a.ip.is_link_local else 0) for a in iface.ipv6]
        if not binds:
            raise OSError(errno.EADDRNOTAVAIL, f"interface {iface.name} has no address to serve TFTP on")
        errors = []
        for family, address, scope in binds:
            local: Address = (address, settings.port) if family == socket.AF_INET else (address, settings.port, 0,
                                                                                         scope)
            try:
                sock = udp_socket(family, iface.name, local[0], settings.port)
                if family == socket.AF_INET6 and scope:
                    sock.close()
                    sock = self._bind6(iface.name, local)
            except OSError as exc:
                errors.append(exc)
                log.warning("tftp: cannot listen on [%s]:%d: %s", address, settings.port, exc.strerror or exc)
                continue
            holder: list[DatagramEndpoint] = []
            endpoint = await open_endpoint("tftp", sock, self._request_handler(family, local, holder), self.events)
            holder.append(endpoint)
            self.endpoints.append(endpoint)
        if not self.endpoints:
            raise errors[0]

    @staticmethod
    def _bind6(interface: str, local: Address, port: int | None = None) -> socket.socket:
        # udp_socket() binds (address, port); a link-local address needs the scope id too.
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setblocking(False)
            sock.bind((local[0], local[1] if port is None else port, 0, local[3]))
        except BaseException:
            sock.close()
            raise
        return sock

    def reload(self, settings: Settings) -> None:
        # The files are the daemon's resolver in force (rebuilt before this call); requests being read finish with
        # the one they started with.
        self.server.configure(settings.tftp, self.files)
        raise_nofile(settings.tftp.max_transfers + 256)

    async def stop(self) -> None:
        self._stopping = True
        for endpoint in self.endpoints:
            endpoint.close()
        self.endpoints.clear()
        for session in list(self.sessions):
            self._close(session)

    # -- requests -----------------------------------------------------------------------------------------------

    def _blksize_cap(self, family: socket.AddressFamily) -> int:
        # Path MTU minus IP (20 / 40), UDP (8) and TFTP (4) headers: 1468 / 1448 on Ethernet.
        return self.ctx.interface.mtu - (32 if family == socket.AF_INET else 52)

    def _request_handler(self, family: socket.AddressFamily, local: Address,
                         holder: list[DatagramEndpoint]) -> Callable[[bytes, Address], None]:
        cap = self._blksize_cap(family)

        def handle(data: bytes, addr: Address) -> None:
            assert self._loop is not None
            client = _normal(addr)
            now = self._loop.time()
            outcome = self.server.request(data, client, now, cap)  # TftpError -> counted and dropped
            if isinstance(outcome, Waiting):
                # Over its address's max_per_client: it starts when one of that address's transfers ends.
                outcome.tag = (family, local, holder)
                self.events.count("tftp.waited")
                return
            self._started(outcome, family, local, holder, now)

        return handle

    def _started(self, outcome: Started | Pending | Refusal, family: socket.AddressFamily, local: Address,
                 holder: list[DatagramEndpoint], now: float) -> None:
        if isinstance(outcome, Pending):
            pending = outcome
            self.files.load(pending.name, pending.client[0],
                            lambda opened: self._loaded(pending, opened, family, local, holder))
            return
        if isinstance(outcome, Refusal):
            self.events.emit("tftp.transfer", client=outcome.client[0], file=outcome.file, outcome=outcome.outcome,
                             bytes=0, duration=0.0)
            if outcome.datagram is not None and holder:
                holder[0].sendto(outcome.datagram, outcome.client)
            return
        self._begin(outcome, family, local, now)

    def _loaded(self, pending: Pending, opened: OpenedFile | Refused, family: socket.AddressFamily, local: Address,
                holder: list[DatagramEndpoint]) -> None:
        """The file of a request that had to be read first (in a worker thread) is there, or refused."""
        assert self._loop is not None
        now = self._loop.time()
        outcome = self.server.opened(pending, opened, now)
        if self._stopping and isinstance(outcome, Started):
            outcome.transfer.abort("stopped", now)
            self.server.finished(outcome)
            return
        self._started(outcome, family, local, holder, now)
        self._release()

    def _release(self) -> None:
        """Start the requests that waited for a slot of their address, now that one is free."""
        assert self._loop is not None
        if self._stopping:
            return
        if self._releasing:  # a start that failed at once ended a transfer: the outer call goes round again
            self._release_again = True
            return
        self._releasing = True
        try:
            while True:
                self._release_again = False
                now = self._loop.time()
                for waiting, outcome in self.server.release(now):
                    family, local, holder = waiting.tag
                    self._started(outcome, family, local, holder, now)
                if not self._release_again:
                    break
        finally:
            self._releasing = False

    def _begin(self, started: Started, family: socket.AddressFamily, local: Address, now: float) -> None:
        assert self._loop is not None
        iface = self.ctx.interface.name
        try:
            if family == socket.AF_INET6 and local[3]:
                sock = self._bind6(iface, local, 0)
            else:
                sock = udp_socket(family, iface, local[0], 0, rcvbuf=256 << 10, sndbuf=2 << 20)
        except OSError as exc:
            # Out of descriptors or ports: the client will retry; release the slot now.
            self.events.count("tftp.socket_error")
            log.debug("tftp: no socket for a transfer: %s", exc)
            started.transfer.abort("no_socket", now)
            self.server.finished(started)
            self._completed(started.transfer.completion)
            self._release()
            return
        session = _Session(sock, started, local)
        self.sessions.add(session)
        self._loop.add_reader(sock.fileno(), self._readable, session)
        self._send(session, started.datagrams)
        self._after(session)

    # -- a transfer's socket and timer --------------------------------------------------------------------------

    def _readable(self, session: _Session) -> None:
        # After the answer to a datagram, the socket is read again (up to 64 datagrams per wake-up): in a single
        # lock-step transfer the client's next ACK is often already there, and that read spares a round of the
        # loop. When there are many transfers (a firmware storm) it nearly always finds the socket empty, an
        # EAGAIN system call and exception (2-3 us of a ~20 us block): after such a miss the transfer reads one
        # datagram per wake-up for 1, 3, 7, 15, at most 16 wake-ups (more after each miss in a row) before it
        # tries again. A datagram left unread keeps the socket readable for the next round.
        assert self._loop is not None
        transfer = session.started.transfer
        drain = 64
        if session.skip:
            session.skip -= 1
            drain = 1
        for i in range(drain):
            try:
                data, addr = session.sock.recvfrom(session.bufsize)
            except (BlockingIOError, InterruptedError):
                if i:
                    session.backoff = min(2 * session.backoff + 1, 16)
                    session.skip = session.backoff
                break
            except OSError:
                self.events.count("tftp.socket_error")  # e.g. ICMP port unreachable from an earlier send
                continue
            if i:
                session.backoff = 0  # reading again paid
            now = self._loop.time()
            try:
                # An IPv4 address needs no normalising: compare it as it came (the hot path, one ACK per window).
                if addr == transfer.client or _normal(addr) == transfer.client:
                    out = transfer.from_client(data, now)
                    if out:
                        self._send(session, out)
                else:
                    for datagram, to in transfer.receive(data, _normal(addr), now):
                        self._sendto(session, datagram, to)
            except ProtocolError:
                self.events.count("tftp.dropped")
                continue
            if transfer.completion is not None and transfer.done:  # (no property call while it runs)
                break
        self._after(session)

    def _fire(self, session: _Session) -> None:
        assert self._loop is not None
        session.timer = None
        session.timer_at = None
        transfer = session.started.transfer
        out = transfer.timeout(self._loop.time())
        if out:
            self._send(session, out)
        self._after(session)

    # -- file work the transfer waits for ------------------------------------------------------------------------

    def _files(self, session: _Session) -> None:
        """After the transfer moved: note a stall for data, or hand a finished upload to the upload worker."""
        transfer = session.started.transfer
        if isinstance(transfer, ReadTransfer):
            if transfer.stalled and not transfer.done:
                self._stalled.add(session)
            return
        upload = transfer.take_upload()
        if upload is not None and session.started.sink is not None:
            self.files.work.store(session.started.sink.store, upload, lambda error: self._stored(session, error))

    def _wake(self) -> None:
        """A streamed file's next chunk is in memory: stalled transfers go on (those still without data stall
        again at once, for the price of one read() answering None)."""
        assert self._loop is not None
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

    def _stored(self, session: _Session, error: BaseException | None) -> None:
        transfer = session.started.transfer
        if session not in self.sessions or not isinstance(transfer, WriteTransfer):
            return  # stopped meanwhile
        assert self._loop is not None
        if error is not None and not isinstance(error, Refused | OSError):
            log.error("tftp: storing an upload failed", exc_info=error)
        out = transfer.stored(error, self._loop.time())
        if out:
            self._send(session, out)
        self._after(session)

    def _after(self, session: _Session) -> None:
        """Whatever moved the transfer (a datagram, the timer, the disk): file work it now waits for, then close it
        or re-arm its timer."""
        self._files(session)
        if session.started.transfer.done:
            self._close(session)
        else:
            self._rearm(session)

    def _rearm(self, session: _Session) -> None:
        assert self._loop is not None
        deadline = session.started.transfer.deadline
        if deadline is None:
            return
        if session.timer is not None and session.timer_at is not None and session.timer_at <= deadline:
            return  # fires early, finds nothing due and re-arms for the real deadline then
        if session.timer is not None:
            session.timer.cancel()
        session.timer = self._loop.call_at(deadline, self._fire, session)
        session.timer_at = deadline

    def _close(self, session: _Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        self._stalled.discard(session)
        if session.timer is not None:
            session.timer.cancel()
        assert self._loop is not None
        self._loop.remove_reader(session.sock.fileno())
        session.sock.close()
        transfer = session.started.transfer
        if not transfer.done:
            transfer.abort("stopped", self._loop.time())  # stop(): end it, closing its file
        self.server.finished(session.started)
        self._completed(transfer.completion)
        self._release()

    def _completed(self, completion: Completion | None) -> None:
        if completion is None:
            return
        self.events.emit("tftp.transfer", client=completion.client[0], file=completion.file,
                         outcome=completion.outcome, bytes=completion.bytes, duration=round(completion.duration, 6),
                         retransmits=completion.retransmits, write=completion.write)

    # -- sending ------------------------------------------------------------------------------------------------

    def _sendto(self, session: _Session, datagram: bytes, to: Address) -> None:
        try:
            session.sock.sendto(datagram, to)
        except (BlockingIOError, InterruptedError):
            self.events.count("tftp.send_dropped")
        except OSError:
            self.events.count("tftp.socket_error")

    def _send(self, session: _Session, datagrams: list[bytes]) -> None:
        client = session.started.transfer.client
        if len(datagrams) > 1 and session.gso and self.gso_supported:
            datagrams = self._send_gso(session, datagrams, client)
        for datagram in datagrams:
            try:
                session.sock.sendto(datagram, client)
            except (BlockingIOError, InterruptedError):
                self.events.count("tftp.send_dropped")  # the retransmission timer recovers
            except OSError:
                self.events.count("tftp.socket_error")

    def _send_gso(self, session: _Session, datagrams: list[bytes], client: Address) -> list[bytes]:
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
                self.events.count("tftp.send_dropped")
                return []  # the retransmission timer recovers
            except OSError:
                # Refused (old kernel, device without GSO): plain sends from now on, for this transfer and family.
                session.gso = False
                self.gso_supported = False
                self.events.count("tftp.gso_refused")
                log.debug("tftp: UDP GSO refused by the kernel; sending one datagram per block")
                return datagrams[i:]
            i = j
        return []


def _normal(addr: Address) -> Address:
    # IPv6 addresses compare as (host, port, 0, scope): flow info is not part of the transfer ID.
    if len(addr) == 4:
        return (addr[0], addr[1], 0, addr[3])
    return (addr[0], addr[1])
