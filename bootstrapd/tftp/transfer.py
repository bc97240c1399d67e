"""One TFTP transfer as a state machine: datagrams and ``now`` in, datagrams to send and the next deadline out.

No I/O here: the file arrives as a :class:`Source` (sequential ``read``), handed in by the adapter, and a finished
upload is handed back to the adapter to store (:meth:`WriteTransfer.take_upload`, then :meth:`WriteTransfer.stored`).
Both may take time on a slow disk, so neither blocks the core: a source answers ``None`` for data it does not have
yet (the transfer stalls and the adapter calls :meth:`ReadTransfer.resume` once it has), and the final ACK of an
upload leaves only when the adapter reports it stored. Rules kept (protocols.md section 8):

- Windowed sending (RFC 7440, windowsize 1 is RFC 1350 lock-step): an ACK of block n slides the window to n+1 and
  a full window goes out from there at once (RFC 7440 section 4): blocks after n that were already sent go again,
  then new ones. The blocks of the window are kept encoded, so sending one again costs no file read.
- A duplicate ACK never causes a resend (Sorcerer's Apprentice): only the timeout does, from the first
  unacknowledged block; an ACK for a block never sent is ignored.
- Exponential backoff, a bounded number of tries, and fewer tries before the client has acknowledged anything, so
  a spoofed request cannot turn us into a reflector.
- A datagram from another address or port gets ERROR 5 and the transfer goes on; an ERROR from the client ends it.
- Block numbers roll over from 65535 to 0 (what tftp-hpa, atftp, curl and tftpy expect for files over 32 MB at 512).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from bootstrapd.provisioning.resolver import Reason, Refused
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import Ack, Data, Error

Address = tuple[Any, ...]
Outgoing = list[tuple[bytes, Address]]

BLKSIZE_MIN, BLKSIZE_MAX = 8, 65464
_ACK = codec.ACK
MAX_BACKOFF = 30.0
# How long a finished upload keeps answering a retransmitted last DATA with the final ACK (RFC 1350 section 6,
# "dallying"): long enough for one retransmission by clients with a 5 s timer (tftp-hpa, atftp).
DALLY = 10.0


class Source(Protocol):
    size: int | None

    def read(self, n: int) -> bytes | memoryview | None:
        """The next ``n`` bytes (fewer only at the end of the file), or None: not available yet (being read)."""

    def close(self) -> None: ...


class Netascii:
    """RFC 1350 netascii on the way out: LF -> CR LF, CR -> CR NUL, as a sequential stream over another source.

    Every byte converts on its own, so chunks convert independently. The size after conversion is known only when
    the adapter can count it (``size``), else tsize is not offered. :meth:`decode` is the way back, for uploads.
    """

    def __init__(self, source: Source, size: int | None = None) -> None:
        self.source = source
        self.size = size
        self._buf = b""
        self._eof = False

    @staticmethod
    def convert(raw: bytes | memoryview) -> bytes:
        return bytes(raw).replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")

    @staticmethod
    def decode(wire: bytes) -> bytes:
        """Netascii as received -> the file: CR LF -> LF, CR NUL -> CR (a CR followed by anything else is kept).

        In netascii every CR starts a pair, so a CR LF found first is always a real pair; what is left of CR NUL
        afterwards cannot have been made by the first replacement (it only produces LF).
        """
        return wire.replace(b"\r\n", b"\n").replace(b"\r\0", b"\r")

    @staticmethod
    def converted_size(data: bytes) -> int:
        return len(data) + data.count(b"\n") + data.count(b"\r")

    def read(self, n: int) -> bytes | None:
        while len(self._buf) < n and not self._eof:
            raw = self.source.read(max(n, 8192))
            if raw is None:
                return None  # what was converted so far waits in the buffer: a short block would mean the end
            if not raw:
                self._eof = True
            self._buf += self.convert(raw)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def close(self) -> None:
        self.source.close()


@dataclass(frozen=True)
class Limits:
    blksize_max: int = 1468
    windowsize_max: int = 64
    timeout: float = 1.0
    retries: int = 5
    first_ack_retries: int = 2
    session_lifetime: float = 600.0


@dataclass(frozen=True)
class Negotiated:
    accepted: dict[str, str]  # what goes into the OACK (empty: no OACK)
    blksize: int = 512
    windowsize: int = 1
    timeout: float | None = None
    tsize: int | None = None  # the size a WRQ announced


def _number(value: str, low: int, high: int | None = None) -> int | None:
    # Only plain decimal digits, and not absurdly long: anything else means "ignore this option".
    if not value or len(value) > 10 or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    if number < low or (high is not None and number > high):
        return None
    return number


def negotiate(options: dict[str, str], limits: Limits, size: int | None, write: bool = False) -> Negotiated:
    """RFC 2347/2348/2349/7440 option negotiation; unknown options and bad values are ignored, never fatal."""
    accepted: dict[str, str] = {}
    blksize, windowsize, timeout, tsize = 512, 1, None, None
    raw = options.get("blksize")
    if raw is not None:
        asked = _number(raw, BLKSIZE_MIN)
        if asked is not None:
            blksize = max(BLKSIZE_MIN, min(asked, BLKSIZE_MAX, limits.blksize_max))
            accepted["blksize"] = str(blksize)
    raw = options.get("timeout")
    if raw is not None:
        asked = _number(raw, 1, 255)
        if asked is not None:
            timeout = float(asked)
            accepted["timeout"] = str(asked)
    raw = options.get("tsize")
    if raw is not None:
        asked = _number(raw, 0)
        if asked is not None:
            if write:
                tsize = asked
                accepted["tsize"] = str(asked)
            elif size is not None:
                accepted["tsize"] = str(size)
    raw = options.get("windowsize")
    if raw is not None and not write:  # uploads are received lock-step
        asked = _number(raw, 1, 65535)
        if asked is not None:
            windowsize = min(asked, limits.windowsize_max)
            accepted["windowsize"] = str(windowsize)
    return Negotiated(accepted, blksize, windowsize, timeout, tsize)


@dataclass(frozen=True)
class Completion:
    client: Address
    file: str
    outcome: str  # "ok", "timeout", "client_error", "lifetime", "refused_upload", "disk_full", "option_refused"
    bytes: int
    duration: float
    retransmits: int
    write: bool = False


class _Base:
    def __init__(self, client: Address, filename: str, limits: Limits, negotiated: Negotiated, now: float) -> None:
        self.client = client
        self.filename = filename
        self.limits = limits
        self.negotiated = negotiated  # (a transfer worker builds the same transfer from it)
        self.blksize = negotiated.blksize
        self.windowsize = negotiated.windowsize
        self.oack = codec.encode_oack(negotiated.accepted) if negotiated.accepted else None
        self.base_timeout = negotiated.timeout or limits.timeout
        # Until the client has answered, our own timer applies even if it asked for a longer one: a spoofed request
        # with timeout=255 would otherwise hold a transfer slot and its socket for the whole session lifetime.
        self.rto = min(self.base_timeout, limits.timeout)
        self.started = now
        self.tries = 0
        self.retransmits = 0
        self.heard = False  # the client has acknowledged (or sent) something on this transfer
        self.bytes = 0
        self._retry_at: float | None = None
        self._dally_until: float | None = None  # finished, but still answering a retransmitted last packet
        self.completion: Completion | None = None

    @property
    def done(self) -> bool:
        return self.completion is not None and self._dally_until is None

    @property
    def deadline(self) -> float | None:
        if self.done:
            return None
        if self._dally_until is not None:
            return self._dally_until
        end = self.started + self.limits.session_lifetime
        return end if self._retry_at is None else min(self._retry_at, end)

    def _arm(self, now: float) -> None:
        self._retry_at = now + self.rto

    def _progress(self, now: float) -> None:
        self.heard = True
        self.tries = 0
        self.rto = self.base_timeout
        self._retry_at = now + self.rto  # _arm(), without a further call: this runs once per ACK

    def _finish(self, outcome: str, now: float) -> None:
        if self.completion is None:
            self.completion = Completion(self.client, self.filename, outcome, self.bytes, max(0.0, now - self.started),
                                         self.retransmits, isinstance(self, WriteTransfer))
            self._retry_at = None
            self._closed()

    def _closed(self) -> None:
        pass

    def abort(self, outcome: str, now: float) -> None:
        """End the transfer without sending anything (the service stops, no socket could be had)."""
        self._finish(outcome, now)
        self._dally_until = None

    def _dallied(self, data: bytes) -> list[bytes]:
        """What a finished transfer still answers from its client while it dallies."""
        return []

    def receive(self, data: bytes, addr: Address, now: float) -> Outgoing:
        """A datagram that arrived on this transfer's socket; raises TftpError for garbage from the client."""
        if addr == self.client:
            return [(d, self.client) for d in self.from_client(data, now)]
        if self.completion is not None:
            return []
        # ERROR 5 to the stranger, the transfer goes on (RFC 1350). An ERROR is not answered: two servers must not
        # bounce errors at each other forever.
        if len(data) >= 2 and data[1] == codec.ERROR and data[0] == 0:
            return []
        return [(codec.encode_error(codec.ERR_UNKNOWN_TID, "unknown transfer ID"), addr)]

    def from_client(self, data: bytes, now: float) -> list[bytes]:
        """:meth:`receive` for a datagram from the client itself: what to send back to it (the adapter calls this
        directly when the address matches, sparing a tuple per datagram on the hot path)."""
        if self.completion is not None:
            return self._dallied(data) if self._dally_until is not None else []
        if len(data) >= 4 and data[0] == 0 and data[1] == _ACK and isinstance(self, ReadTransfer):
            # The hot path of a download: one ACK per window, no packet object.
            return self._ack((data[2] << 8) | data[3], now)
        packet = codec.decode(data)
        if isinstance(packet, Error):
            self._finish("option_refused" if packet.code == codec.ERR_OPTION else "client_error", now)
            return []
        return self._packet(packet, now)

    def _packet(self, packet: codec.Packet, now: float) -> list[bytes]:
        raise NotImplementedError

    def timeout(self, now: float) -> list[bytes]:
        """Called at (or after) :attr:`deadline`; returns what to retransmit."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        if self._dally_until is not None:
            self._dally_until = None
            return []
        if now >= self.started + self.limits.session_lifetime:
            self._finish("lifetime", now)
            return [codec.encode_error(codec.ERR_UNDEFINED, "session lifetime exceeded")]
        self.tries += 1
        if self.tries > (self.limits.retries if self.heard else self.limits.first_ack_retries):
            self._finish("timeout", now)
            return []
        self.rto = min(self.rto * 2, max(MAX_BACKOFF, self.base_timeout))
        self._arm(now)
        out = self._resend()
        self.retransmits += len(out)
        return out

    def _resend(self) -> list[bytes]:
        raise NotImplementedError


class ReadTransfer(_Base):
    """Sending a file (RRQ)."""

    def __init__(self, client: Address, filename: str, source: Source, limits: Limits, negotiated: Negotiated,
                 now: float) -> None:
        super().__init__(client, filename, limits, negotiated, now)
        self.source = source
        self.base = 1  # first unacknowledged block (not wrapped)
        self.next = 1  # next block never sent
        self.last: int | None = None  # the final block, once read
        self.window: deque[tuple[bytes, int]] = deque()  # (DATA datagram, payload length) for base..next-1
        self.waiting_oack = self.oack is not None
        self.stalled = False  # the source had no data yet for the next block: resume() when it has

    def start(self, now: float) -> list[bytes]:
        self._arm(now)
        if self.oack is not None:
            return [self.oack]
        return self._fill(now)

    def _fill(self, now: float) -> list[bytes]:
        out = []
        limit = self.base + self.windowsize
        while self.next < limit and (self.last is None or self.next <= self.last):
            try:
                payload = self.source.read(self.blksize)
            except OSError:
                # The file went bad under us (I/O error, a vanished network mount): end here, so the adapter
                # closes the socket and releases the slot instead of an exception escaping the event loop callback.
                self._finish("read_error", now)
                return [codec.encode_error(codec.ERR_UNDEFINED, "read error")]
            if payload is None:
                self.stalled = True
                if not self.window:
                    # Nothing in flight, so nothing to retransmit and no client to wait for: only the disk. The
                    # session lifetime still bounds the wait; resume() re-arms the timer with what it sends.
                    self._retry_at = None
                break
            datagram = codec.encode_data(self.next, payload)
            if len(payload) < self.blksize:
                self.last = self.next
            self.window.append((datagram, len(payload)))
            out.append(datagram)
            self.next += 1
        return out

    def resume(self, now: float) -> list[bytes]:
        """The source has data again: what the window can now send (nothing if the transfer did not stall)."""
        if not self.stalled or self.completion is not None or self.waiting_oack:
            return []
        self.stalled = False
        idle = not self.window
        out = self._fill(now)
        if idle and out and self.completion is None:
            self._arm(now)
        return out

    def _packet(self, packet: codec.Packet, now: float) -> list[bytes]:
        return self._ack(packet.block, now) if isinstance(packet, Ack) else []

    def _ack(self, block: int, now: float) -> list[bytes]:
        if self.waiting_oack:
            if block != 0:
                return []
            self.waiting_oack = False
            self._progress(now)
            self.stalled = False
            return self._fill(now)
        acked = self.base - 1 + ((block - (self.base - 1)) & 0xFFFF)
        if acked == self.base - 1 or acked >= self.next:
            return []  # duplicate (never a resend) or a block we never sent
        while self.base <= acked:
            _, length = self.window.popleft()
            self.bytes += length
            self.base += 1
        self._progress(now)
        self.stalled = False  # _fill() below asks the source again
        if self.last is not None and acked == self.last:
            self._finish("ok", now)
            return []
        if not self.window:  # all acknowledged (always so in lock-step): only new blocks
            return self._fill(now)
        # RFC 7440 section 4: the next window starts right after the acknowledged block. An ACK short of the window's
        # end means the client lost the block after it (or got blocks out of order and dropped the rest): what is
        # still unacknowledged goes again at once, already encoded, then new blocks fill the window.
        again = [datagram for datagram, _ in self.window]
        more = self._fill(now)
        if self.completion is not None:
            return more  # the file went bad: only the ERROR
        self.retransmits += len(again)
        return again + more

    def hand_over(self) -> None:
        """The transfer runs elsewhere from here on (a transfer worker process, with a transfer of its own over
        the same file and the same options): close the source here, send and time nothing; :meth:`ended` records
        how it went once the other one is done."""
        self.source.close()
        self._retry_at = None

    def ended(self, outcome: str, sent: int, retransmits: int, now: float) -> None:
        """The transfer that ran elsewhere (:meth:`hand_over`) is done: ``sent`` bytes acknowledged."""
        self.bytes = sent
        self.retransmits = retransmits
        self._finish(outcome, now)

    def _resend(self) -> list[bytes]:
        if self.waiting_oack:
            assert self.oack is not None
            return [self.oack]
        return [datagram for datagram, _ in self.window]

    def _closed(self) -> None:
        self.window.clear()
        self.source.close()


class WriteTransfer(_Base):
    """Receiving an upload (WRQ), lock-step, size capped.

    Once the last block is in, the whole file waits in :meth:`take_upload` for the adapter to store (off the event
    loop); the final ACK goes out from :meth:`stored`, only when the file is durable (RFC 1350: the ACK of the last
    block says the file arrived). Until then retransmissions of the last DATA get no answer.
    """

    def __init__(self, client: Address, filename: str, limits: Limits, negotiated: Negotiated,
                 now: float, max_size: int, netascii: bool = False) -> None:
        super().__init__(client, filename, limits, negotiated, now)
        self.max_size = max_size  # bytes on the wire (netascii included: the stored file is never larger)
        self.netascii = netascii
        self.expected = 1
        self.received = bytearray()  # one buffer: a list of small blocks would cost ~41 bytes of header each
        self.last_sent = b""
        self.storing = False  # the last block is in; the file is being stored
        self._upload: bytes | None = None

    def start(self, now: float) -> list[bytes]:
        self._arm(now)
        self.last_sent = self.oack if self.oack is not None else codec.encode_ack(0)
        return [self.last_sent]

    def _packet(self, packet: codec.Packet, now: float) -> list[bytes]:
        if not isinstance(packet, Data) or self.storing:
            return []
        if packet.block == (self.expected - 1) & 0xFFFF:
            return [self.last_sent]  # our ACK was lost: acknowledge again
        if packet.block != self.expected & 0xFFFF:
            return []
        if self.bytes + len(packet.payload) > self.max_size:
            self._finish("too_large", now)
            return [codec.encode_error(codec.ERR_DISK_FULL, "upload too large")]
        self.received += packet.payload
        self.bytes += len(packet.payload)
        self._progress(now)
        self.last_sent = codec.encode_ack(self.expected)
        self.expected += 1
        if len(packet.payload) < self.blksize:
            received = bytes(self.received)
            self.received = bytearray()
            self._upload = Netascii.decode(received) if self.netascii else received
            self.storing = True
            self._retry_at = None  # nothing to retransmit until it is stored: the final ACK is not out yet
            return []
        return [self.last_sent]

    def take_upload(self) -> bytes | None:
        """The whole file once the last block is in (once: the adapter stores it), else None."""
        upload, self._upload = self._upload, None
        return upload

    def stored(self, error: BaseException | None, now: float) -> list[bytes]:
        """The adapter stored the upload (``error`` None) or could not: the final ACK, or the ERROR to send."""
        if not self.storing or self.completion is not None:
            return []  # ended meanwhile (session lifetime, service stopping)
        self.storing = False
        if isinstance(error, Refused):
            self._finish("refused_upload", now)
            code = codec.ERR_DISK_FULL if error.reason == Reason.TOO_LARGE else codec.ERR_ACCESS
            return [codec.encode_error(code, str(error))]
        if error is not None:
            self._finish("disk_full", now)
            message = error.strerror if isinstance(error, OSError) and error.strerror else "cannot store"
            return [codec.encode_error(codec.ERR_DISK_FULL, message)]
        self._finish("ok", now)
        self._dally_until = now + min(DALLY, max(0.0, self.started + self.limits.session_lifetime - now))
        return [self.last_sent]

    def _dallied(self, data: bytes) -> list[bytes]:
        # Our final ACK was lost and the client sends its last DATA again: acknowledge it again, store nothing.
        if len(data) >= 4 and data[:2] == b"\0\3" and (data[2] << 8 | data[3]) == (self.expected - 1) & 0xFFFF:
            return [self.last_sent]
        return []

    def _resend(self) -> list[bytes]:
        return [self.last_sent]

    def _closed(self) -> None:
        self.received = bytearray()
        self._upload = None


Transfer = ReadTransfer | WriteTransfer
