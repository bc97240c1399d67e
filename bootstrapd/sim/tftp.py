"""The phone's TFTP client, the other side of :mod:`bootstrapd.tftp.codec`: one download (RRQ) or upload (WRQ).

No I/O and no clock. A download is the guide's capture ("Downloading and Verifying Configurations"): an octet RRQ
asking for ``blksize 1432``, ACK 0 for the OACK, then lock-step, one ACK per DATA. The first reply fixes the
server's transfer ID (its port); a datagram from another port gets ERROR 5 and the transfer goes on (RFC 1350).
A silent server is retried: the last packet again after ``timeout`` seconds, ``tries`` times in all, then the
transfer has timed out. A duplicate DATA is acknowledged again (the server must not answer a duplicate ACK).

Outputs are ``(datagram, port)`` pairs; port None is the server's transfer ID once known, else port 69.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bootstrapd.sim.result import ERROR, NOT_FOUND, OK, REFUSED, TIMEOUT, Result
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import TftpError

BLKSIZE = 1432  # what Yealink phones ask for (the guide's capture)
MAX_FILE = 64 << 20  # a configuration client never needs more; a runaway server cannot fill memory

Send = tuple[bytes, int | None]


@dataclass
class _Transfer:
    name: str
    blksize: int = BLKSIZE
    timeout: float = 5.0
    tries: int = 5
    server_port: int = 69
    peer: int | None = None
    deadline: float | None = None
    result: Result | None = None
    retries: int = 0
    _attempt: int = 0
    _last: bytes = field(default=b"", repr=False)
    _block_size: int = 512  # what was negotiated (512 without an OACK)

    def _send(self, data: bytes, now: float, port: int | None = None) -> list[Send]:
        self._last = data
        self._attempt = 0
        self.deadline = now + self.timeout
        return [(data, port)]

    def _finish(self, data: bytes | None, status: str, detail: str = "") -> None:
        self.result = Result(data, status, detail, self.retries)
        self.deadline = None

    def _error(self, packet: codec.Error) -> None:
        status = {codec.ERR_NOT_FOUND: NOT_FOUND, codec.ERR_ACCESS: REFUSED}.get(packet.code, ERROR)
        self._finish(None, status, f"TFTP error {packet.code}: {packet.message}"[:200])

    def _decode(self, data: bytes, port: int) -> tuple[codec.Packet | None, list[Send]]:
        """The packet, or None with what to answer a stranger (ERROR 5) or garbage (nothing)."""
        if self.result is not None:
            return None, []
        if self.peer is not None and port != self.peer:
            return None, [(codec.encode_error(codec.ERR_UNKNOWN_TID, "unknown transfer ID"), port)]
        try:
            packet = codec.decode(data)
        except TftpError:
            return None, []
        if self.peer is None:
            self.peer = port
        return packet, []

    def on_timer(self, now: float) -> list[Send]:
        if self.deadline is None or now < self.deadline or self.result is not None:
            return []
        self._attempt += 1
        if self._attempt >= self.tries:
            self._finish(None, TIMEOUT, f"TFTP timeout: no answer after {self.tries} tries of "
                                          f"{self.timeout:g} s")
            return []
        self.retries += 1
        self.deadline = now + self.timeout
        return [(self._last, None if self.peer is not None else self.server_port)]


@dataclass
class TftpGet(_Transfer):
    max_size: int = MAX_FILE
    _expected: int = 1
    _chunks: list[bytes] = field(default_factory=list, repr=False)
    _size: int = 0

    def start(self, now: float) -> list[Send]:
        request = codec.encode_request(codec.RRQ, self.name, "octet", {"blksize": str(self.blksize)})
        return self._send(request, now, self.server_port)

    def receive(self, data: bytes, port: int, now: float) -> list[Send]:
        packet, answer = self._decode(data, port)
        if packet is None:
            return answer
        if isinstance(packet, codec.Error):
            self._error(packet)
            return []
        if isinstance(packet, codec.OAck) and self._expected == 1 and not self._chunks:
            try:
                size = int(packet.options.get("blksize", "512"))
            except ValueError:
                size = 0
            if not 8 <= size <= self.blksize:
                self._finish(None, ERROR, f"TFTP: the server answered blksize {packet.options.get('blksize')!r}")
                return [(codec.encode_error(codec.ERR_OPTION, "bad blksize"), None)]
            self._block_size = size
            return self._send(codec.encode_ack(0), now)
        if not isinstance(packet, codec.Data):
            return []
        if packet.block == (self._expected - 1) & 0xFFFF and self._last:
            return [(self._last, None)]  # our ACK was lost: acknowledge again, once per duplicate
        if packet.block != self._expected & 0xFFFF:
            return []
        self._chunks.append(packet.payload)
        self._size += len(packet.payload)
        if self._size > self.max_size:
            self._finish(None, ERROR, f"TFTP: file larger than {self.max_size} bytes")
            return [(codec.encode_error(codec.ERR_DISK_FULL, "too large"), None)]
        ack = codec.encode_ack(packet.block)
        self._expected += 1
        if len(packet.payload) < self._block_size:
            self._finish(b"".join(self._chunks), OK)
            return [(ack, None)]
        return self._send(ack, now)


@dataclass
class TftpPut(_Transfer):
    """An upload (WRQ), lock-step: the phone's ``<mac>-local.cfg`` backup."""

    payload: bytes = b""
    _block: int = 0
    _final: bool = False  # the last DATA sent was shorter than a block: its ACK ends the upload

    def start(self, now: float) -> list[Send]:
        request = codec.encode_request(codec.WRQ, self.name, "octet",
                                       {"blksize": str(self.blksize), "tsize": str(len(self.payload))})
        return self._send(request, now, self.server_port)

    def _data(self, now: float) -> list[Send]:
        start = self._block * self._block_size
        chunk = self.payload[start:start + self._block_size]
        self._block += 1
        self._final = len(chunk) < self._block_size
        return self._send(codec.encode_data(self._block, chunk), now)

    def receive(self, data: bytes, port: int, now: float) -> list[Send]:
        packet, answer = self._decode(data, port)
        if packet is None:
            return answer
        if isinstance(packet, codec.Error):
            self._error(packet)
            return []
        if isinstance(packet, codec.OAck) and self._block == 0:
            try:
                size = int(packet.options.get("blksize", "512"))
            except ValueError:
                size = 0
            self._block_size = size if 8 <= size <= self.blksize else 512
            return self._data(now)
        if not isinstance(packet, codec.Ack) or packet.block != self._block & 0xFFFF:
            return []
        if self._final:
            self._finish(b"", OK)
            return []
        return self._data(now)
