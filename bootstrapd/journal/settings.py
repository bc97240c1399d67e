"""The ``[journal]`` and ``[capture]`` sections."""

from __future__ import annotations

from dataclasses import dataclass

from bootstrapd.configfile import Table

CAPTURE_FORMATS = ("pcap", "pcapng")


@dataclass(frozen=True)
class JournalSettings:
    enabled: bool = True
    steps_per_phone: int = 200  # the oldest steps of a phone beyond this are pruned
    max_steps: int = 200_000  # all phones together; the oldest steps overall go first
    max_phones: int = 20_000  # phones not seen for the longest are forgotten beyond this
    flush_interval: float = 0.25  # seconds between batches written to the journal file
    max_pending: int = 100_000  # events held between two batches; more are counted and dropped


@dataclass(frozen=True)
class CaptureSettings:
    file: str = ""  # empty: no capture
    format: str = "pcap"
    max_size: int = 64 << 20  # bytes per file before rotating to file.1, file.2 …
    max_files: int = 4  # files kept, the current one included
    snaplen: int = 65535


def load_journal(table: Table) -> JournalSettings:
    settings = JournalSettings(
        enabled=table.flag("enabled", True),
        steps_per_phone=table.integer("steps_per_phone", 200, min=10, max=100_000),
        max_steps=table.integer("max_steps", 200_000, min=100, max=100_000_000),
        max_phones=table.integer("max_phones", 20_000, min=1, max=10_000_000),
        flush_interval=table.number("flush_interval", 0.25, min=0.01),
        max_pending=table.integer("max_pending", 100_000, min=100, max=10_000_000),
    )
    if settings.flush_interval > 60:
        raise table.error("flush_interval", "at most 60 seconds")
    table.finish()
    return settings


def load_capture(table: Table) -> CaptureSettings:
    settings = CaptureSettings(
        file=table.text("file", ""),
        format=table.text("format", "pcap"),
        max_size=table.integer("max_size", 64 << 20, min=64 << 10),
        max_files=table.integer("max_files", 4, min=1, max=1000),
        snaplen=table.integer("snaplen", 65535, min=256, max=262144),
    )
    if settings.format not in CAPTURE_FORMATS:
        raise table.error("format", f"{settings.format!r}: one of {', '.join(CAPTURE_FORMATS)}")
    table.finish()
    return settings
