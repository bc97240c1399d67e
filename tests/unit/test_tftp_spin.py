"""The bounded poll for a lock-step ACK of a transfer worker ([tftp] spin_us, Sessions._spin): real UDP sockets on
loopback, the poll's clock injected (each reading moves it on), so nothing here waits for time to pass."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator

import pytest

from bootstrapd.config import ConfigError, loads
from bootstrapd.tftp import codec
from bootstrapd.tftp.codec import Data
from bootstrapd.tftp.server import Started
from bootstrapd.tftp.sessions import Session, Sessions
from bootstrapd.tftp.settings import TftpSettings
from bootstrapd.tftp.transfer import Limits, ReadTransfer, negotiate
from tests.unit.test_tftp_transfer import Mem

LIMITS = Limits(timeout=1.0, retries=3, first_ack_retries=1, session_lifetime=100.0)
DATA = bytes(range(256)) * 40  # 10240 bytes: 20 blocks of 512 and an empty last one


class Clock:
    """A clock that moves ``step`` seconds on at every reading; ``hook`` runs at the reading number given."""

    def __init__(self, start: float, step: float) -> None:
        self.now = start
        self.step = step
        self.readings = 0
        self.hooks: dict[int, Callable[[], None]] = {}

    def __call__(self) -> float:
        self.readings += 1
        hook = self.hooks.pop(self.readings, None)
        if hook is not None:
            hook()
        self.now += self.step
        return self.now


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()  # never run: the tests call the sessions' callbacks themselves
    yield loop
    loop.close()


class Peer:
    """A real client socket on loopback and the transfer socket that answers it."""

    def __init__(self) -> None:
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(2.0)  # only a safety net: every datagram read here was sent before
        self.server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server.bind(("127.0.0.1", 0))
        self.server.setblocking(False)

    def block(self) -> int:
        packet = codec.decode(self.client.recv(65536))
        assert isinstance(packet, Data)
        return packet.block

    def ack(self, block: int) -> None:
        self.client.sendto(codec.encode_ack(block), self.server.getsockname())

    def close(self) -> None:
        self.client.close()


def begin(sessions: Sessions, peer: Peer, windowsize: int = 1) -> Session:
    options = {"windowsize": str(windowsize)} if windowsize > 1 else {}
    negotiated = negotiate(options, LIMITS, len(DATA))
    if windowsize > 1:  # no OACK round in these tests: the window is what was negotiated
        negotiated = type(negotiated)({}, negotiated.blksize, negotiated.windowsize)
    transfer = ReadTransfer(peer.client.getsockname(), "f", Mem(DATA), LIMITS, negotiated, sessions_time(sessions))
    started = Started(transfer, transfer.start(sessions_time(sessions)), large=True)
    return sessions.begin(peer.server, started, peer.server.getsockname())


def sessions_time(sessions: Sessions) -> float:
    return sessions._loop.time()


def make(loop: asyncio.AbstractEventLoop, spin: float) -> tuple[Sessions, list[str], list[Session]]:
    counted: list[str] = []
    ended: list[Session] = []
    sessions = Sessions(loop, counted.append, ended.append)
    sessions.spin = spin
    return sessions, counted, ended


def test_the_ack_that_comes_while_polling_is_answered_at_once(loop: asyncio.AbstractEventLoop) -> None:
    sessions, counted, _ = make(loop, 100e-6)
    peer = Peer()
    session = begin(sessions, peer)
    assert peer.block() == 1
    peer.ack(1)
    clock = Clock(loop.time(), 1e-6)

    def answer() -> None:  # the client answers DATA 2 in the middle of the poll
        assert peer.block() == 2
        peer.ack(2)

    clock.hooks[5] = answer
    sessions.spin_clock = clock
    sessions._readable(session)
    assert sessions.spins == 2 and sessions.spin_misses == 1  # found ACK 2; then DATA 3 went unanswered
    assert peer.block() == 3
    transfer = session.started.transfer
    assert isinstance(transfer, ReadTransfer) and transfer.base == 3
    assert session.spin_skip == 1  # the miss: the next block goes without a poll
    assert counted == ["tftp.ack_polls", "tftp.ack_polls", "tftp.ack_poll_misses"]  # what /metrics shows
    sessions.close_all()
    peer.close()


def test_the_poll_is_bounded_and_backs_off_after_misses(loop: asyncio.AbstractEventLoop) -> None:
    sessions, _, _ = make(loop, 50e-6)
    peer = Peer()
    session = begin(sessions, peer)
    clock = Clock(loop.time(), 10e-6)
    sessions.spin_clock = clock
    skips = []
    for block in range(1, 6):
        assert peer.block() == block
        peer.ack(block)
        before = clock.readings
        sessions._readable(session)
        skips.append((clock.readings - before, session.spin_skip))
        session.skip = 0  # (the ordinary read-once back-off after an empty read is not what is tested here)
    # A poll reads the clock about spin / step + 1 times (its start, then each poll); after a miss the next 1,
    # then 3, 7, 15 blocks go without one (the counter counts down once per block sent).
    assert [skip for _, skip in skips] == [1, 0, 3, 2, 1]
    assert [skips[i][0] for i in (1, 3, 4)] == [0, 0, 0]
    assert all(5 <= readings <= 7 for readings, _ in (skips[0], skips[2]))
    assert sessions.spins == 2 and sessions.spin_misses == 2
    sessions.close_all()
    peer.close()


def test_the_poll_never_runs_past_the_retransmission(loop: asyncio.AbstractEventLoop) -> None:
    sessions, _, _ = make(loop, 30.0)  # absurdly long: the transfer's deadline (1 s on) must bound it
    peer = Peer()
    session = begin(sessions, peer)
    assert peer.block() == 1
    peer.ack(1)
    clock = Clock(loop.time(), 0.01)
    sessions.spin_clock = clock
    sessions._readable(session)
    transfer = session.started.transfer
    deadline = transfer.deadline
    assert deadline is not None
    assert clock.now <= deadline + 0.02  # stopped at the deadline, not 30 s on
    assert clock.readings < 110
    assert session.timer is not None and session.timer_at is not None and session.timer_at <= deadline
    assert blocks_again(transfer.timeout(clock.now + 0.01)) == [2]  # the retransmission is due and goes
    sessions.close_all()
    peer.close()


def blocks_again(out: list[bytes]) -> list[int]:
    return [p.block for p in map(codec.decode, out) if isinstance(p, Data)]


def test_a_second_transfer_turns_the_poll_off(loop: asyncio.AbstractEventLoop) -> None:
    sessions, _, _ = make(loop, 50e-6)
    first, second = Peer(), Peer()
    one = begin(sessions, first)
    begin(sessions, second)
    clock = Clock(loop.time(), 10e-6)
    sessions.spin_clock = clock
    assert first.block() == 1
    first.ack(1)
    sessions._readable(one)
    assert first.block() == 2
    assert sessions.spins == 0 and clock.readings == 0
    sessions.close_all()
    first.close()
    second.close()


def test_no_poll_on_the_daemons_loop_or_for_a_window(loop: asyncio.AbstractEventLoop) -> None:
    for spin, windowsize in ((0.0, 1), (50e-6, 4)):
        sessions, _, _ = make(loop, spin)
        peer = Peer()
        session = begin(sessions, peer, windowsize)
        clock = Clock(loop.time(), 10e-6)
        sessions.spin_clock = clock
        sent = [peer.block() for _ in range(windowsize)]
        peer.ack(sent[-1])
        sessions._readable(session)
        assert sessions.spins == 0 and clock.readings == 0
        sessions.close_all()
        peer.close()


def test_the_spin_us_key() -> None:
    base = '[server]\ninterface = "eth1"\n[dhcp4]\nrange = "10.77.0.100-10.77.0.199"\n[tftp]\nenabled = true\n'
    assert loads(base).tftp.spin_us == TftpSettings().spin_us
    assert loads(base + "spin_us = 0\n").tftp.spin_us == 0
    assert loads(base + "spin_us = 80\n").tftp.spin_us == 80
    for bad in ("-1", "1001"):
        with pytest.raises(ConfigError, match="spin_us"):
            loads(base + f"spin_us = {bad}\n")


class Slow(Mem):
    """A streamed file whose second block is still being read from the disk."""

    def read(self, n: int) -> bytes | None:  # type: ignore[override]
        return super().read(n) if self.offset == 0 else None


def test_a_transfer_waiting_for_its_file_does_not_poll(loop: asyncio.AbstractEventLoop) -> None:
    sessions, _, _ = make(loop, 50e-6)
    peer = Peer()
    negotiated = negotiate({}, LIMITS, len(DATA))
    transfer = ReadTransfer(peer.client.getsockname(), "f", Slow(DATA), LIMITS, negotiated, loop.time())
    session = sessions.begin(peer.server, Started(transfer, transfer.start(loop.time()), large=True),
                             peer.server.getsockname())
    clock = Clock(loop.time(), 10e-6)
    sessions.spin_clock = clock
    assert peer.block() == 1
    peer.ack(1)
    sessions._readable(session)
    assert transfer.stalled and sessions.spins == 0 and clock.readings == 0  # nothing sent: no ACK to poll for
    sessions.close_all()
    peer.close()
