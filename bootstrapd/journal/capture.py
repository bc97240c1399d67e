"""``[capture]`` / ``run --pcap``: the packet-capture recorder as one of the daemon's services.

The recording itself runs in a process of its own (``recorder.py``): this service starts it with the interface, the
file, the rotation and the services' ports, waits until its socket is bound (a missing CAP_NET_RAW is a start-up
error), sends it the new ports on reload, and stops it last of all. Nothing of it is imported when capture is off.
It needs CAP_NET_RAW and the AF_PACKET address family.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.service import Context, StartupError

log = logging.getLogger("bootstrapd.capture")

Ports = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]


def ports_for(settings: object) -> Ports:
    """The services' ports from the settings (HTTP/FTP keys read when those services exist and are enabled)."""
    udp = {67, 68, 546, 547}
    track: set[int] = set()
    pnp = getattr(settings, "pnp", None)
    if pnp is not None and pnp.enabled:
        udp.add(pnp.port)
        track.add(pnp.port)
        if pnp.source_port:
            udp.add(pnp.source_port)
    tftp = getattr(settings, "tftp", None)
    if tftp is not None and tftp.enabled:
        udp.add(tftp.port)
        track.add(tftp.port)
    tcp: set[int] = set()
    ranges: list[tuple[int, int]] = []
    http = getattr(settings, "http", None)
    if http is not None and getattr(http, "enabled", False):
        tcp.update(p for p in (getattr(http, "port", 0), getattr(http, "tls_port", 0)) if p)
    ftp = getattr(settings, "ftp", None)
    if ftp is not None and getattr(ftp, "enabled", False):
        tcp.update(p for p in (getattr(ftp, "port", 0),) if p)
        passive = getattr(ftp, "passive_ports", None)
        if isinstance(passive, tuple) and len(passive) == 2:
            ranges.append((int(passive[0]), int(passive[1])))
    status_port = getattr(getattr(settings, "status", None), "port", None)
    if isinstance(status_port, int) and status_port:
        tcp.add(status_port)
    return tuple(sorted(udp)), tuple(sorted(track)), tuple(sorted(tcp)), tuple(ranges)



class CaptureService:
    name = "capture"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.process: Any = None
        self.conn: Any = None

    async def start(self) -> None:
        from bootstrapd.journal.recorder import record

        settings = self.ctx.settings
        capture = settings.capture
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self.process = context.Process(
            target=record, name="bootstrapd-capture", daemon=True,
            args=(self.ctx.interface.name, capture.file, capture.format, capture.max_size, capture.max_files,
                  capture.snaplen, ports_for(settings), child))
        self.process.start()
        child.close()
        self.conn = parent
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self._first_message)
        if ready[0] != "ready":
            await loop.run_in_executor(None, self.process.join, 5)
            self.process = None
            if ready[1] == "socket" and ready[2] in (errno.EPERM, errno.EACCES, errno.EAFNOSUPPORT):
                raise StartupError("capture.file: capturing needs CAP_NET_RAW and the AF_PACKET address family "
                                   f"({ready[-1]})")
            raise StartupError(f"capture.file {capture.file}: {ready[-1]}")
        log.info("capturing to %s (%s, %d bytes x %d files)", capture.file, capture.format, capture.max_size,
                 capture.max_files)

    def _first_message(self) -> tuple[Any, ...]:
        if self.conn.poll(20):
            try:
                message: tuple[Any, ...] = self.conn.recv()
                return message
            except EOFError:
                pass
        return ("error", "start", None, "the recorder process did not start")

    def reload(self, settings: Settings) -> None:
        if self.conn is not None:
            # Ports may have changed (a service's port); the file and its format need a restart.
            self.conn.send(("ports", ports_for(settings)))
            log.info("capture: ports re-read; capture.file and capture.format changes need a restart")

    async def stop(self) -> None:
        if self.process is None:
            return
        process, conn, self.process = self.process, self.conn, None
        loop = asyncio.get_running_loop()
        try:
            conn.send(("stop",))
        except OSError:
            pass
        stats = await loop.run_in_executor(None, self._last_message, conn)
        await loop.run_in_executor(None, process.join, 5)
        if process.is_alive():
            process.kill()
        if stats is not None:
            _, kept, seen, drops, rotations = stats
            self.ctx.events.count("capture.frames", kept)
            log.info("capture stopped: %d of %d frames recorded in %s (%d rotations), %d dropped by the kernel",
                     kept, seen, self.ctx.settings.capture.file, rotations, drops)

    @staticmethod
    def _last_message(conn: Any) -> tuple[Any, ...] | None:
        if conn.poll(10):
            try:
                message: tuple[Any, ...] = conn.recv()
                return message if message[0] == "stopped" else None
            except EOFError:
                return None
        return None
