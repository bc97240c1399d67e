"""The sendfile path (bootstrapd/provisioning/sendfile.py) on a real TCP connection over loopback: every byte of
the range arrives in order after what the transport held, and a client that stops reading ends in SendTimeout."""

from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bootstrapd.provisioning.sendfile import SendTimeout, SocketSender, socket_of

DATA = os.urandom(3 * 1024 * 1024 + 7)


async def _serve(path: Path, offset: int, count: int, send_timeout: float, read: bool) -> tuple[bytes, object]:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(2)
    outcome: asyncio.Future[object] = loop.create_future()

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        sock = socket_of(transport)
        assert sock is not None
        writer.write(b"HEAD")  # held by the transport (or sent at once): must go before the file's bytes
        sender = SocketSender(transport, sock, executor, send_timeout)  # type: ignore[arg-type]
        fd = os.open(path, os.O_RDONLY)
        try:
            outcome.set_result(await sender.send(fd, offset, count))
        except SendTimeout as exc:
            outcome.set_result(exc)
        finally:
            sender.close()
            os.close(fd)
            transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    await loop.sock_connect(client, ("127.0.0.1", port))
    got = bytearray()
    if read:
        while chunk := await loop.sock_recv(client, 1 << 16):
            got += chunk
    result = await asyncio.wait_for(outcome, 60)
    client.close()
    server.close()
    executor.shutdown()
    return bytes(got), result


@pytest.mark.parametrize("offset,count", [(0, len(DATA)), (12345, 1024 * 1024)])
def test_every_byte_after_the_head(tmp_path: Path, offset: int, count: int) -> None:
    path = tmp_path / "fw.rom"
    path.write_bytes(DATA)
    got, sent = asyncio.run(_serve(path, offset, count, 30.0, read=True))
    assert sent == count
    assert got == b"HEAD" + DATA[offset:offset + count]


def test_a_client_that_stops_reading_times_out(tmp_path: Path) -> None:
    path = tmp_path / "fw.rom"
    path.write_bytes(DATA)
    _, result = asyncio.run(_serve(path, 0, len(DATA), 0.5, read=False))
    assert isinstance(result, SendTimeout)


def test_no_transport_no_socket() -> None:
    assert socket_of(None) is None
