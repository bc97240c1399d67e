"""Send part of an open file on a stream transport: the kernel's sendfile where the loop has it, else reads.

The standard loop copies page cache straight to the socket (``loop.sendfile``); TLS transports and event loops
without it (uvloop) get the same bytes through ``os.pread`` in 256 KiB chunks and the caller's flow-controlled
``write``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

CHUNK = 256 << 10


async def send_descriptor(transport: asyncio.BaseTransport, fd: int, offset: int, count: int,
                          write: Callable[[bytes], Awaitable[None]]) -> None:
    if count <= 0:
        return
    loop = asyncio.get_running_loop()
    tls = transport.get_extra_info("sslcontext") is not None  # bytes must pass through the TLS layer
    if isinstance(transport, asyncio.WriteTransport) and not tls:
        with open(fd, "rb", buffering=0, closefd=False) as file:
            try:
                await loop.sendfile(transport, file, offset, count, fallback=False)
                return
            except (NotImplementedError, asyncio.SendfileNotAvailableError):
                pass
    end = offset + count
    while offset < end:
        chunk = os.pread(fd, min(CHUNK, end - offset), offset)
        if not chunk:
            raise OSError("file shrank while it was being sent")
        await write(chunk)
        offset += len(chunk)
