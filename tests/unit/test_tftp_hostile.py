"""Adversarial review of the TFTP cores: hostile sequences with injected time, and the defects they found."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from bootstrapd.errors import ProtocolError
from bootstrapd.provisioning.resolver import Reason, Refused
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import Error
from bootstrapd.tftp.server import Pending, Refusal, Started, TftpServer
from bootstrapd.tftp.settings import TftpSettings
from bootstrapd.tftp.transfer import Netascii, ReadTransfer, WriteTransfer, negotiate
from tests.unit.test_tftp_transfer import CLIENT, LIMITS, Files, Mem, Store, ack, blocks, read, rrq, sent, store, upload

FILES = {"a.cfg": b"a" * 1024, "b.cfg": b"b\nc\r" * 300, "fw.rom": b"f" * 9000, "e": b""}

# Valid datagrams a client or a stranger might send, mutated below.
SEEDS = [
    rrq("a.cfg"), rrq("b.cfg", blksize="8", tsize="0"), rrq("fw.rom", windowsize="4", blksize="512"),
    rrq("e", timeout="255"), codec.encode_request(codec.RRQ, "b.cfg", "netascii", {"windowsize": "3"}),
    codec.encode_request(codec.WRQ, "up.log", "octet", {"tsize": "100", "blksize": "8"}),
    ack(0), ack(1), ack(2), ack(65535), codec.encode_data(1, b"x" * 8), codec.encode_data(2, b"y"),
    codec.encode_error(8, "no"), codec.encode_error(0, ""), codec.encode_oack({"blksize": "8"}), b"\0", b"\0\4\0",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(data)))
        if kind == 0 and data:
            data[min(pos, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == 1:
            data[pos:pos] = draw(st.binary(max_size=6))
        elif kind == 2:
            del data[pos:pos + draw(st.integers(1, 4))]
        else:
            data = data[:pos]
    return bytes(data)


PEERS = [CLIENT, ("10.77.0.10", 40001), ("10.77.0.11", 40000), ("fe80::1", 69, 0, 2)]

step = st.one_of(
    st.tuples(st.just("request"), mutated(), st.sampled_from(PEERS)),
    st.tuples(st.just("transfer"), mutated(), st.sampled_from(PEERS), st.integers(0, 7)),
    st.tuples(st.just("time"), st.floats(0.0, 40.0)),
)


class UploadFiles(Files):
    def upload_target(self, name: str, client: str | None = None) -> str:
        return name

    def store_upload(self, name: str, data: bytes, client: str | None = None) -> str:
        self.uploads[name] = data
        return name


class ColdUploadFiles(UploadFiles):
    """b.cfg is never in the cache: requests for it are Pending until the harness 'reads' it."""

    def open_nowait(self, name: str, client: str | None = None) -> object:
        return None if name == "b.cfg" else self.open(name, client)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_hostile_sequences_raise_only_protocol_errors_and_keep_counts(steps: list[tuple[object, ...]]) -> None:
    tftp = TftpSettings(enabled=True, max_transfers=6, max_per_client=3, rate_limit=50.0, large_file_size=5000,
                        max_large_transfers=1, timeout=0.5, retries=3, first_ack_retries=1, session_lifetime=30.0,
                        upload_max_size=200)
    files = ColdUploadFiles(FILES)
    server = TftpServer(tftp, files)  # type: ignore[arg-type]
    live: list[Started] = []
    pending: list[Pending] = []
    now = 0.0

    def reap() -> None:
        for started in [s for s in live if s.transfer.done]:
            live.remove(started)
            server.finished(started)

    def read_pending() -> None:  # the adapter's worker has read the cold file
        for request in pending:
            outcome = server.opened(request, files.open(request.name), now)  # type: ignore[arg-type]
            if isinstance(outcome, Started):
                live.append(outcome)
        pending.clear()

    for item in steps:
        if item[0] == "request":
            _, data, peer = item
            try:
                outcome = server.request(data, peer, now)  # type: ignore[arg-type]
            except ProtocolError:
                continue
            if isinstance(outcome, Started):
                live.append(outcome)
            elif isinstance(outcome, Pending):
                pending.append(outcome)
        elif item[0] == "transfer":
            _, data, peer, index = item
            if not live:
                continue
            transfer = live[int(index) % len(live)].transfer  # type: ignore[call-overload]
            try:
                out = transfer.receive(data, peer, now)  # type: ignore[arg-type]
            except ProtocolError:
                continue
            for datagram, _to in out:
                assert len(datagram) <= 4 + 65464
            finish_upload(live[int(index) % len(live)], now)  # type: ignore[call-overload]
        else:
            now += float(item[1])  # type: ignore[arg-type]
            read_pending()
            for started in live:
                started.transfer.timeout(now)
        reap()
        assert server.active == len(live) + len(pending)
        assert sum(server.per_client.values()) == len(live) + len(pending)
    read_pending()
    # Left alone, every transfer ends by itself: no slot is held forever.
    for _ in range(200):
        if not live:
            break
        deadlines = [s.transfer.deadline for s in live if s.transfer.deadline is not None]
        now = max(now, min(deadlines)) if deadlines else now + 1
        for started in live:
            started.transfer.timeout(now)
        reap()
    assert not live and server.active == 0 and server.per_client == {}
    # And the service still answers a normal client.
    assert isinstance(server.request(rrq("a.cfg"), ("10.77.0.200", 1234), now + 100.0), Started)


def test_client_timeout_option_does_not_hold_a_half_open_slot() -> None:
    # A spoofed RRQ with timeout=255 must not keep a transfer (and its socket) for the whole session lifetime: until
    # the client has answered, our own retransmission timer applies.
    limits = replace(LIMITS, session_lifetime=600.0)
    t, out = read(b"x" * 100, {"timeout": "255"}, limits)
    assert codec.decode(out[0]) == codec.OAck({"timeout": "255"})
    now = 0.0
    while not t.done:
        deadline = t.deadline
        assert deadline is not None
        now = deadline
        t.timeout(now)
    assert t.completion and t.completion.outcome == "timeout"
    assert now <= 1.0 + 2.0  # first_ack_retries = 1 at our 1 s timeout, not 255 s
    # Once the client has answered, its timeout option is honoured.
    t, out = read(b"x" * 2000, {"timeout": "7"}, limits)
    sent(t.receive(ack(0), CLIENT, 0.5))
    assert t.deadline == 7.5


class Failing(Mem):
    def read(self, n: int) -> bytes:
        if self.offset >= 512:
            raise OSError(5, "Input/output error")
        return super().read(n)


def test_read_error_ends_the_transfer_inside_the_core() -> None:
    t = ReadTransfer(CLIENT, "f", Failing(b"x" * 5000), LIMITS, negotiate({}, LIMITS, 5000), 0.0)
    assert blocks(t.start(0.0)) == [1]
    reply = sent(t.receive(ack(1), CLIENT, 0.1))
    assert codec.decode(reply[0]) == Error(0, "read error")
    assert t.completion and t.completion.outcome == "read_error"


def test_upload_final_ack_is_repeated_after_completion() -> None:
    # RFC 1350 section 6: the host sending the final ACK dallies, answering a retransmitted last DATA, or the
    # client reports a failed upload although the file was stored.
    sink = Store()
    t = upload()
    t.start(0.0)
    assert t.receive(codec.encode_data(1, b"tail"), CLIENT, 0.1) == []
    assert store(t, sink, 0.2) == [ack(1)]
    assert t.completion and t.completion.outcome == "ok" and sink.stored == [b"tail"]
    assert sent(t.receive(codec.encode_data(1, b"tail"), CLIENT, 1.0)) == [ack(1)]
    assert sink.stored == [b"tail"]  # stored once
    assert t.deadline is not None  # the adapter keeps the socket for the dally time ...
    t.timeout(t.deadline)
    assert t.deadline is None and t.done  # ... then closes it
    assert t.timeout(100.0) == []


def test_concurrent_uploads_are_capped() -> None:
    # Each upload is held in memory until its last block: without a cap of their own, max_transfers half-finished
    # uploads could hold max_transfers * upload_max_size bytes.
    tftp = TftpSettings(enabled=True, max_transfers=100, max_per_client=100, rate_limit=0, max_uploads=2)
    server = TftpServer(tftp, UploadFiles({}))  # type: ignore[arg-type]
    wrq = codec.encode_request(codec.WRQ, "up.log", "octet")
    first = server.request(wrq, ("10.0.0.1", 1), 0.0)
    second = server.request(wrq, ("10.0.0.2", 1), 0.0)
    third = server.request(wrq, ("10.0.0.3", 1), 0.0)
    assert isinstance(first, Started) and isinstance(second, Started)
    assert isinstance(third, Refusal) and third.outcome == "busy_uploads"
    assert isinstance(server.request(rrq("x"), ("10.0.0.3", 1), 0.0), Refusal)  # not found, but not busy
    server.finished(first)
    assert isinstance(server.request(wrq, ("10.0.0.3", 1), 0.0), Started)


class Stalling(Mem):
    """A source whose reads sometimes find the data not read from disk yet (None), as a streamed file's may."""

    def __init__(self, data: bytes, stalls: list[bool]) -> None:
        super().__init__(data)
        self.stalls = iter(stalls)

    def read(self, n: int) -> bytes | None:  # type: ignore[override]
        return None if next(self.stalls, False) else super().read(n)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"\n")), st.integers(8, 40), st.integers(1, 5),
       st.booleans(), st.lists(st.booleans(), max_size=200), st.lists(st.booleans(), max_size=100))
