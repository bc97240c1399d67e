"""Writing capture files: classic pcap and pcapng, rotated by size and count.

Both formats are small enough to write by hand (no scapy on the daemon's path):
- pcap: a 24-byte global header (magic 0xa1b2c3d4, version 2.4, snaplen, link type 1 = Ethernet), then per frame
  a 16-byte record header (seconds, microseconds, captured length, original length) and the bytes;
- pcapng: a Section Header Block, one Interface Description Block (Ethernet, snaplen, the interface's name,
  microsecond time stamps), then one Enhanced Packet Block per frame (padded to 32 bits, total length repeated).

Rotation: when the next frame would take the current file past ``max_size``, ``file`` becomes ``file.1``,
``file.1`` becomes ``file.2`` … up to ``max_files - 1`` (the oldest is removed), and a new ``file`` starts with its
own headers, so every file reads on its own.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import BinaryIO

LINKTYPE_ETHERNET = 1

_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


def pcap_header(snaplen: int) -> bytes:
    return _PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def pcap_record(ts: float, frame: bytes, original: int) -> bytes:
    sec = int(ts)
    usec = min(999_999, int((ts - sec) * 1_000_000))
    return _PCAP_RECORD.pack(sec, usec, len(frame), original) + frame


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(kind: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def pcapng_header(snaplen: int, interface: str, application: str) -> bytes:
    shb_options = _option(4, application.encode()) + _option(0, b"")  # shb_userappl, opt_endofopt
    shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_options)
    idb_options = _option(2, interface.encode()) + _option(9, b"\x06") + _option(0, b"")  # if_name, if_tsresol=6
    idb = _block(0x00000001, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, snaplen) + idb_options)
    return shb + idb


def pcapng_record(ts: float, frame: bytes, original: int) -> bytes:
    micros = int(ts * 1_000_000)
    body = struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(frame), original) + _pad(frame)
    return _block(0x00000006, body)


class RotatingWriter:
    """Appends frames to ``path`` in ``fmt`` ("pcap" or "pcapng"), rotating by size and count."""

    def __init__(self, path: Path, fmt: str, *, snaplen: int, max_size: int, max_files: int, interface: str,
                 application: str = "bootstrapd") -> None:
        self.path = path
        self.fmt = fmt
        self.snaplen = snaplen
        self.max_size = max_size
        self.max_files = max_files
        self.interface = interface
        self.application = application
        self.frames = 0
        self.rotations = 0
        self._file: BinaryIO | None = None
        self._size = 0
        self._open()

    def _header(self) -> bytes:
        if self.fmt == "pcapng":
            return pcapng_header(self.snaplen, self.interface, self.application)
        return pcap_header(self.snaplen)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The capture holds every frame of the provisioning LAN (passwords of basic auth included): owner only.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=1 << 16)
        header = self._header()
        self._file.write(header)
        self._size = len(header)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        last = self.max_files - 1
        if last <= 0:
            self.path.unlink(missing_ok=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}.{last}")
            for n in range(last - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{n}", f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        self.rotations += 1
        self._open()

    def write(self, ts: float, frame: bytes, original: int | None = None) -> None:
        frame = frame[:self.snaplen]
        record = (pcapng_record if self.fmt == "pcapng" else pcap_record)(ts, frame, original or len(frame))
        if self._size + len(record) > self.max_size and self._size > len(self._header()):
            self._rotate()
        assert self._file is not None
        self._file.write(record)
        self._size += len(record)
        self.frames += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
