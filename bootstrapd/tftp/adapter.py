"""The asyncio side of TFTP: listening sockets, requests, events. The decisions are in server.py/transfer.py.

- One listening socket per address of the provisioning interface (IPv4 and IPv6, link-local included), each bound
  to the interface; a transfer's ephemeral socket is bound to the very address the request came to, so the
  client sees its answers come from the server it asked, and never leaves the provisioning interface.
- A started transfer runs on its own socket and timer in :class:`bootstrapd.tftp.sessions.Sessions` (the
  datagram path, GSO, stalls for file data), or, for a large streamed download when ``[tftp] workers`` is above 0,
  in a transfer worker process (:mod:`bootstrapd.tftp.workers`): the daemon still decides and counts it, and emits
  its one event when the worker says it is done.
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
from collections.abc import Callable
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.net.sockets import udp_socket
from bootstrapd.net.udp import DatagramEndpoint, open_endpoint
from bootstrapd.provisioning.resolver import Refused
from bootstrapd.provisioning.work import file_work
from bootstrapd.service import Context
from bootstrapd.tftp.files import PrefetchReader, TftpFiles
from bootstrapd.tftp.server import OpenedFile, Pending, Refusal, Started, TftpServer, Waiting
from bootstrapd.tftp.sessions import Session, Sessions, normal
from bootstrapd.tftp.transfer import Completion, ReadTransfer
from bootstrapd.tftp.workers import LOST, TransferWorkers

log = logging.getLogger("bootstrapd.tftp")

Address = tuple[Any, ...]
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


class TftpService:
    name = "tftp"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events = ctx.events
        # The daemon's resolver and worker threads, shared with HTTP and FTP (built on the running loop).
        self.files = TftpFiles(file_work(ctx), self._wake)
        self.server = TftpServer(ctx.settings.tftp, self.files)
        self.endpoints: list[DatagramEndpoint] = []
        self.transfers: Sessions | None = None  # the running transfers' sockets and timers (built on the loop)
        self.workers: TransferWorkers | None = None  # [tftp] workers > 0: processes for large downloads
        self._handed: dict[int, Started] = {}  # transfers a worker runs, by the number it answers with
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
        self.transfers = Sessions(self._loop, self.events.count, self._ended, self._store)
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
        if settings.workers > 0:
            # Once it listens (a start that fails leaves no worker behind). Until a worker is ready, this loop
            # runs what would have gone to it; the daemon is ready only after this.
            self.workers = TransferWorkers(self._loop, settings.workers, self._finished_elsewhere,
                                           spin=settings.spin_us / 1e6)
            await self.workers.start()

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
        if self.workers is not None:  # the workers stay; spin_us travels with each hand-over, so it applies at once
            self.workers.spin = settings.tftp.spin_us / 1e6

    async def stop(self) -> None:
        self._stopping = True
        for endpoint in self.endpoints:
            endpoint.close()
        self.endpoints.clear()
        if self.workers is not None:
            await self.workers.stop()  # their transfers end with them
            for number in list(self._handed):
                self._finished_elsewhere(number, {"outcome": "stopped", "bytes": 0, "retransmits": 0})
        if self.transfers is not None:
            self.transfers.close_all()

    # -- requests -----------------------------------------------------------------------------------------------

    def _blksize_cap(self, family: socket.AddressFamily) -> int:
        # Path MTU minus IP (20 / 40), UDP (8) and TFTP (4) headers: 1468 / 1448 on Ethernet.
        return self.ctx.interface.mtu - (32 if family == socket.AF_INET else 52)

    def _request_handler(self, family: socket.AddressFamily, local: Address,
                         holder: list[DatagramEndpoint]) -> Callable[[bytes, Address], None]:
        cap = self._blksize_cap(family)

        def handle(data: bytes, addr: Address) -> None:
            assert self._loop is not None
            client = normal(addr)
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
        transfer = started.transfer
        source = transfer.source if isinstance(transfer, ReadTransfer) else None
        if self.workers is not None and started.large and isinstance(source, PrefetchReader):
            # A large octet download: a worker process runs it (the same core over the same file) and says how it
            # ended; a worker that cannot take it (none alive, behind) leaves it to this loop.
            assert isinstance(transfer, ReadTransfer) and source.size is not None
            number = self.workers.hand_over(sock, transfer, local, source.fd, source.size)
            if number is not None:
                sock.close()  # the worker has its own descriptor of it now
                transfer.hand_over()
                self._handed[number] = started
                self.events.count("tftp.handed_over")
                return
        assert self.transfers is not None
        self.transfers.begin(sock, started, local)

    # -- the end of a transfer ----------------------------------------------------------------------------------

    def _wake(self) -> None:
        if self.transfers is not None:
            self.transfers.wake()

    def _store(self, session: Session, upload: bytes) -> None:
        """An upload's last block is in: store it off the loop; its final ACK leaves once it is stored."""
        sink = session.started.sink
        if sink is None:
            return
        transfers = self.transfers
        assert transfers is not None
        self.files.work.store(sink.store, upload, lambda error: transfers.stored(session, error))

    def _ended(self, session: Session) -> None:
        """A transfer run on this loop is done and its socket closed: free its slots, emit its event."""
        self.server.finished(session.started)
        self._completed(session.started.transfer.completion)
        self._release()

    def _finished_elsewhere(self, number: int, reply: dict[str, Any]) -> None:
        """A worker's transfer is done (or was lost with its worker): the same ending as one run here."""
        started = self._handed.pop(number, None)
        if started is None or not isinstance(started.transfer, ReadTransfer):
            return
        assert self._loop is not None
        for name, n in (reply.get("counts") or {}).items():
            self.events.count(str(name), int(n))
        if reply.get("outcome") == LOST:
            self.events.count("tftp.worker_lost")
        started.transfer.ended(str(reply.get("outcome", "")), int(reply.get("bytes", 0)),
                               int(reply.get("retransmits", 0)), self._loop.time())
        self.server.finished(started)
        self._completed(started.transfer.completion)
        self._release()

    def _completed(self, completion: Completion | None) -> None:
        if completion is None:
            return
        self.events.emit("tftp.transfer", client=completion.client[0], file=completion.file,
                         outcome=completion.outcome, bytes=completion.bytes, duration=round(completion.duration, 6),
                         retransmits=completion.retransmits, write=completion.write)