def test_lossy_download_delivers_the_exact_bytes(data: bytes, blksize: int, window: int, netascii: bool,
                                                  drops: list[bool], stalls: list[bool]) -> None:
    # A receiver per RFC 1350/7440 (ACK the last in-order block at the window's end or on timeout) over a channel
    # dropping datagrams both ways, from a source that sometimes has no data yet (the disk is slow: the transfer
    # stalls until resumed): every byte arrives, the netascii size announced is the size sent, the last block is
    # short (an empty one when the size is a multiple of blksize), and the transfer ends "ok".
    limits = replace(LIMITS, blksize_max=64, retries=1000, first_ack_retries=1000, session_lifetime=1e9)
    source: Mem | Netascii = Stalling(data, stalls)
    expected = data
    if netascii:
        source = Netascii(Stalling(data, stalls), Netascii.converted_size(data))
        expected = Netascii.convert(data)
    options = {"blksize": str(blksize), "windowsize": str(window), "tsize": "0"}
    t = ReadTransfer(CLIENT, "f", source, limits, negotiate(options, limits, source.size), 0.0)
    oack = codec.decode(t.start(0.0)[0])
    assert isinstance(oack, codec.OAck) and oack.options["tsize"] == str(len(expected))
    lost = iter(drops)
    got = b""
    have = 0  # last block received in order
    in_window = 0
    now = 0.0
    pending = [codec.encode_oack(oack.options)]
    for _ in range(5000):
        if t.done:
            break
        reply: bytes | None = None
        for datagram in pending:
            if next(lost, False):
                continue
            packet = codec.decode(datagram)
            if isinstance(packet, codec.OAck):
                reply = ack(0)
                continue
            assert isinstance(packet, codec.Data)
            if packet.block != (have + 1) & 0xFFFF:
                reply = ack(have)  # out of order or a duplicate: the last block received in order
                continue
            have += 1
            in_window += 1
            got += packet.payload
            if len(packet.payload) < blksize or in_window == window:
                reply, in_window = ack(have), 0
        if reply is not None and not next(lost, False):
            pending = [d for d, _to in t.receive(reply, CLIENT, now)]
            while t.stalled and not t.done:  # the disk delivers: the adapter resumes the transfer
                pending += t.resume(now)
            if pending or t.done:
                continue
        deadline = t.deadline  # nothing came back: the sender's timer fires
        assert deadline is not None
        now = max(now, deadline)
        pending = t.timeout(now)
        while t.stalled and not t.done:
            pending += t.resume(now)
        in_window = 0
    assert t.completion is not None and t.completion.outcome == "ok"
    assert got == expected


