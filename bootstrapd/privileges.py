"""What the enabled services need from the kernel, checked at start-up against what the process holds.

The systemd unit runs bootstrapd as an unprivileged user with a short list of capabilities. A missing one must stop
the daemon at start-up, naming the capability and the service that needs it, rather than surface later as a
packet that silently never leaves (a unicast OFFER without its packet socket) or a bind error deep in one service.

:func:`needs` maps each enabled service to the capabilities its sockets need: ``CAP_NET_BIND_SERVICE`` for every
port below the network namespace's ``net.ipv4.ip_unprivileged_port_start`` (1024 unless lowered; it covers IPv6
too), and the extra ones in :data:`EXTRA`. This table and the unit's ``AmbientCapabilities=`` must agree: a test
compares them, and the least-privilege lab test runs the daemon with exactly the unit's list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bootstrapd.config import Settings

# capabilities(7) numbers of the ones bootstrapd may need; any other set bit is named CAP_<number>.
CAPABILITY_BITS = {
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
}

# Needs that are not a port number: service -> (capability, what for).
EXTRA: dict[str, tuple[tuple[str, str], ...]] = {
    # bootstrapd/net/packet.py: a unicast OFFER/ACK to a client that has no address yet (RFC 2131 4.1) is an
    # Ethernet frame sent on an AF_PACKET socket straight to its MAC, whatever the neighbour table holds.
    "dhcp4": (("CAP_NET_RAW", "a packet socket for unicast OFFERs and ACKs, RFC 2131 4.1"),),
}

UNIT = "systemd/bootstrapd.service"
_PORT_SYSCTL = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


@dataclass(frozen=True)
class Need:
    service: str
    capability: str
    why: str

    def __str__(self) -> str:
        return f"{self.service} needs {self.capability} ({self.why})"


def unprivileged_port_start(path: Path = _PORT_SYSCTL) -> int:
    """The lowest port anyone may bind in this network namespace; 1024 where /proc/sys cannot be read."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 1024


def _ports(settings: Settings) -> Iterator[tuple[str, str, int]]:
    """(service, what, its lowest port) for every socket the enabled services bind to a fixed port or range."""
    if settings.dhcp4.enabled:
        yield "dhcp4", "UDP port 67", 67
    if settings.dhcp6.enabled:
        yield "dhcp6", "UDP port 547", 547
    if settings.tftp.enabled:
        yield "tftp", f"UDP port {settings.tftp.port}", settings.tftp.port
    if settings.pnp.enabled:
        yield "pnp", f"UDP port {settings.pnp.port}", settings.pnp.port
        if settings.pnp.source_port:
            yield "pnp", f"UDP source port {settings.pnp.source_port}", settings.pnp.source_port
    if settings.http.enabled:
        if settings.http.port:
            yield "http", f"TCP port (http.port) {settings.http.port}", settings.http.port
        if settings.http.tls:  # a certificate and key configured: HTTPS listens too
            yield "http", f"TCP port (http.tls_port) {settings.http.tls_port}", settings.http.tls_port
    if settings.ftp.enabled:
        yield "ftp", f"TCP port (ftp.port) {settings.ftp.port}", settings.ftp.port
        first, last = settings.ftp.passive_ports  # data connections: any of these may be bound
        yield "ftp", f"TCP ports (ftp.passive_ports) {first}-{last}", first


def needs(settings: Settings, port_start: int = 1024) -> list[Need]:
    """Every capability the enabled services need, one entry per service and capability."""
    out: dict[tuple[str, str], list[str]] = {}
    for service, what, port in _ports(settings):
        if port < port_start:
            out.setdefault((service, "CAP_NET_BIND_SERVICE"), []).append(what)
    enabled = {name for name in ("dhcp4", "dhcp6", "tftp", "pnp", "http", "ftp")
               if getattr(getattr(settings, name, None), "enabled", False)}
    for service in sorted(enabled & EXTRA.keys()):
        for capability, why in EXTRA[service]:
            out.setdefault((service, capability), []).append(why)
    if getattr(getattr(settings, "capture", None), "file", ""):
        # Not granted by the unit: a capture is a debugging session's choice (a drop-in adds CAP_NET_RAW, README).
        out[("capture", "CAP_NET_RAW")] = ["the packet-capture recorder's AF_PACKET socket (capture.file, run --pcap)"]
    return [Need(service, capability, ", ".join(why)) for (service, capability), why in out.items()]


def effective(status: str) -> int:
    """The effective capability set (CapEff) from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise ValueError("no CapEff line")


def names(mask: int) -> list[str]:
    by_bit = {bit: name for name, bit in CAPABILITY_BITS.items()}
    return [by_bit.get(bit, f"CAP_{bit}") for bit in range(64) if mask >> bit & 1]


def missing(required: Iterable[Need], held: int) -> list[Need]:
    return [need for need in required if not held >> CAPABILITY_BITS[need.capability] & 1]


def _status() -> str:
    return Path("/proc/self/status").read_text()


def problem(settings: Settings, status: str | None = None, port_start: int | None = None) -> str | None:
    """Why this process cannot serve this configuration, or None. Names every missing capability and its service."""
    try:
        held = effective(status if status is not None else _status())
    except (OSError, ValueError):
        return None  # no /proc to check against: the binds themselves will tell
    lacking = missing(needs(settings, unprivileged_port_start() if port_start is None else port_start), held)
    if not lacking:
        return None
    caps = sorted({need.capability for need in lacking})
    return (f"missing capabilit{'y' if len(caps) == 1 else 'ies'} {' '.join(caps)}: "
            + "; ".join(str(need) for need in lacking)
            + f" (the unit {UNIT} grants {'it' if len(caps) == 1 else 'them'} with AmbientCapabilities=)")


def root_warning(settings: Settings, euid: int | None = None, port_start: int | None = None) -> str | None:
    """The one warning for a run as root: how the unit runs the same configuration with less."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    used = needs(settings, unprivileged_port_start() if port_start is None else port_start)
    caps = " ".join(sorted({need.capability for need in used}))
    grant = f"with only {caps}" if caps else "with no capabilities"
    detail = "; ".join(str(need) for need in used) or "this configuration binds no privileged port"
    return (f"running as root: {UNIT} runs bootstrapd as an unprivileged dynamic user {grant}, the system "
            f"read-only and its state in StateDirectory=: {detail}")
