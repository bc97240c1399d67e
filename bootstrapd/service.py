"""What every service gets and is: the shared :class:`Context`, the :class:`Service` protocol, :class:`StartupError`.

A module of its own so that the daemon imports the services and the services import this, never the daemon: the
adapters and ``daemon.py`` used to import each other in a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from bootstrapd.config import Settings
from bootstrapd.events import Events
from bootstrapd.http.routes import HttpRoutes
from bootstrapd.leases.backends import Store
from bootstrapd.leases.owners import LeaseOwners
from bootstrapd.net.interfaces import Interface
from bootstrapd.urltemplates import interface_variables

if TYPE_CHECKING:
    from bootstrapd.provisioning.resolver import Resolver
    from bootstrapd.provisioning.work import FileWork


class StartupError(Exception):
    """The daemon cannot start with this configuration on this machine (exit status 2)."""


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    def reload(self, settings: Settings) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Context:
    """What services share: the settings in force, the interface, the event stream, the lease store, and who holds
    which address (the DHCP servers register into ``owners``; the file services and the journal ask it)."""

    settings: Settings
    interface: Interface
    events: Events
    store: Store
    owners: LeaseOwners = field(default_factory=LeaseOwners)
    extras: dict[str, object] = field(default_factory=dict)
    # The one resolver TFTP, HTTP and FTP serve from; the daemon builds it and replaces it on reload.
    files: Resolver | None = None
    # The worker threads that read and store files for them, off the event loop (bootstrapd.provisioning.work).
    work: FileWork | None = None
    # Routes other modules (status page, API, /metrics) add to the HTTP service before it starts.
    http_routes: HttpRoutes = field(default_factory=HttpRoutes)

    def url_variables(self) -> dict[str, str]:
        """{ipv4}, {ipv6}, {interface} for every URL template a service hands out (bootstrapd.urltemplates)."""
        settings = self.settings
        return interface_variables(self.interface, settings.dhcp4.range_start, settings.dhcp6.range_start)


ServiceFactory = Callable[[Context], Service]
