"""The thin asyncio side of every UDP service: datagrams in, handler called, hostile input counted and dropped.

A protocol core raises :class:`~bootstrapd.errors.ProtocolError` for anything it cannot accept; here that becomes a
``<service>.dropped`` counter and a DEBUG line. Any other exception is a bug of ours: it is logged (rate limited)
and counted, and the endpoint keeps serving: nothing a peer sends can end the task.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from bootstrapd.errors import ProtocolError
from bootstrapd.events import Events
from bootstrapd.log import RateLimited

Address = tuple[Any, ...]
Handler = Callable[[bytes, Address], None]

log = logging.getLogger("bootstrapd.net")
_limited = RateLimited(log)


class DatagramEndpoint(asyncio.DatagramProtocol):
    def __init__(self, name: str, handler: Handler, events: Events) -> None:
        self.name = name
        self.handler = handler
        self.events = events
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport, hence the cast.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            self.handler(data, addr)
        except ProtocolError as exc:
            self.events.count(f"{self.name}.dropped")
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: dropped datagram from %s: %s", self.name, addr[0], exc)
        except Exception:
            self.events.count(f"{self.name}.internal_error")
            _limited.warning(f"{self.name}.bug", "%s: internal error handling a datagram from %s", self.name,
                             addr[0], exc_info=True)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier sends (port unreachable, …): nothing to do but count.
        self.events.count(f"{self.name}.socket_error")

    def sendto(self, data: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_endpoint(name: str, sock: socket.socket, handler: Handler, events: Events) -> DatagramEndpoint:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(lambda: DatagramEndpoint(name, handler, events), sock=sock)
    return protocol
