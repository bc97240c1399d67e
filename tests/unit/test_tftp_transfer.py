"""The transfer state machine and the request core with injected time: no sockets, no sleeping."""

from __future__ import annotations

from dataclasses import replace

from bootstrapd.provisioning.resolver import Reason, Refused
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import Data, Error, OAck
from bootstrapd.tftp.server import Refusal, Sink, Started, TftpServer
from bootstrapd.tftp.settings import TftpSettings
from bootstrapd.tftp.transfer import Limits, Netascii, ReadTransfer, WriteTransfer, negotiate

CLIENT = ("10.77.0.10", 40000)
STRANGER = ("10.77.0.66", 40000)
LIMITS = Limits(blksize_max=1468, windowsize_max=64, timeout=1.0, retries=3, first_ack_retries=1,
                session_lifetime=100.0)


class Mem:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size: int | None = len(data)
        self.offset = 0
        self.closed = False

    def read(self, n: int) -> bytes:
        chunk = self.data[self.offset:self.offset + n]
        self.offset += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


def blocks(datagrams: list[bytes]) -> list[int]:
    out = []
    for d in datagrams:
        p = codec.decode(d)
        assert isinstance(p, Data)
        out.append(p.block)
    return out


def sent(out: list[tuple[bytes, tuple[object, ...]]]) -> list[bytes]:
    assert all(to == CLIENT for _, to in out)
    return [d for d, _ in out]


def ack(n: int) -> bytes:
    return codec.encode_ack(n)


def read(data: bytes, options: dict[str, str] | None = None,
         limits: Limits = LIMITS) -> tuple[ReadTransfer, list[bytes]]:
    source = Mem(data)
    t = ReadTransfer(CLIENT, "f", source, limits, negotiate(options or {}, limits, len(data)), 0.0)
    return t, t.start(0.0)


def test_lockstep_with_loss_of_data_and_ack() -> None:
    data = bytes(range(256)) * 5  # 1280 bytes: blocks of 512, 512, 256
    t, out = read(data)
    assert blocks(out) == [1]
    assert t.deadline == 1.0
    # DATA 1 lost: nothing before the deadline, then the same block again.
    assert t.timeout(0.5) == []
    assert blocks(t.timeout(1.0)) == [1]
    assert t.deadline == 3.0  # backoff: 2 s
    assert blocks(sent(t.receive(ack(1), CLIENT, 1.1))) == [2]
    assert t.deadline == 2.1  # progress resets the backoff
    # ACK 2 lost: DATA 2 again on timeout; a duplicate ACK 1 changes nothing.
    assert t.receive(ack(1), CLIENT, 1.2) == []
    assert blocks(t.timeout(2.1)) == [2]
    last = sent(t.receive(ack(2), CLIENT, 2.5))
    assert blocks(last) == [3] and len(last[0]) == 4 + 256
    assert not t.done
    t.receive(ack(3), CLIENT, 2.6)
    assert t.done and t.completion is not None
    assert t.completion.outcome == "ok" and t.completion.bytes == 1280 and t.completion.retransmits == 2
    assert t.deadline is None


def test_exact_multiple_ends_with_empty_block() -> None:
    t, _out = read(b"x" * 1024)
    assert blocks(sent(t.receive(ack(1), CLIENT, 0.1))) == [2]
    final = sent(t.receive(ack(2), CLIENT, 0.2))
    assert final == [codec.encode_data(3, b"")]
    t.receive(ack(3), CLIENT, 0.3)
    assert t.completion and t.completion.outcome == "ok" and t.completion.bytes == 1024


def test_oack_loss_then_blocks() -> None:
    data = b"a" * 3000
    t, out = read(data, {"blksize": "1000", "tsize": "0", "timeout": "2", "bogus": "1"})
    assert [codec.decode(d) for d in out] == [OAck({"blksize": "1000", "timeout": "2", "tsize": "3000"})]
    assert t.deadline == 1.0  # our own timer until the client answers (the client's 2 s applies after ACK 0)
    assert t.timeout(1.0) == out  # OACK lost: OACK again
    assert t.receive(ack(1), CLIENT, 2.5) == []  # not the ACK 0 we wait for
    assert blocks(sent(t.receive(ack(0), CLIENT, 3.0))) == [1]


