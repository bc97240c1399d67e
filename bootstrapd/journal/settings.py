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
    storm_events: float = 400.0  # events a second above which the journal folds after the storm (0: never waits)


@dataclass(frozen=True)
class CaptureSettings:
    file: str = ""  # empty: no capture
    format: str = "pcap"
    max_size: int = 64 << 20  # bytes per file before rotating to file.1, file.2 …
    max_files: int = 4  # files kept, the current one included
    snaplen: int = 65535


@dataclass(frozen=True)
class StatusSettings:
    enabled: bool = False
    path: str = "/status"  # the page; the API is /api/…, the metrics /metrics
    port: int = 0  # 0: on the HTTP service's ports; else a listener of its own on this port
    user: str = "admin"
    password: str = ""  # scrypt hash from `bootstrapd hash-password`; required when enabled
    refresh: float = 5.0  # seconds between the page's refreshes
    metrics_auth: bool = True  # /metrics asks for the credentials too (Prometheus: basic_auth)


def load_status(table: Table) -> StatusSettings:
    settings = StatusSettings(
        enabled=table.flag("enabled", False),
        path=table.text("path", "/status"),
        port=table.integer("port", 0, min=0, max=65535),
        user=table.text("user", "admin"),
        password=table.text("password", ""),
        refresh=table.number("refresh", 5.0, min=1.0),
        metrics_auth=table.flag("metrics_auth", True),
    )
    path = settings.path
    if not path.startswith("/") or path == "/" or path.endswith("/") or any(c in path for c in "?#%\\ "):
        raise table.error("path", f"{path!r}: a path such as /status (no trailing /, no ? # % or spaces)")
    if path == "/api" or path.startswith("/api/") or path == "/metrics":
        raise table.error("path", f"{path!r} is taken by the API or the metrics")
    if settings.enabled and not settings.password:
        raise table.error("password", "the status page needs a password (`bootstrapd hash-password` makes one)")
    if not settings.user or ":" in settings.user or any(ord(c) < 0x20 for c in settings.user):
        raise table.error("user", "a user name without ':' or control characters")
    table.finish()
    return settings


def load_journal(table: Table) -> JournalSettings:
    settings = JournalSettings(
        enabled=table.flag("enabled", True),
        steps_per_phone=table.integer("steps_per_phone", 200, min=10, max=100_000),
        max_steps=table.integer("max_steps", 200_000, min=100, max=100_000_000),
        max_phones=table.integer("max_phones", 20_000, min=1, max=10_000_000),
        flush_interval=table.number("flush_interval", 0.25, min=0.01),
        max_pending=table.integer("max_pending", 100_000, min=100, max=10_000_000),
        storm_events=table.number("storm_events", 400.0, min=0.0),
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
