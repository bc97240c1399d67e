"""The transfer state machine and the request core with injected time: no sockets, no sleeping."""

from __future__ import annotations

from dataclasses import replace

from bootstrapd.provisioning.resolver import Reason, Refused
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import Data, Error, OAck
from bootstrapd.tftp.server import Refusal, Started, TftpServer
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
    # Client got 1 and 2, lost 3: it acknowledges 2. The window slides: only new blocks go out.
    assert blocks(sent(t.receive(ack(2), CLIENT, 0.2))) == [5, 6]
    # Duplicate ACK 2: no resend (Sorcerer's Apprentice).
    assert t.receive(ack(2), CLIENT, 0.3) == []
    # ACK for a block never sent: ignored.
    assert t.receive(ack(9), CLIENT, 0.3) == []
    # Timeout: the whole window again, from the first unacknowledged block.
    assert blocks(t.timeout(1.2)) == [3, 4, 5, 6]
    assert blocks(sent(t.receive(ack(6), CLIENT, 1.3))) == [7, 8, 9, 10]


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


def test_write_transfer() -> None:
    store = Store()
    t = WriteTransfer(CLIENT, "up.log", store, LIMITS, negotiate({}, LIMITS, None, write=True), 0.0, 2000)
    assert t.start(0.0) == [ack(0)]
    assert sent(t.receive(codec.encode_data(1, b"x" * 512), CLIENT, 0.1)) == [ack(1)]
    assert sent(t.receive(codec.encode_data(1, b"x" * 512), CLIENT, 0.2)) == [ack(1)]  # our ACK was lost
    assert sent(t.receive(codec.encode_data(2, b"yy"), CLIENT, 0.3)) == [ack(2)]
    assert store.stored == [b"x" * 512 + b"yy"]
    assert t.completion and t.completion.outcome == "ok" and t.completion.write


def test_write_too_large() -> None:
    t = WriteTransfer(CLIENT, "up.log", Store(), LIMITS, negotiate({}, LIMITS, None, write=True), 0.0, 600)
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
    per_client = server.request(rrq("small.cfg"), a, 0.0)
    assert isinstance(per_client, Refusal) and per_client.outcome in ("busy", "rate_limited")
    overall = server.request(rrq("small.cfg"), c, 0.0)
    assert isinstance(overall, Refusal) and overall.outcome == "busy"
    server.finished(first)
    assert server.large == 0 and server.active == 2
    again = server.request(rrq("small.cfg"), c, 0.0)
    assert isinstance(again, Started)
    # Rate limit: a's bucket (burst 4) is empty now; dropped silently until it refills.
    limited = server.request(rrq("small.cfg"), a, 0.1)
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
