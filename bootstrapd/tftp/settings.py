"""The ``[tftp]`` section."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bootstrapd.configfile import Table


@dataclass(frozen=True)
class TftpSettings:
    enabled: bool = False
    port: int = 69
    blksize_max: int = 0  # 0: the interface MTU minus the headers (1468 on IPv4 Ethernet)
    windowsize_max: int = 64
    timeout: float = 1.0  # seconds before the first retransmission (a client's timeout option overrides it)
    retries: int = 5
    first_ack_retries: int = 2  # retransmissions before the client has acknowledged anything (anti-reflection)
    max_transfers: int = 2000
    max_per_client: int = 8
    max_waiting_per_client: int = 512  # requests over max_per_client wait for a slot, at most this many per address
    rate_limit: float = 200.0  # requests per second per client (token bucket, burst = rate_limit * 2); 0: no limit
    session_lifetime: float = 600.0
    large_file_size: int = 1 << 20
    max_large_transfers: int = 128  # a floor of phones fetching firmware at once (was 32: most were refused)
    cache_size: int = 64 << 20
    upload_max_size: int = 1 << 20  # not a key of [tftp]: provisioning.upload_max_size, copied here by config.py
    max_uploads: int = 16  # concurrent uploads (each held in memory up to upload_max_size until its last block)
    workers: int = 0  # processes running large downloads (bootstrapd/tftp/workers.py); 0: all on the daemon's loop
    # A transfer worker with exactly one lock-step download polls its socket for up to this many microseconds after
    # each DATA before it sleeps (sessions.py, Sessions.spin): the ACK of a phone on the LAN is usually back sooner
    # than a sleep and a cross-CPU wake-up take. 0: never. Never on the daemon's own loop.
    spin_us: int = 100


def default_workers(cpus: int | None = None) -> int:
    """``[tftp] workers`` when not set: one process per CPU (at most 8) from two CPUs on, so a firmware storm uses
    every core while the daemon's loop keeps the small files, DHCP and the rest; none on one CPU."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    return 0 if cpus < 2 else min(cpus, 8)


# Keys of earlier versions, now in [provisioning] (one upload store for every protocol).
MOVED = {
    "upload_dir": "[provisioning] uploads = true",
    "upload_max_size": "provisioning.upload_max_size",
    "upload_dir_max_size": "provisioning.upload_total_max_size",
}


def load_tftp(table: Table) -> TftpSettings:
    settings = TftpSettings(
        enabled=table.flag("enabled", False),
        port=table.integer("port", 69, min=1, max=65535),
        blksize_max=table.integer("blksize_max", 0, min=0, max=65464),
        windowsize_max=table.integer("windowsize_max", 64, min=1, max=65535),
        timeout=table.number("timeout", 1.0, min=0.05),
        retries=table.integer("retries", 5, min=0, max=50),
        first_ack_retries=table.integer("first_ack_retries", 2, min=0, max=50),
        max_transfers=table.integer("max_transfers", 2000, min=1, max=1_000_000),
        max_per_client=table.integer("max_per_client", 8, min=1),
        max_waiting_per_client=table.integer("max_waiting_per_client", 512, min=0, max=1_000_000),
        rate_limit=table.number("rate_limit", 200.0, min=0),
        session_lifetime=table.number("session_lifetime", 600.0, min=1),
        large_file_size=table.integer("large_file_size", 1 << 20, min=0),
        max_large_transfers=table.integer("max_large_transfers", 128, min=1),
        cache_size=table.integer("cache_size", 64 << 20, min=0),
        max_uploads=table.integer("max_uploads", 16, min=1, max=100_000),
        workers=table.integer("workers", default_workers(), min=0, max=64),
        spin_us=table.integer("spin_us", 100, min=0, max=1000),
    )
    for key, instead in MOVED.items():
        if table.has(key):
            raise table.error(key, f"moved: uploads over TFTP, HTTP and FTP share one store under "
                                   f"server.state_dir/uploads; use {instead}")
    if settings.blksize_max and settings.blksize_max < 8:
        raise table.error("blksize_max", "must be 0 (interface MTU) or at least 8")
    table.finish()
    return settings
