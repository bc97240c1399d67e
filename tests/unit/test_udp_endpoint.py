"""The UDP endpoint's drain (net/udp.py): real sockets on loopback, each wake-up driven by hand, so that what one
wake-up reads and what it leaves for the next is seen exactly. Every datagram arrives whole, whatever its size, and
a datagram of no bytes (which the kernel's FIONREAD cannot tell from an empty queue) is neither lost nor spun on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from bootstrapd.errors import ProtocolError
from bootstrapd.events import Events
from bootstrapd.net.udp import BATCH, DatagramEndpoint, DestinationEndpoint


class Pair:
    def __init__(self, family: int, host: str) -> None:
        self.server = socket.socket(family, socket.SOCK_DGRAM)
        self.server.bind((host, 0))
        self.client = socket.socket(family, socket.SOCK_DGRAM)
        self.client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.address = self.server.getsockname()
        self.got: list[bytes] = []

    def send(self, *datagrams: bytes) -> None:
        for data in datagrams:
            self.client.sendto(data, self.address)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _endpoint(loop: asyncio.AbstractEventLoop, pair: Pair) -> DatagramEndpoint:
    return DatagramEndpoint("t", pair.server, lambda data, addr: pair.got.append(data), Events(), loop)


def _wakeups_until_empty(endpoint: DatagramEndpoint, pair: Pair, expected: int) -> int:
    """Wake the endpoint as the loop would while its socket is readable; the number of wake-ups it took."""
    wakeups = 0
    while len(pair.got) < expected:
        before = len(pair.got)
        endpoint._readable()
        wakeups += 1
        assert len(pair.got) > before, "a wake-up of a readable socket read nothing"
        assert wakeups <= expected, "more wake-ups than datagrams"
    return wakeups


def test_every_size_arrives_whole(loop: asyncio.AbstractEventLoop) -> None:
    pair = Pair(socket.AF_INET, "127.0.0.1")
    endpoint = _endpoint(loop, pair)
    try:
        sizes = [300, 1, 1500, 9000, 65507, 576]  # 65507: the largest IPv4 UDP payload
        datagrams = [bytes([i]) * n for i, n in enumerate(sizes)]
        pair.send(*datagrams)
        _wakeups_until_empty(endpoint, pair, len(datagrams))
        assert pair.got == datagrams
        endpoint._readable()  # the queue is empty: nothing, and no error
        assert pair.got == datagrams
        assert not endpoint.events.counters
    finally:
        endpoint.close()
        pair.close()


def test_one_datagram_one_wakeup_and_a_queue_drained_at_once(loop: asyncio.AbstractEventLoop) -> None:
    pair = Pair(socket.AF_INET, "127.0.0.1")
    endpoint = _endpoint(loop, pair)
    try:
        pair.send(b"a" * 300)
        assert _wakeups_until_empty(endpoint, pair, 1) == 1
        pair.send(*(bytes([i]) * 300 for i in range(10)))
        endpoint._readable()
        assert len(pair.got) == 11  # one wake-up read the whole queue
        pair.send(*(b"x" for _ in range(BATCH + 3)))
        endpoint._readable()
        assert len(pair.got) == 11 + BATCH  # bounded per wake-up; the rest is the next one's
        endpoint._readable()
        assert len(pair.got) == 11 + BATCH + 3
    finally:
        endpoint.close()
        pair.close()


def test_a_datagram_of_no_bytes_is_read_and_not_spun_on(loop: asyncio.AbstractEventLoop) -> None:
    pair = Pair(socket.AF_INET, "127.0.0.1")
    endpoint = _endpoint(loop, pair)
    try:
        pair.send(b"first", b"", b"", b"after")
        wakeups = _wakeups_until_empty(endpoint, pair, 4)
        assert pair.got == [b"first", b"", b"", b"after"]
        assert wakeups <= 4
        endpoint._readable()
        assert len(pair.got) == 4
    finally:
        endpoint.close()
        pair.close()


def test_closed_by_its_handler_reads_no_further(loop: asyncio.AbstractEventLoop) -> None:
    pair = Pair(socket.AF_INET, "127.0.0.1")
    events = Events()
    endpoint: DatagramEndpoint

    def handler(data: bytes, addr: object) -> None:
        pair.got.append(data)
        endpoint.close()

    endpoint = DatagramEndpoint("t", pair.server, handler, events, loop)
    try:
        pair.send(b"one", b"two")
        endpoint._readable()
        assert pair.got == [b"one"]
        assert not events.counters  # no read of the closed socket, no socket_error
    finally:
        pair.close()


def test_destination_endpoint_drains_alike(loop: asyncio.AbstractEventLoop) -> None:
    pair = Pair(socket.AF_INET6, "::1")
    got: list[tuple[bytes, bytes | None]] = []
    endpoint = DestinationEndpoint("t6", pair.server, lambda data, addr, dest: got.append((data, dest)), Events(),
                                   loop)
    try:
        datagrams = [b"a" * 300, b"", b"b" * 65000, b"c"]
        pair.send(*datagrams)
        for _ in range(len(datagrams)):
            endpoint._readable()
            if len(got) == len(datagrams):
                break
        assert [data for data, _ in got] == datagrams
        assert all(dest == socket.inet_pton(socket.AF_INET6, "::1") for _, dest in got)
    finally:
        endpoint.close()
        pair.close()


@pytest.mark.parametrize("endpoint_class", [DatagramEndpoint, DestinationEndpoint])
def test_hostile_input_is_counted_and_a_bug_does_not_stop_the_drain(loop: asyncio.AbstractEventLoop,
                                                                     endpoint_class: type[DatagramEndpoint]) -> None:
    pair = Pair(socket.AF_INET6, "::1")
    events = Events()

    def handler(data: bytes, addr: object, destination: object = None) -> None:
        if data == b"hostile":
            raise ProtocolError("no")
        if data == b"bug":
            raise ValueError("ours")
        pair.got.append(data)

    endpoint = endpoint_class("t", pair.server, handler, events, loop)
    try:
        pair.send(b"hostile", b"bug", b"fine", b"hostile")
        for _ in range(4):
            endpoint._readable()
        assert pair.got == [b"fine"]
        assert events.counters == {"t.dropped": 2, "t.internal_error": 1}
    finally:
        endpoint.close()
        pair.close()
