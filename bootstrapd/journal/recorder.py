"""The packet-capture recorder's own process: an AF_PACKET socket on the interface -> :class:`Selector` -> file.

A process of its own, started by ``capture.py`` (multiprocessing, spawn): the first version ran in a thread, and
every frame's few microseconds of Python took the GIL from the event loop at the worst moments (the thread woke for
each frame while the loop was busy). Here the recorder has its own interpreter on the other core; the daemon pays
nothing per frame. This module imports only the standard library and ``pcapfile``: the child starts in tens of
milliseconds.

The socket sees the frames the kernel receives and sends on the interface (``ETH_P_ALL``) with their Ethernet, IP and
transport headers. A classic BPF program attached before ``bind`` lets only IPv4/IPv6 UDP, TCP and ICMP through the
kernel; :class:`Selector` keeps the frames of bootstrapd's services:
- UDP to or from DHCPv4 67/68, DHCPv6 546/547, PnP (``pnp.port``), TFTP (``tftp.port``);
- the conversations those start: a TFTP transfer runs between a fresh server port and the client's port, a PnP
  NOTIFY goes to the phone's port; the client's address and port are remembered (as Wireshark's TFTP dissector
  does) and every later datagram to or from them is kept;
- TCP to or from HTTP, HTTPS, FTP and the FTP passive ports when those services are configured;
- ICMP "unreachable" errors about any of the above (a phone that closed its TFTP port).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bootstrapd import cpus
from bootstrapd.journal.pcapfile import RotatingWriter

Ports = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]
"""(UDP ports, UDP ports whose clients start conversations, TCP ports, TCP port ranges)."""

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


def record(interface: str, path: str, fmt: str, max_size: int, max_files: int, snaplen: int, ports: Ports,
           conn: Connection) -> None:
    """The child's main: report ("ready",) or ("error", "file" | "socket", errno, text), record until ("stop",),
    report the figures.

    Messages from the parent: ("ports", Ports) after a reload, ("stop",). Checked when the socket is idle (every
    0.2 s) and every 256 frames.
    """
    cpus.release()  # spawned from the pinned event loop (cpus.py): the recorder reads frames on any CPU
    try:
        writer = RotatingWriter(Path(path), fmt, snaplen=snaplen, max_size=max_size, max_files=max_files,
                                interface=interface)
    except OSError as exc:
        conn.send(("error", "file", exc.errno, exc.strerror or str(exc)))
        return
    sock: socket.socket | None = None
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        attach_filter(sock)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((interface, ETH_P_ALL))
    except OSError as exc:
        writer.close()
        if sock is not None:
            sock.close()
        conn.send(("error", "socket", exc.errno, exc.strerror or str(exc)))
        return
    sock.settimeout(0.2)
    conn.send(("ready",))
    selector = Selector(*ports)
    seen = kept = 0
    buffer = bytearray(0x40000)
    view = memoryview(buffer)
    last_flush = time.monotonic()
    while True:
        try:
            size, ancillary, _flags, _addr = sock.recvmsg_into([buffer], 64, socket.MSG_TRUNC)
        except TimeoutError:
            writer.flush()
            last_flush = time.monotonic()
            if _stopping(conn, selector):
                break
            continue
        except OSError:
            continue  # e.g. ENETDOWN while the interface flaps: keep recording
        stamp = time.time()
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                sec, nsec = struct.unpack("qq", data[:16])
                stamp = sec + nsec / 1e9
        seen += 1
        frame = bytes(view[:min(size, len(buffer), snaplen)])
        if selector.keep(frame, stamp):
            writer.write(stamp, frame, size)
            kept += 1
        if seen % 256 == 0:
            now = time.monotonic()
            if now - last_flush >= 1.0:
                writer.flush()
                last_flush = now
            if _stopping(conn, selector):
                break
    try:
        drops = int(struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1])
    except OSError:
        drops = 0
    sock.close()
    writer.close()
    conn.send(("stopped", kept, seen, drops, writer.rotations))


def _stopping(conn: Connection, selector: Selector) -> bool:
    while conn.poll():
        try:
            message: Any = conn.recv()
        except EOFError:
            return True  # the daemon is gone
        if message[0] == "stop":
            return True
        if message[0] == "ports":
            selector.__init__(*message[1])  # type: ignore[misc]
    return False