def test_option_refused_by_client_ends_transfer() -> None:
    t, _out = read(b"a" * 100, {"blksize": "1000"})
    assert t.receive(codec.encode_error(8, "no"), CLIENT, 0.1) == []
    assert t.completion and t.completion.outcome == "option_refused"


def test_window_slides_and_retransmits_from_first_unacked() -> None:
    data = bytes(100) * 100  # 10,000 bytes at 512: 20 blocks (the 20th is 272 bytes)
    t, out = read(data, {"windowsize": "4"})
    assert codec.decode(out[0]) == OAck({"windowsize": "4"})
    first = sent(t.receive(ack(0), CLIENT, 0.1))
    assert blocks(first) == [1, 2, 3, 4]
    # Client got 1 and 2, lost 3: it acknowledges 2. RFC 7440 section 4: the next window starts right after the
    # acknowledged block, so 3 and 4 go again at once, with 5 and 6 to fill the window.
    assert blocks(sent(t.receive(ack(2), CLIENT, 0.2))) == [3, 4, 5, 6]
    assert t.retransmits == 2
    # Duplicate ACK 2: no resend (Sorcerer's Apprentice).
    assert t.receive(ack(2), CLIENT, 0.3) == []
    # ACK for a block never sent: ignored.
    assert t.receive(ack(9), CLIENT, 0.3) == []
    # Timeout: the whole window again, from the first unacknowledged block.
    assert blocks(t.timeout(1.2)) == [3, 4, 5, 6]
    assert blocks(sent(t.receive(ack(6), CLIENT, 1.3))) == [7, 8, 9, 10]


def test_partial_window_ack_goes_on_at_once_with_a_full_window() -> None:
    """RFC 7440 section 4: after an ACK for block n the sender goes on from n+1 with a full window, at once.

    windowsize 2; the window 3-4 is out and the client acknowledges 3 (it lost 4): 4 and 5 leave immediately, not
    5 alone with 4 waiting for the retransmission timeout.
    """
    t, out = read(b"w" * 512 * 8, {"windowsize": "2"})
    assert codec.decode(out[0]) == OAck({"windowsize": "2"})
    assert blocks(sent(t.receive(ack(0), CLIENT, 0.1))) == [1, 2]
    assert blocks(sent(t.receive(ack(2), CLIENT, 0.2))) == [3, 4]
    assert blocks(sent(t.receive(ack(3), CLIENT, 0.3))) == [4, 5]
    assert t.deadline == 0.3 + 1.0  # the retransmission timer restarts from this window
    assert blocks(sent(t.receive(ack(5), CLIENT, 0.4))) == [6, 7]
    assert t.completion is None


def test_window_clamped_and_zero_ignored() -> None:
    assert negotiate({"windowsize": "1000"}, LIMITS, 10).windowsize == 64
    zero = negotiate({"windowsize": "0", "blksize": "abc", "timeout": "300", "tsize": "x"}, LIMITS, 10)
    assert zero.accepted == {} and zero.windowsize == 1 and zero.blksize == 512
    assert negotiate({"blksize": "65464"}, LIMITS, 10).blksize == 1468
    assert negotiate({"blksize": "70000"}, replace(LIMITS, blksize_max=65464), 10).blksize == 65464
    assert negotiate({"blksize": "4"}, LIMITS, 10).accepted == {}
    assert negotiate({"blksize": "٣٣"}, LIMITS, 10).accepted == {}  # non-ASCII digits


def test_give_up_after_last_try() -> None:
    t, _out = read(b"z" * 2000)
    sent(t.receive(ack(1), CLIENT, 0.5))  # the client is alive: full retries (3)
    now = 0.5
    for _ in range(3):
        deadline = t.deadline
        assert deadline is not None and deadline > now
        now = deadline
        assert blocks(t.timeout(now)) == [2]
    deadline = t.deadline
    assert deadline is not None
    assert t.timeout(deadline) == []
    assert t.done and t.completion and t.completion.outcome == "timeout"


