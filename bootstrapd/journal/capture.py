"""The packet-capture recorder: every frame of bootstrapd's services on the provisioning interface, to pcap(ng).

An AF_PACKET socket bound to the interface sees the frames the kernel receives and those it sends (``ETH_P_ALL``),
with their Ethernet, IP and transport headers. A classic BPF program attached before ``bind`` lets only IPv4/IPv6
UDP, TCP and ICMP through the kernel; :class:`Selector` then keeps the frames of our services:
- UDP to or from DHCPv4 67/68, DHCPv6 546/547, PnP (``pnp.port``), TFTP (``tftp.port``);
- the conversations those start: a TFTP transfer runs between a fresh server port and the client's port, a PnP
  NOTIFY goes to the phone's port; the client's address and port are remembered (as Wireshark's TFTP dissector
  does) and every later datagram to or from them is kept;
- TCP to or from HTTP, HTTPS, FTP and the FTP passive ports when those services are configured;
- ICMP "unreachable" errors about any of the above (a phone that closed its TFTP port).

The recorder runs in a thread of its own: it blocks in ``recvmsg`` and writes with a buffered file, so the event
loop never waits for it. It is only imported when capture is on. It needs CAP_NET_RAW and the AF_PACKET family.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from bootstrapd.config import Settings
from bootstrapd.journal.pcapfile import RotatingWriter
from bootstrapd.service import Context, StartupError

log = logging.getLogger("bootstrapd.capture")

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SOL_PACKET = 263
PACKET_STATISTICS = 6
CONVERSATION_TTL = 600.0  # seconds a remembered client endpoint is kept (the TFTP session lifetime)
CONVERSATIONS_MAX = 65536

# Accept IPv4 with protocol UDP/TCP/ICMP and IPv6 with next header UDP/TCP/ICMPv6; drop everything else in the kernel.
_BPF = [
    (0x28, 0, 0, 12),  # ldh [12]            ethertype
    (0x15, 0, 4, 0x0800),  # jeq IPv4 ? next : 6
    (0x30, 0, 0, 23),  # ldb [23]            IPv4 protocol
    (0x15, 7, 0, 17),  # UDP -> accept
    (0x15, 6, 0, 6),  # TCP -> accept
    (0x15, 5, 6, 1),  # ICMP -> accept, else drop
    (0x15, 0, 5, 0x86DD),  # jeq IPv6 ? next : drop
    (0x30, 0, 0, 20),  # ldb [20]            IPv6 next header
    (0x15, 2, 0, 17),  # UDP -> accept
    (0x15, 1, 0, 6),  # TCP -> accept
    (0x15, 0, 1, 58),  # ICMPv6 -> accept, else drop
    (0x06, 0, 0, 0x40000),  # accept (up to 256 KiB)
    (0x06, 0, 0, 0),  # drop
]


def attach_filter(sock: socket.socket) -> None:
    program = b"".join(struct.pack("HBBI", *insn) for insn in _BPF)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(_BPF), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class Selector:
    """Which frames belong to bootstrapd's services (pure: bytes and ``now`` in, a yes or no out)."""

    def __init__(self, udp_ports: Iterable[int], track_ports: Iterable[int], tcp_ports: Iterable[int],
                 tcp_ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.udp_ports = frozenset(udp_ports)
        self.track_ports = frozenset(track_ports)  # ports whose clients start a conversation (TFTP, PnP)
        self.tcp_ports = frozenset(tcp_ports)
        self.tcp_ranges = tuple(tcp_ranges)
        self.conversations: dict[tuple[bytes, int], float] = {}

    def _tcp(self, sport: int, dport: int) -> bool:
        if sport in self.tcp_ports or dport in self.tcp_ports:
            return True
        return any(lo <= sport <= hi or lo <= dport <= hi for lo, hi in self.tcp_ranges)

    def _remember(self, key: tuple[bytes, int], now: float) -> None:
        conversations = self.conversations
        conversations.pop(key, None)
        conversations[key] = now + CONVERSATION_TTL
        if len(conversations) > CONVERSATIONS_MAX:
            for old in [k for k, until in conversations.items() if until < now] or list(conversations)[:1024]:
                del conversations[old]

    def _udp(self, src: bytes, dst: bytes, sport: int, dport: int, now: float, learn: bool) -> bool:
        if dport in self.udp_ports or sport in self.udp_ports:
            if learn and dport in self.track_ports:
                self._remember((src, sport), now)
            elif learn and sport in self.track_ports:
                self._remember((dst, dport), now)
            return True
        conversations = self.conversations
        for key in ((src, sport), (dst, dport)):
            until = conversations.get(key)
            if until is not None:
                if until >= now:
                    return True
                del conversations[key]
        return False

    def keep(self, frame: bytes, now: float) -> bool:
        offset = 12
        ethertype = int.from_bytes(frame[12:14], "big")
        while ethertype in (0x8100, 0x88A8) and len(frame) >= offset + 6:  # VLAN tags
            offset += 4
            ethertype = int.from_bytes(frame[offset:offset + 2], "big")
        ip = offset + 2
        return self._ip(frame, ip, ethertype, now, learn=True)

    def _ip(self, frame: bytes, ip: int, ethertype: int, now: float, learn: bool) -> bool:
        if ethertype == 0x0800:
            if len(frame) < ip + 20:
                return False
            ihl = (frame[ip] & 0x0F) * 4
            proto = frame[ip + 9]
            src, dst = frame[ip + 12:ip + 16], frame[ip + 16:ip + 20]
            if int.from_bytes(frame[ip + 6:ip + 8], "big") & 0x1FFF:
                return False  # a later fragment: no ports to judge it by (blksize never exceeds the MTU)
            transport = ip + ihl
            icmp = 1
        elif ethertype == 0x86DD:
            if len(frame) < ip + 40:
                return False
            proto = frame[ip + 6]
            src, dst = frame[ip + 8:ip + 24], frame[ip + 24:ip + 40]
            transport = ip + 40
            icmp = 58
        else:
            return False
        if len(frame) < transport + 8:
            return False
        sport = int.from_bytes(frame[transport:transport + 2], "big")
        dport = int.from_bytes(frame[transport + 2:transport + 4], "big")
        if proto == 17:
            return self._udp(src, dst, sport, dport, now, learn)
        if proto == 6:
            return self._tcp(sport, dport)
        if proto == icmp and learn:
            kind = frame[transport]
            if (icmp == 1 and kind == 3) or (icmp == 58 and kind == 1):  # destination unreachable: the quoted packet
                return self._ip(frame, transport + 8, ethertype, now, learn=False)
        return False


class Recorder:
    """The capture thread: socket -> selector -> rotating file."""

    def __init__(self, interface: str, writer: RotatingWriter, selector: Selector, snaplen: int) -> None:
        self.interface = interface
        self.writer = writer
        self.selector = selector
        self.snaplen = snaplen
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            attach_filter(self.sock)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self.sock.bind((interface, ETH_P_ALL))
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(0.2)
        self.seen = 0
        self.kept = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        buffer = bytearray(0x40000)
        view = memoryview(buffer)
        sock, keep, write = self.sock, self.selector.keep, self.writer.write
        last_flush = time.monotonic()
        while not self._stop.is_set():
            try:
                size, ancillary, _flags, _addr = sock.recvmsg_into([buffer], 64, socket.MSG_TRUNC)
            except TimeoutError:
                self.writer.flush()
                last_flush = time.monotonic()
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                log.warning("capture: receive failed: %s", exc)
                continue
            stamp = time.time()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack("qq", data[:16])
                    stamp = sec + nsec / 1e9
            self.seen += 1
            frame = bytes(view[:min(size, len(buffer), self.snaplen)])
            if keep(frame, stamp):
                write(stamp, frame, size)
                self.kept += 1
                now = time.monotonic()
                if now - last_flush >= 1.0:
                    self.writer.flush()
                    last_flush = now

    def kernel_drops(self) -> int:
        try:
            data = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        return int(struct.unpack("II", data)[1])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        drops = self.kernel_drops()
        self.sock.close()
        self.writer.close()
        log.info("capture stopped: %d frames recorded in %s (%d rotations), %d dropped by the kernel",
                 self.kept, self.writer.path, self.writer.rotations, drops)


def selector_for(settings: object) -> Selector:
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
    return Selector(udp, track, tcp, ranges)


def open_recorder(settings: object, interface: str, path: Path, fmt: str, *, max_size: int, max_files: int,
                  snaplen: int) -> Recorder:
    writer = RotatingWriter(path, fmt, snaplen=snaplen, max_size=max_size, max_files=max_files, interface=interface)
    try:
        return Recorder(interface, writer, selector_for(settings), snaplen)
    except BaseException:
        writer.close()
        raise


class CaptureService:
    """``[capture] file`` (or ``run --pcap``) as one of the daemon's services."""

    name = "capture"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.recorder: Recorder | None = None

    async def start(self) -> None:
        settings = self.ctx.settings
        capture = settings.capture
        try:
            self.recorder = open_recorder(settings, self.ctx.interface.name, Path(capture.file), capture.format,
                                          max_size=capture.max_size, max_files=capture.max_files,
                                          snaplen=capture.snaplen)
        except PermissionError:
            raise StartupError("capture.file: capturing needs CAP_NET_RAW (and the AF_PACKET address family)") from None
        except OSError as exc:
            raise StartupError(f"capture.file {capture.file}: {exc.strerror or exc}") from None
        self.recorder.start()
        log.info("capturing to %s (%s, %d bytes x %d files)", capture.file, capture.format, capture.max_size,
                 capture.max_files)

    def reload(self, settings: Settings) -> None:
        if self.recorder is not None:
            # Ports may have changed (a service's port); the file and its format need a restart.
            self.recorder.selector = selector_for(settings)
            log.info("capture: ports re-read; capture.file and capture.format changes need a restart")

    async def stop(self) -> None:
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            self.ctx.events.count("capture.frames", recorder.kept)
            await asyncio.get_running_loop().run_in_executor(None, recorder.stop)
