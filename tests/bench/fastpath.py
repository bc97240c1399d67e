"""The HTTP fast path's own CPU per request, in process (a developer tool, not a test).

    python -m tests.bench.fastpath [--count N] [--profile]

One :class:`bootstrapd.http.fast.FastConnection` per request, as the loop would drive it (connection_made,
data_received with bench-http's request head for a 4 KB file in the hot cache, connection_lost), against a real
resolver, admission and event stream (no subscriber: the journal's cost is not in it), with a transport that only
keeps what is written: no sockets, no loop callbacks, no kernel. Prints the process CPU time per request;
``--profile``: cProfile's top functions too.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
import types
from typing import Any

from bootstrapd.events import Events
from bootstrapd.http.fast import FastServer
from bootstrapd.http.limits import Admission
from bootstrapd.http.routes import HttpRoutes
from bootstrapd.http.settings import HttpSettings
from bootstrapd.leases.ratelimit import RateLimiter
from bootstrapd.provisioning.resolver import Resolver

REQUEST = (b"GET /common.cfg HTTP/1.1\r\nHost: 10.77.0.1\r\nConnection: close\r\n"
           b"User-Agent: Yealink SIP-T46U 108.86.0.90 00:15:65:00:00:01\r\n\r\n")


class Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.77.0.5", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def run(count: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "common.cfg"), "wb") as f:
            f.write(b"x" * 4096)
        resolver = Resolver(root)
        resolver.open("common.cfg").close()  # now in the hot cache
        work = types.SimpleNamespace(resolver=lambda: resolver, open_nowait=resolver.open_nowait)
        events = Events()
        settings = HttpSettings(enabled=True, rate_limit=0)
        service: Any = types.SimpleNamespace(settings=settings, ctx=types.SimpleNamespace(http_routes=HttpRoutes()),
                                             files=types.SimpleNamespace(work=work), events=events,
                                             rate=RateLimiter(0, 1), admission=Admission(events, settings))
        server = FastServer(service, None)  # type: ignore[arg-type]  # nothing is handed over here

        def one() -> None:
            conn = server()
            transport = Transport()
            conn.connection_made(transport)  # type: ignore[arg-type]
            conn.data_received(REQUEST)
            conn.connection_lost(None)
            assert transport.out[0].startswith(b"HTTP/1.1 200 OK")

        for _ in range(1000):
            one()
        started = time.process_time()
        for _ in range(count):
            one()
        print(f"{1e6 * (time.process_time() - started) / count:.1f} us of CPU per request ({count} requests)")
        if profile:
            def many() -> None:
                for _ in range(count):
                    one()

            profiler = cProfile.Profile()
            profiler.runcall(many)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=30000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.count, args.profile))


if __name__ == "__main__":
    main()
