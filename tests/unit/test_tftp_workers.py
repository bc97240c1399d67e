"""The hand-over of a download to a TFTP transfer worker, as data: the worker builds the very transfer the daemon
started (client, file, options, limits), and ``[tftp] workers`` defaults from the CPU count."""

from __future__ import annotations

import json

import pytest

from bootstrapd.config import ConfigError, loads
from bootstrapd.tftp import codec
from bootstrapd.tftp.settings import default_workers
from bootstrapd.tftp.transfer import Limits, ReadTransfer, negotiate
from bootstrapd.tftp.worker import hand_over_message, transfer_from

CLIENT = ("10.88.0.7", 40123)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0
        self.size: int | None = len(data)

    def read(self, n: int) -> bytes:
        out = self.data[self.at:self.at + n]
        self.at += len(out)
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize("options", [{}, {"blksize": "1428", "tsize": "0"}, {"blksize": "1432", "windowsize": "8",
                                                                          "timeout": "3"}])
def test_the_worker_builds_the_transfer_the_daemon_started(options: dict[str, str]) -> None:
    data = bytes(range(256)) * 40
    limits = Limits(blksize_max=1468, windowsize_max=16, timeout=2.0, retries=4, first_ack_retries=1,
                    session_lifetime=300.0)
    daemon = ReadTransfer(CLIENT, "fw/t46u.rom", _Bytes(data), limits, negotiate(options, limits, len(data)), 5.0)
    first = daemon.start(5.0)
    message = json.loads(hand_over_message(7, daemon, ("10.77.0.1", 0), len(data)))
    assert message["id"] == 7 and message["local"] == ["10.77.0.1", 0]
    worker = transfer_from(message, _Bytes(data), 9.0)
    assert (worker.client, worker.filename, worker.limits, worker.negotiated) == \
        (daemon.client, daemon.filename, daemon.limits, daemon.negotiated)
    # The same first datagrams, and the whole file with the same blocks, acknowledged as a client would.
    assert worker.start(9.0) == first
    got, now, out = b"", 9.0, first
    if worker.oack is not None:
        out = worker.from_client(codec.encode_ack(0), now)
    while worker.completion is None:
        blocks = [codec.decode(d) for d in out]
        last = 0
        for block in blocks:
            assert isinstance(block, codec.Data)
            got += block.payload
            last = block.block
        now += 0.001
        out = worker.from_client(codec.encode_ack(last), now)
    assert got == data and worker.completion.outcome == "ok"


def test_workers_default_to_one_per_cpu_from_two_cpus_on() -> None:
    assert [default_workers(n) for n in (1, 2, 4, 8, 64)] == [0, 2, 4, 8, 8]


def test_the_workers_key() -> None:
    base = '[server]\ninterface = "eth1"\n[dhcp4]\nrange = "10.77.0.100-10.77.0.199"\n[tftp]\nenabled = true\n'
    assert loads(base + "workers = 0\n").tftp.workers == 0
    assert loads(base + "workers = 3\n").tftp.workers == 3
    assert loads(base).tftp.workers == default_workers()
    with pytest.raises(ConfigError, match="workers"):
        loads(base + "workers = -1\n")