def test_few_retransmits_before_first_ack() -> None:
    t, _out = read(b"z" * 2000)
    assert blocks(t.timeout(1.0)) == [1]  # first_ack_retries = 1
    deadline = t.deadline
    assert deadline is not None
    assert t.timeout(deadline) == []
    assert t.completion and t.completion.outcome == "timeout"


def test_wrong_tid_gets_error_5_and_transfer_goes_on() -> None:
    t, _out = read(b"q" * 1000)
    answer = t.receive(ack(1), STRANGER, 0.1)
    assert len(answer) == 1 and answer[0][1] == STRANGER
    assert codec.decode(answer[0][0]) == Error(5, "unknown transfer ID")
    # An ERROR from a stranger is not answered and does not end the transfer.
    assert t.receive(codec.encode_error(0, "go away"), STRANGER, 0.1) == []
    assert not t.done
    assert blocks(sent(t.receive(ack(1), CLIENT, 0.2))) == [2]


def test_error_from_client_ends_it() -> None:
    t, _out = read(b"q" * 1000)
    assert t.receive(codec.encode_error(0, "cancelled"), CLIENT, 0.1) == []
    assert t.completion and t.completion.outcome == "client_error"
    assert t.receive(ack(1), CLIENT, 0.2) == []


def test_session_lifetime() -> None:
    limits = replace(LIMITS, session_lifetime=2.5, retries=50)
    t, _out = read(b"q" * 100000, limits=limits)
    now = 0.0
    for n in range(1, 10):
        now += 0.5
        if now >= 2.5:
            break
        t.receive(ack(n), CLIENT, now)
    assert t.deadline == 2.5
    reply = t.timeout(2.5)
    assert codec.decode(reply[0]) == Error(0, "session lifetime exceeded")
    assert t.completion and t.completion.outcome == "lifetime"


def test_block_numbers_roll_over() -> None:
    data = b"r" * (8 * 70000)  # 70,000 blocks of 8 bytes
    limits = replace(LIMITS, blksize_max=8)
    t, out = read(data, {"blksize": "8"}, limits)
    out = sent(t.receive(ack(0), CLIENT, 0.0))
    for n in range(1, 70001):
        assert blocks(out) == [n & 0xFFFF]
        out = sent(t.receive(ack(n & 0xFFFF), CLIENT, 0.0))
    final = out
    assert final == [codec.encode_data(70001 & 0xFFFF, b"")]
    t.receive(ack(70001 & 0xFFFF), CLIENT, 0.0)
    assert t.completion and t.completion.bytes == len(data)


def test_netascii() -> None:
    raw = b"a\nb\rc\r\n"
    assert Netascii.convert(raw) == b"a\r\nb\r\0c\r\0\r\n"
    assert Netascii.converted_size(raw) == len(Netascii.convert(raw))
    source = Netascii(Mem(raw * 1000))
    out = b""
    while chunk := source.read(7):
        out += chunk
    assert out == Netascii.convert(raw * 1000)


class Store:
    def __init__(self) -> None:
        self.stored: list[bytes] = []

    def store(self, data: bytes) -> None:
        self.stored.append(data)


def store(t: WriteTransfer, sink: Sink, now: float) -> list[bytes]:
    """What the adapter does in its upload worker, here in line: store what the transfer hands over, report back."""
    upload = t.take_upload()
    if upload is None:
        return []  # not finished (or already stored)
    try:
        sink.store(upload)
    except (OSError, Refused) as exc:
        return t.stored(exc, now)
    return t.stored(None, now)


def upload(limits: Limits = LIMITS, max_size: int = 2000, netascii: bool = False,
           options: dict[str, str] | None = None) -> WriteTransfer:
    return WriteTransfer(CLIENT, "up.log", limits, negotiate(options or {}, limits, None, write=True), 0.0, max_size,
                         netascii=netascii)


