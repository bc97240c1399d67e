"""What to do with a request on port 69: refuse it, drop it, or start a transfer. No I/O beyond the file interface.

Limits (all from ``[tftp]``): concurrent transfers overall and per client address, a per-client request rate
(token bucket fed by ``now``), and a separate, smaller limit for large files, so a boot storm of small
configuration files never waits behind firmware downloads.

A request over its address's ``max_per_client`` is not refused: it waits, in arrival order, in a bounded queue of
that address (``max_waiting_per_client``), and starts as soon as one of that address's transfers ends
(:meth:`TftpServer.release`, called by the adapter). A hundred phones behind one NAT address are all served, each
before its retransmission timer; a flood from one address still holds at most ``max_per_client`` transfers, and
what it sends beyond its queue is refused.

The files are asked for without blocking (:meth:`Files.open_nowait`): a file in the hot cache, or one that is
streamed, starts its transfer at once; one that must be read first is a :class:`Pending` request, holding its
slot, that the adapter reads off the event loop and hands back to :meth:`TftpServer.opened`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bootstrapd.provisioning.resolver import Reason, Refused
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import Request
from bootstrapd.tftp.settings import TftpSettings
from bootstrapd.tftp.transfer import Limits, Netascii, ReadTransfer, Source, Transfer, WriteTransfer, negotiate

Address = tuple[Any, ...]


class OpenedFile(Protocol):
    size: int
    data: bytes | None

    def reader(self) -> Source: ...


class Files(Protocol):
    """The part of :class:`bootstrapd.provisioning.resolver.Resolver` the server uses. ``client`` is the
    requesting address: the MAC-file rule decides with it."""

    def open_nowait(self, name: str, client: str | None = None) -> OpenedFile | None:
        """The file without reading it now (cached bytes, or a stream); None: it must be read first (off the loop,
        with ``open``); raises Refused."""

    def upload_target(self, name: str, client: str | None = None) -> str: ...

    def store_upload(self, name: str, data: bytes, client: str | None = None) -> str: ...


class Sink(Protocol):
    def store(self, data: bytes) -> None:
        """Keep an upload (blocking: the adapter calls it off the event loop); raises Refused or OSError."""


class _UploadSink:
    def __init__(self, files: Files, name: str, client: str) -> None:
        self.files = files
        self.name = name
        self.client = client

    def store(self, data: bytes) -> None:
        self.files.store_upload(self.name, data, client=self.client)


@dataclass(frozen=True)
class Refusal:
    """A request answered with an ERROR (or silently dropped when ``datagram`` is None)."""

    datagram: bytes | None
    client: Address
    file: str
    outcome: str


@dataclass(eq=False)
class Started:
    transfer: Transfer
    datagrams: list[bytes]
    large: bool
    upload: bool = False
    sink: Sink | None = None  # where an upload goes once its last block is in


@dataclass(eq=False)
class Pending:
    """A read request whose file must be read before the transfer can start; it holds a transfer slot meanwhile."""

    name: str
    request: Request
    client: Address
    limits: Limits
    data: bytes = field(repr=False)  # the request datagram, to know a retransmission of it


@dataclass(eq=False)
class Waiting:
    """A request over its address's ``max_per_client``, queued until one of that address's transfers ends."""

    request: Request
    data: bytes = field(repr=False)  # the request datagram, to know a retransmission of it
    client: Address
    since: float
    blksize_max: int | None
    tag: Any = None  # the adapter's own note (which socket the request came to); never read here


# A phone that has waited this long has retransmitted its request several times or given up (tftp-hpa's client and
# U-Boot: 5 tries 5 s apart): a request waiting longer is forgotten rather than served.
MAX_WAIT = 20.0


_ERRORS = {
    Reason.NOT_FOUND: codec.ERR_NOT_FOUND,
    Reason.TOO_LARGE: codec.ERR_DISK_FULL,
    Reason.EXISTS: codec.ERR_EXISTS,
}


def _refused(exc: Refused, client: Address, shown: str) -> Refusal:
    code = _ERRORS.get(exc.reason, codec.ERR_ACCESS)
    message = "file not found" if code == codec.ERR_NOT_FOUND else f"access violation ({exc.reason.value})"
    return Refusal(codec.encode_error(code, message), client, shown, exc.reason.value)


SHOWN_NAME = 256  # characters of a requested name kept in refusal events


def _shown(name: str) -> str:
    # Refusals are logged with the name: a 64 KB one in every datagram would multiply the log volume.
    return name if len(name) <= SHOWN_NAME else name[:SHOWN_NAME] + "..."


class TokenBuckets:
    """Per-client request rate: ``rate`` tokens per second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[Any, tuple[float, float]] = {}

    def take(self, key: Any, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 65536:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        # A bucket that would be full again is the same as no bucket: forget it, so the table stays bounded.
        full = [k for k, (t, then) in self._buckets.items() if t + (now - then) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) > 65536:
            self._buckets.clear()


class TftpServer:
    def __init__(self, settings: TftpSettings, files: Files) -> None:
        self.files = files
        self.active = 0
        self.large = 0
        self._uploading: list[Started] = []  # uploads still receiving (holding data in memory)
        # client address and port (its TID) -> (the request datagram, its transfer), to know a retransmitted request
        self._live: dict[Address, tuple[bytes, Started | Pending | Waiting]] = {}
        self.per_client: dict[Any, int] = {}
        self._waiting: dict[Any, deque[Waiting]] = {}  # per address, in arrival order
        self._freed: set[Any] = set()  # addresses with waiting requests that may have a free slot now
        self.waiting = 0
        self.configure(settings, files)

    def configure(self, settings: TftpSettings, files: Files) -> None:
        self.settings = settings
        self.files = files
        self.limits = Limits(
            blksize_max=settings.blksize_max or 65464,
            windowsize_max=settings.windowsize_max,
            timeout=settings.timeout,
            retries=settings.retries,
            first_ack_retries=settings.first_ack_retries,
            session_lifetime=settings.session_lifetime,
        )
        self.buckets = TokenBuckets(settings.rate_limit, settings.rate_limit * 2)

    def request(self, data: bytes, client: Address, now: float,
                blksize_max: int | None = None) -> Started | Pending | Waiting | Refusal:
        """A datagram on the well-known port; raises TftpError for garbage (the adapter counts and drops it)."""
        packet = codec.decode(data)
        if not isinstance(packet, Request):
            # DATA/ACK/ERROR/OACK to port 69 belong to no transfer: nothing to answer (RFC 1350 TID rules).
            raise codec.TftpError(f"{type(packet).__name__} on the request port")
        host = client[0]
        shown = _shown(packet.filename)
        live = self._live.get(client)
        if live is not None and live[0] == data and (isinstance(live[1], Pending | Waiting)
                                                     or live[1].transfer.completion is None):
            # RFC 1350 section 4: the client's TID names the transfer. The same request again from the same port
            # is the client retransmitting it because our first answer is late or lost: the transfer it started
            # answers (its own timer resends that first packet); a second transfer would answer from a second TID.
            # A request still waiting for a slot keeps its place.
            return Refusal(None, client, shown, "duplicate")
        if not self.buckets.take(host, now):
            return Refusal(None, client, shown, "rate_limited")
        if packet.mode not in codec.MODES:
            return Refusal(codec.encode_error(codec.ERR_ILLEGAL, f"mode {packet.mode!r} not supported"), client,
                           shown, "bad_mode")
        if self.active >= self.settings.max_transfers:
            return Refusal(codec.encode_error(codec.ERR_UNDEFINED, "server busy, try again"), client, shown, "busy")
        if self.per_client.get(host, 0) >= self.settings.max_per_client:
            return self._wait(packet, data, client, now, blksize_max)
        return self._admit(packet, data, client, now, blksize_max)

    def _admit(self, packet: Request, data: bytes, client: Address, now: float,
               blksize_max: int | None) -> Started | Pending | Refusal:
        """A request within every limit: start it (or read its file first)."""
        limits = self.limits
        if blksize_max is not None and blksize_max < limits.blksize_max:
            limits = replace(limits, blksize_max=blksize_max)
        if packet.opcode == codec.WRQ:
            outcome = self._write(packet, client, limits, now)
            if isinstance(outcome, Started):
                self._live[client] = (data, outcome)
            return outcome
        try:
            opened = self.files.open_nowait(packet.filename, client=client[0])
        except Refused as exc:
            return _refused(exc, client, _shown(packet.filename))
        if opened is None:
            pending = Pending(packet.filename, packet, client, limits, data)
            self._count(client[0], +1, False)
            self._live[client] = (data, pending)
            return pending
        return self._read(packet, client, limits, data, opened, now)

    def _wait(self, packet: Request, data: bytes, client: Address, now: float,
              blksize_max: int | None) -> Waiting | Refusal:
        host = client[0]
        queue = self._waiting.get(host)
        # Bounded per address, and overall by max_transfers: spoofed addresses cannot make the queues grow without end.
        if (queue is not None and len(queue) >= self.settings.max_waiting_per_client) or \
                self.waiting >= self.settings.max_transfers or self.settings.max_waiting_per_client == 0:
            return Refusal(codec.encode_error(codec.ERR_UNDEFINED, "too many transfers from your address"), client,
                           _shown(packet.filename), "busy")
        waiting = Waiting(packet, data, client, now, blksize_max)
        self._waiting.setdefault(host, deque()).append(waiting)
        self.waiting += 1
        self._live[client] = (data, waiting)
        return waiting

    def release(self, now: float) -> list[tuple[Waiting, Started | Pending | Refusal]]:
        """Start the waiting requests whose address has a free slot again, oldest first; a request that waited over
        ``MAX_WAIT`` is dropped (answered with nothing, outcome ``wait_expired``). Call after :meth:`finished` and
        :meth:`opened`."""
        out: list[tuple[Waiting, Started | Pending | Refusal]] = []
        for host in list(self._freed):
            queue = self._waiting.get(host)
            while queue and self.per_client.get(host, 0) < self.settings.max_per_client \
                    and self.active < self.settings.max_transfers:
                waiting = queue.popleft()
                self.waiting -= 1
                live = self._live.get(waiting.client)
                if live is not None and live[1] is waiting:
                    del self._live[waiting.client]
                if now - waiting.since > MAX_WAIT:
                    out.append((waiting, Refusal(None, waiting.client, _shown(waiting.request.filename),
                                                 "wait_expired")))
                    continue
                out.append((waiting, self._admit(waiting.request, waiting.data, waiting.client, now,
                                                 waiting.blksize_max)))
            if not queue:
                self._waiting.pop(host, None)
            if not queue or self.per_client.get(host, 0) >= self.settings.max_per_client:
                self._freed.discard(host)  # else only the overall limit holds it back: try again at the next end
        return out

    def opened(self, pending: Pending, opened: OpenedFile | Refused, now: float) -> Started | Refusal:
        """The file of a :class:`Pending` request, read by the adapter (or why it could not be)."""
        client = pending.client
        self._count(client[0], -1, False)
        self._slot_freed(client[0])
        live = self._live.get(client)
        if live is not None and live[1] is pending:
            del self._live[client]
        if isinstance(opened, Refused):
            return _refused(opened, client, _shown(pending.name))
        return self._read(pending.request, client, pending.limits, pending.data, opened, now)

    def _read(self, packet: Request, client: Address, limits: Limits, data: bytes, opened: OpenedFile,
              now: float) -> Started | Refusal:
        shown = _shown(packet.filename)
        large = opened.size >= self.settings.large_file_size > 0
        if large and self.large >= self.settings.max_large_transfers:
            opened.reader().close()
            return Refusal(codec.encode_error(codec.ERR_UNDEFINED, "busy with large files, try again"), client,
                           shown, "busy_large")
        source: Source = opened.reader()
        if packet.mode == "netascii":
            size = Netascii.converted_size(opened.data) if opened.data is not None else None
            source = Netascii(source, size)
        negotiated = negotiate(packet.options, limits, source.size)
        transfer = ReadTransfer(client, shown, source, limits, negotiated, now)
        self._count(client[0], +1, large)
        started = Started(transfer, transfer.start(now), large)
        self._live[client] = (data, started)
        return started

    def _write(self, packet: Request, client: Address, limits: Limits, now: float) -> Started | Refusal:
        name = packet.filename
        shown = _shown(name)
        if self.uploads >= self.settings.max_uploads:
            # An upload is held in memory until its last block: this cap, not max_transfers, bounds that memory.
            return Refusal(codec.encode_error(codec.ERR_UNDEFINED, "busy with uploads, try again"), client, shown,
                           "busy_uploads")
        try:
            self.files.upload_target(name, client=client[0])
        except Refused as exc:
            return Refusal(codec.encode_error(codec.ERR_ACCESS, f"access violation ({exc.reason.value})"), client,
                           shown, exc.reason.value)
        negotiated = negotiate(packet.options, limits, None, write=True)
        if negotiated.tsize is not None and negotiated.tsize > self.settings.upload_max_size:
            return Refusal(codec.encode_error(codec.ERR_DISK_FULL, "upload too large"), client, shown, "too_large")
        transfer = WriteTransfer(client, shown, limits, negotiated, now, self.settings.upload_max_size,
                                 netascii=packet.mode == "netascii")
        self._count(client[0], +1, False)
        started = Started(transfer, transfer.start(now), False, upload=True,
                          sink=_UploadSink(self.files, name, client[0]))
        self._uploading.append(started)
        return started

    @property
    def uploads(self) -> int:
        """Uploads still receiving; a finished one that only dallies for a lost final ACK holds no data."""
        self._uploading = [s for s in self._uploading if s.transfer.completion is None]
        return len(self._uploading)

    def _count(self, host: Any, delta: int, large: bool) -> None:
        self.active += delta
        if large:
            self.large += delta
        count = self.per_client.get(host, 0) + delta
        if count > 0:
            self.per_client[host] = count
        else:
            self.per_client.pop(host, None)

    def _slot_freed(self, host: Any) -> None:
        # Requests wait only behind their own address's transfers, so the end of one of those is what frees them;
        # an address then held back by max_transfers alone stays in _freed until release() can start it.
        if host in self._waiting:
            self._freed.add(host)

    def finished(self, started: Started) -> None:
        """Release the transfer's slots (call exactly once, when it is done or abandoned)."""
        client = started.transfer.client
        self._count(client[0], -1, started.large)
        self._slot_freed(client[0])
        live = self._live.get(client)
        if live is not None and live[1] is started:
            del self._live[client]
        if started.upload:
            self._uploading = [s for s in self._uploading if s is not started]