def test_windowed_block_numbers_roll_over() -> None:
    data = bytes(8 * 70000 + 3)
    limits = replace(LIMITS, blksize_max=8)
    t = ReadTransfer(CLIENT, "f", Mem(data), limits, negotiate({"blksize": "8", "windowsize": "7"}, limits, None), 0.0)
    t.start(0.0)
    out = sent(t.receive(ack(0), CLIENT, 0.0))
    got = []
    expect = 1
    while out:
        for datagram in out:
            assert datagram[:4] == codec.encode_data(expect, b"")  # DATA, block number wrapped
            got.append(datagram[4:])
            expect += 1
        out = sent(t.receive(ack((expect - 1) & 0xFFFF), CLIENT, 0.0))
    assert b"".join(got) == data and t.completion and t.completion.outcome == "ok"


def test_upload_refused_for_a_full_folder_is_error_3() -> None:
    class Full:
        def store(self, data: bytes) -> None:
            raise Refused(Reason.TOO_LARGE, "the upload folder is full")

    t = upload()
    t.start(0.0)
    assert t.receive(codec.encode_data(1, b"x"), CLIENT, 0.1) == []
    reply = store(t, Full(), 0.2)
    assert codec.decode(reply[0]) == Error(3, "too_large: the upload folder is full")