def test_write_transfer() -> None:
    sink = Store()
    t = upload()
    assert t.start(0.0) == [ack(0)]
    assert sent(t.receive(codec.encode_data(1, b"x" * 512), CLIENT, 0.1)) == [ack(1)]
    assert sent(t.receive(codec.encode_data(1, b"x" * 512), CLIENT, 0.2)) == [ack(1)]  # our ACK was lost
    # The last block: no final ACK until the file is stored (the adapter stores it off the event loop) ...
    assert t.receive(codec.encode_data(2, b"yy"), CLIENT, 0.3) == []
    assert t.storing and t.deadline == 100.0  # no retransmission while storing: only the session lifetime
    assert t.receive(codec.encode_data(2, b"yy"), CLIENT, 0.4) == []  # the client's retransmission: not yet
    assert t.completion is None
    # ... then it goes out.
    assert store(t, sink, 0.5) == [ack(2)]
    assert sink.stored == [b"x" * 512 + b"yy"]
    assert t.completion and t.completion.outcome == "ok" and t.completion.write
    assert t.take_upload() is None  # handed over once


def test_an_upload_that_cannot_be_stored_gets_an_error_not_the_final_ack() -> None:
    class Broken(Store):
        def store(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

    t = upload()
    t.start(0.0)
    assert t.receive(codec.encode_data(1, b"z"), CLIENT, 0.1) == []
    assert [codec.decode(d) for d in store(t, Broken(), 0.2)] == [Error(3, "No space left on device")]
    assert t.completion and t.completion.outcome == "disk_full"
    # Stored after the transfer ended meanwhile (session lifetime, service stopping): nothing to send.
    late = upload()
    late.start(0.0)
    late.receive(codec.encode_data(1, b"z"), CLIENT, 0.1)
    late.abort("stopped", 0.2)
    assert late.stored(None, 0.3) == []


def test_write_too_large() -> None:
    t = upload(max_size=600)
    t.start(0.0)
    t.receive(codec.encode_data(1, b"x" * 512), CLIENT, 0.1)
    reply = sent(t.receive(codec.encode_data(2, b"x" * 512), CLIENT, 0.2))
    assert codec.decode(reply[0]) == Error(3, "upload too large")


class Files:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.uploads: dict[str, bytes] = {}

    def open(self, name: str, client: str | None = None) -> object:
        if name not in self.files:
            raise Refused(Reason.NOT_FOUND, name)
        data = self.files[name]

        class Opened:
            size = len(data)

            def __init__(self) -> None:
                self.data = data

            def reader(self) -> Mem:
                return Mem(data)

        return Opened()

    def open_nowait(self, name: str, client: str | None = None) -> object:
        return self.open(name, client)  # all in memory

    def upload_target(self, name: str, client: str | None = None) -> str:
        raise Refused(Reason.UPLOAD_DISABLED, "uploads are disabled")

    def store_upload(self, name: str, data: bytes, client: str | None = None) -> str:
        raise AssertionError


def rrq(name: str, **options: str) -> bytes:
    return codec.encode_request(codec.RRQ, name, "octet", options)


def test_server_limits_and_refusals() -> None:
    files = Files({"small.cfg": b"s" * 100, "fw.rom": b"f" * 5000})
    settings = TftpSettings(enabled=True, max_transfers=3, max_per_client=2, rate_limit=2.0, large_file_size=4096,
                            max_large_transfers=1)
    server = TftpServer(settings, files)  # type: ignore[arg-type]
    a, b, c = ("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)
    missing = server.request(rrq("nope"), a, 0.0)
    assert isinstance(missing, Refusal) and missing.datagram == codec.encode_error(1, "file not found")
    first = server.request(rrq("fw.rom"), a, 0.0)
    assert isinstance(first, Started) and first.large
    busy_large = server.request(rrq("fw.rom"), b, 0.0)
    assert isinstance(busy_large, Refusal) and busy_large.outcome == "busy_large"
    # A small file does not wait behind the firmware.
    small = server.request(rrq("small.cfg"), b, 0.0)
    assert isinstance(small, Started)
    # Per client: a has 1 transfer, its third request in the same instant is over its rate (burst 4 - 3 taken).
    second = server.request(rrq("small.cfg"), a, 0.0)
    assert isinstance(second, Started)
    per_client = server.request(rrq("small.cfg"), (a[0], 2), 0.0)
    assert isinstance(per_client, Refusal) and per_client.outcome in ("busy", "rate_limited")
    overall = server.request(rrq("small.cfg"), c, 0.0)
    assert isinstance(overall, Refusal) and overall.outcome == "busy"
    server.finished(first)
    assert server.large == 0 and server.active == 2
    again = server.request(rrq("small.cfg"), c, 0.0)
    assert isinstance(again, Started)
    # Rate limit: a's bucket (burst 4) is empty now; dropped silently until it refills.
    limited = server.request(rrq("small.cfg"), (a[0], 3), 0.1)
    assert isinstance(limited, Refusal) and limited.datagram is None and limited.outcome == "rate_limited"


def test_server_refuses_writes_and_odd_modes() -> None:
    server = TftpServer(TftpSettings(enabled=True), Files({}))  # type: ignore[arg-type]
    wrq = server.request(codec.encode_request(codec.WRQ, "x", "octet"), CLIENT, 0.0)
    assert isinstance(wrq, Refusal) and wrq.datagram is not None
    assert codec.decode(wrq.datagram) == Error(2, "access violation (upload_disabled)")
    mail = server.request(codec.encode_request(codec.RRQ, "x", "mail"), CLIENT, 0.0)
    assert isinstance(mail, Refusal) and mail.outcome == "bad_mode"


def test_server_blksize_capped_by_interface() -> None:
    server = TftpServer(TftpSettings(enabled=True), Files({"a": b"a" * 5000}))  # type: ignore[arg-type]
    started = server.request(rrq("a", blksize="9000"), CLIENT, 0.0, blksize_max=1468)
    assert isinstance(started, Started)
    assert codec.decode(started.datagrams[0]) == OAck({"blksize": "1468"})


def test_a_retransmitted_request_is_a_duplicate_not_a_second_transfer() -> None:
    """RFC 1350 section 4: a transfer is known by the client's TID (its address and port). A client whose first
    DATA (or OACK) is late sends its RRQ again from the same port: that is the same transfer, not a second one on
    another server TID (which the client would answer with ERROR 5, or take blocks from both)."""
    server = TftpServer(TftpSettings(enabled=True), Files({"a.cfg": b"a" * 2000}))  # type: ignore[arg-type]
    request = rrq("a.cfg", blksize="1024")
    first = server.request(request, CLIENT, 0.0)
    assert isinstance(first, Started)
    again = server.request(request, CLIENT, 0.9)
    assert isinstance(again, Refusal) and again.datagram is None and again.outcome == "duplicate"
    assert server.active == 1
    # The same request from another port is another transfer; another request from the same port too (a client
    # that gave up on the first and asks for something else).
    assert isinstance(server.request(request, (CLIENT[0], CLIENT[1] + 1), 1.0), Started)
    other = server.request(rrq("a.cfg"), CLIENT, 1.0)
    assert isinstance(other, Started)
    assert isinstance(server.request(rrq("a.cfg"), CLIENT, 1.1), Refusal)
    # Once a transfer has ended, the same request from the same port is a new transfer (tftp-hpa's interactive
    # client fetches file after file from one port).
    server.finished(first)
    server.finished(other)
    assert isinstance(server.request(rrq("a.cfg"), CLIENT, 2.0), Started)


def test_a_retransmitted_write_request_is_a_duplicate_too() -> None:
    class Uploads(Files):
        def upload_target(self, name: str, client: str | None = None) -> str:
            return name

    server = TftpServer(TftpSettings(enabled=True), Uploads({}))  # type: ignore[arg-type]
    wrq = codec.encode_request(codec.WRQ, "up.log", "octet")
    first = server.request(wrq, CLIENT, 0.0)
    assert isinstance(first, Started)
    again = server.request(wrq, CLIENT, 0.5)
    assert isinstance(again, Refusal) and again.outcome == "duplicate"
    assert server.active == 1 and server.uploads == 1


def test_netascii_upload_is_stored_with_line_ends_converted_back() -> None:
    """RFC 1350 (netascii, RFC 764): on the wire a line ends in CR LF and a bare CR is CR NUL; the file is stored
    with the local convention, LF and CR, also where a CR ends one block and its LF or NUL starts the next."""
    # A CR LF whose CR ends block 1, a CR NUL whose CR ends block 2, then lines of every kind.
    text = b"x" * 511 + b"\n" + b"y" * 510 + b"\r" + b"line one\nline two\r\nbare\rcarriage\n" * 40
    wire = Netascii.convert(text)
    assert Netascii.decode(wire) == text
    sink = Store()
    t = upload(max_size=1 << 20, netascii=True)
    t.start(0.0)
    chunks = [wire[i:i + 512] for i in range(0, len(wire), 512)]
    assert chunks[0].endswith(b"\r") and chunks[1].startswith(b"\n")  # pairs split across blocks
    assert chunks[1].endswith(b"\r") and chunks[2].startswith(b"\0")
    for n, chunk in enumerate(chunks, 1):
        t.receive(codec.encode_data(n, chunk), CLIENT, 0.1 * n)
    if len(chunks[-1]) == 512:
        t.receive(codec.encode_data(len(chunks) + 1, b""), CLIENT, 9.0)
    store(t, sink, 9.5)
    assert sink.stored == [text]


def test_the_server_asks_for_netascii_uploads_to_be_converted() -> None:
    class Uploads(Files):
        def upload_target(self, name: str, client: str | None = None) -> str:
            return name

        def store_upload(self, name: str, data: bytes, client: str | None = None) -> str:
            self.uploads[name] = data
            return name

    files = Uploads({})
    server = TftpServer(TftpSettings(enabled=True), files)  # type: ignore[arg-type]
    started = server.request(codec.encode_request(codec.WRQ, "up.log", "netascii"), CLIENT, 0.0)
    assert isinstance(started, Started) and isinstance(started.transfer, WriteTransfer)
    started.transfer.receive(codec.encode_data(1, b"a\r\nb\r\0"), CLIENT, 0.1)
    upload = started.transfer.take_upload()
    assert upload is not None and started.sink is not None
    started.sink.store(upload)
    assert files.uploads == {"up.log": b"a\nb\r"}


class Slow(Mem):
    """A source whose data comes in only as far as ``available`` says (a disk read still running answers None)."""

    def __init__(self, data: bytes, available: int) -> None:
        super().__init__(data)
        self.available = available

    def read(self, n: int) -> bytes | None:  # type: ignore[override]
        if self.offset + n > self.available and self.available < len(self.data):
            return None
        return super().read(n)


def test_a_stalled_read_sends_what_it_has_and_resumes_when_the_data_comes() -> None:
    # Issue #8 item 16: the file's data is read off the event loop; the transfer never waits for it inside the core.
    source = Slow(bytes(range(256)) * 16, available=1024)  # 4096 bytes, 8 blocks of 512; 2 in memory
    t = ReadTransfer(CLIENT, "f", source, LIMITS, negotiate({"windowsize": "4"}, LIMITS, 4096), 0.0)
    t.start(0.0)
    assert blocks(sent(t.receive(ack(0), CLIENT, 0.1))) == [1, 2]
    assert t.stalled and t.deadline == 1.1  # blocks 1 and 2 are in flight: their retransmission timer runs
    assert t.resume(0.2) == []  # woken for another transfer's data: still nothing here
    source.available = 4096
    assert blocks(t.resume(0.3)) == [3, 4]
    assert not t.stalled
    assert blocks(sent(t.receive(ack(4), CLIENT, 0.4))) == [5, 6, 7, 8]
    assert blocks(sent(t.receive(ack(8), CLIENT, 0.5))) == [9]  # the empty last block
    t.receive(ack(9), CLIENT, 0.6)
    assert t.completion and t.completion.outcome == "ok" and t.completion.bytes == 4096


def test_a_stall_with_nothing_in_flight_waits_for_the_disk_not_for_retries() -> None:
    # Everything sent is acknowledged and the next block is still being read: there is nothing to retransmit and
    # no client to give up on. Only the session lifetime bounds the wait; the timer restarts with what is sent.
    source = Slow(b"d" * 2048, available=1024)
    t = ReadTransfer(CLIENT, "f", source, LIMITS, negotiate({}, LIMITS, 2048), 0.0)
    assert blocks(t.start(0.0)) == [1]
    assert blocks(sent(t.receive(ack(1), CLIENT, 0.1))) == [2]
    assert t.receive(ack(2), CLIENT, 0.2) == []
    assert t.stalled and t.deadline == 100.0  # the session lifetime
    assert t.timeout(50.0) == [] and not t.done
    source.available = 2048
    assert blocks(t.resume(60.0)) == [3]
    assert t.deadline == 61.0
    sent(t.receive(ack(3), CLIENT, 60.1))
    assert blocks(sent(t.receive(ack(4), CLIENT, 60.2))) == [5]  # 2048 = 4 x 512: an empty block ends it
    t.receive(ack(5), CLIENT, 60.3)
    assert t.completion and t.completion.outcome == "ok"


def test_a_stall_at_the_start_sends_nothing_until_the_data_comes() -> None:
    source = Slow(b"s" * 700, available=0)
    t = ReadTransfer(CLIENT, "f", source, LIMITS, negotiate({}, LIMITS, 700), 0.0)
    assert t.start(0.0) == [] and t.stalled and t.deadline == 100.0
    source.available = 700
    assert blocks(t.resume(0.5)) == [1]
    assert t.deadline == 1.5  # the retransmission timer starts with the first block
    assert blocks(sent(t.receive(ack(1), CLIENT, 0.6))) == [2]


def test_netascii_never_sends_a_short_block_while_the_source_stalls() -> None:
    # A short block means the end of the file: netascii must wait for more data, not send what it converted so far.
    source = Netascii(Slow(b"a\nb\n" * 300, available=100))
    assert source.read(512) is None
    assert source.read(512) is None
    inner = source.source
    assert isinstance(inner, Slow)
    inner.available = 1200
    block = source.read(512)
    assert block is not None and len(block) == 512 and block.startswith(b"a\r\nb\r\n")


class ColdFiles(Files):
    """Files that are not in the cache: open_nowait() says they must be read first (off the loop)."""

    def open_nowait(self, name: str, client: str | None = None) -> object:
        if name not in self.files:
            raise Refused(Reason.NOT_FOUND, name)
        return None


def test_a_file_that_must_be_read_first_is_a_pending_request_holding_its_slot() -> None:
    from bootstrapd.tftp.server import Pending

    files = ColdFiles({"cold.cfg": b"c" * 700})
    server = TftpServer(TftpSettings(enabled=True, max_transfers=1), files)  # type: ignore[arg-type]
    request = rrq("cold.cfg", blksize="1024")
    pending = server.request(request, CLIENT, 0.0)
    assert isinstance(pending, Pending) and pending.name == "cold.cfg"
    assert server.active == 1
    busy = server.request(rrq("cold.cfg"), STRANGER, 0.1)
    assert isinstance(busy, Refusal) and busy.outcome == "busy"  # the slot is taken while the file is read
    again = server.request(request, CLIENT, 0.2)  # the client retransmits its RRQ meanwhile
    assert isinstance(again, Refusal) and again.outcome == "duplicate"
    started = server.opened(pending, files.open("cold.cfg"), 0.5)  # type: ignore[arg-type]
    assert isinstance(started, Started) and server.active == 1
    assert codec.decode(started.datagrams[0]) == OAck({"blksize": "1024"})
    assert isinstance(server.request(request, CLIENT, 0.6), Refusal)  # still the same transfer
    server.finished(started)
    assert server.active == 0


def test_a_pending_request_whose_file_cannot_be_read_is_refused_and_frees_its_slot() -> None:
    from bootstrapd.tftp.server import Pending

    server = TftpServer(TftpSettings(enabled=True), ColdFiles({"cold.cfg": b"c"}))  # type: ignore[arg-type]
    pending = server.request(rrq("cold.cfg"), CLIENT, 0.0)
    assert isinstance(pending, Pending)
    refusal = server.opened(pending, Refused(Reason.DENIED, "cold.cfg: Input/output error"), 1.0)
    assert isinstance(refusal, Refusal) and refusal.outcome == "denied" and refusal.datagram is not None
    assert codec.decode(refusal.datagram) == Error(2, "access violation (denied)")
    assert server.active == 0 and server.per_client == {}
    assert isinstance(server.request(rrq("cold.cfg"), CLIENT, 1.1), Pending)  # and may be asked for again