def test_an_upload_in_tiny_blocks_holds_about_its_own_size() -> None:
    # blksize=8 is legal: as a list of 8-byte bytes objects an upload held ~6 times its size (41 bytes of object
    # header per block), which made max_uploads * upload_max_size an underestimate of the memory a peer can pin.
    import tracemalloc

    size = 64 * 1024
    limits = replace(LIMITS, blksize_max=8)
    t = upload(limits, size + 1, options={"blksize": "8"})
    t.start(0.0)
    blocks_in = [codec.encode_data(n & 0xFFFF, b"z" * 8) for n in range(1, size // 8 + 1)]
    tracemalloc.start()
    try:
        for datagram in blocks_in:
            t.receive(datagram, CLIENT, 0.0)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not t.done
    assert held < 2 * size


def test_a_dallying_upload_does_not_hold_an_upload_slot() -> None:
    # The finished upload keeps its socket 10 s for a lost final ACK, but no longer holds data: with max_uploads
    # counting it, 16 slots would allow only 1.6 uploads a second.
    tftp = TftpSettings(enabled=True, max_transfers=100, max_per_client=100, rate_limit=0, max_uploads=1)
    server = TftpServer(tftp, UploadFiles({}))  # type: ignore[arg-type]
    wrq = codec.encode_request(codec.WRQ, "up.log", "octet")
    first = server.request(wrq, ("10.0.0.1", 1), 0.0)
    assert isinstance(first, Started)
    first.transfer.receive(codec.encode_data(1, b"done"), ("10.0.0.1", 1), 0.1)
    finish_upload(first, 0.15)
    assert first.transfer.completion is not None and not first.transfer.done  # dallying
    assert isinstance(server.request(wrq, ("10.0.0.2", 1), 0.2), Started)
    server.finished(first)
    assert server.active == 1


def test_a_request_with_thousands_of_options_gets_an_oack_of_the_known_ones() -> None:
    options = {f"opt{n}": "x" * 3 for n in range(6000)} | {"blksize": "1024", "BLKSIZE": "9"}
    data = codec.encode_request(codec.RRQ, "a.cfg", "octet", options)
    assert len(data) > 60000
    server = TftpServer(TftpSettings(enabled=True), Files(FILES))  # type: ignore[arg-type]
    started = server.request(data, CLIENT, 0.0, 1468)
    assert isinstance(started, Started)
    assert codec.decode(started.datagrams[0]) == codec.OAck({"blksize": "1024"})  # the first occurrence wins


def test_a_huge_file_name_is_refused_and_logged_short() -> None:
    # A name can fill a 64 KB datagram; copied into every refusal event it would multiply log volume by a thousand.
    from bootstrapd.provisioning.resolver import Resolver

    server = TftpServer(TftpSettings(enabled=True), Resolver("/nonexistent-root"))
    refusal = server.request(rrq("x" * 60000), CLIENT, 0.0)
    assert isinstance(refusal, Refusal) and refusal.datagram is not None
    assert len(refusal.file) <= 260
    assert refusal.outcome == "bad_name"


def finish_upload(started: Started, now: float) -> None:
    """The adapter's part, in line: an upload whose last block is in is stored by its sink and reported back."""
    if isinstance(started.transfer, WriteTransfer) and started.sink is not None:
        store(started.transfer, started.sink, now)
