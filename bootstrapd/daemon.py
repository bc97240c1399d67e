"""Builds the services from the settings and runs them in one event loop.

Start-up order: validate the interface, open the lease store, start every enabled service (each binds its sockets
to the provisioning interface), then tell systemd ``READY=1``. SIGTERM/SIGINT stop cleanly; SIGHUP re-reads the
configuration and hands it to every service, keeping the leases (a file that does not load is rejected with its
reason and the running configuration stays in force).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bootstrapd import config, cpus, eventloop, privileges
from bootstrapd.config import Settings
from bootstrapd.events import Events
from bootstrapd.leases.backends import StoreOpenError, open_store
from bootstrapd.leases.health import HEALTH, StoreHealth
from bootstrapd.leases.health import KINDS as HEALTH_KINDS
from bootstrapd.net.interfaces import Interface, InterfaceError, lookup
from bootstrapd.service import Context, Service, ServiceFactory, StartupError

if TYPE_CHECKING:
    from bootstrapd.leases.postgresql import PgStore
    from bootstrapd.provisioning.uploads import UploadName

log = logging.getLogger("bootstrapd")

__all__ = ["Context", "Daemon", "Service", "StartupError", "check_interface", "sd_notify"]


def service_factories(settings: Settings) -> list[ServiceFactory]:
    """The enabled services, imported only when enabled."""
    from bootstrapd.provisioning.adapter import ProvisioningService

    factories: list[ServiceFactory] = [ProvisioningService]  # first: the file services serve through it
    if settings.capture.file:  # before the network services: it records their first frames
        from bootstrapd.journal.capture import CaptureService

        factories.append(CaptureService)
    if settings.journal.enabled:  # before the network services: subscribed before any of them emits
        from bootstrapd.journal.service import JournalService

        factories.append(JournalService)
    if settings.status.enabled:  # before HTTP: it registers the page, the API and /metrics as HTTP routes
        from bootstrapd.journal.status_service import StatusService

        factories.append(StatusService)
    if settings.dhcp4.enabled:
        from bootstrapd.dhcp4.adapter import Dhcp4Service

        factories.append(Dhcp4Service)
    if settings.dhcp6.enabled:
        from bootstrapd.dhcp6.adapter import Dhcp6Service

        factories.append(Dhcp6Service)
    if settings.tftp.enabled:
        from bootstrapd.tftp.adapter import TftpService

        factories.append(TftpService)
    if settings.pnp.enabled:
        from bootstrapd.pnp.adapter import PnpService

        factories.append(PnpService)
    if settings.http.enabled:
        from bootstrapd.http.adapter import HttpService

        factories.append(HttpService)
    if settings.ftp.enabled:
        from bootstrapd.ftp.adapter import FtpService

        factories.append(FtpService)
    return factories


def _files(settings: Settings, context: Context) -> None:
    """The one resolver the file services share (built again on reload, with the new settings)."""
    from bootstrapd.provisioning.files import build_resolver

    try:
        context.files = build_resolver(settings, context.owners)
    except ValueError as exc:
        raise StartupError(f"server.state_dir: {exc}") from None
    if context.store.backend == "postgresql" and context.files.uploads is not None:
        _record_uploads(context)


def _record_uploads(context: Context) -> None:
    """With a shared store, each upload's metadata (phone, name, size, SHA-256, which appliance) goes to the
    database: the files stay in this appliance's state_dir (README: what to share between appliances)."""
    import hashlib

    loop = asyncio.get_running_loop()
    store = context.store
    assert context.files is not None and context.files.uploads is not None

    def stored(name: UploadName, data: bytes) -> None:  # in a file worker thread
        digest = hashlib.sha256(data).hexdigest()
        loop.call_soon_threadsafe(store.record_upload, name.mac, name.filename, len(data), digest, time.time())

    context.files.uploads.stored = stored


async def _share_state(store: PgStore, settings: Settings) -> None:
    """What appliances sharing a database must agree on beyond leases: the AES secret the file keys derive from."""
    from bootstrapd.provisioning.sharedsecret import share_secret

    try:
        await share_secret(store, settings.server.state_dir)
    except OSError as exc:
        raise StartupError(f"server.state_dir {settings.server.state_dir}: {exc.strerror or exc}") from None


def check_interface(settings: Settings, iface: Interface) -> None:
    if not iface.up:
        raise StartupError(f"interface {iface.name!r} is down (server.interface)")
    if settings.dhcp4.enabled:
        if not iface.ipv4:
            raise StartupError(f"interface {iface.name!r} has no IPv4 address; dhcp4 needs one (server.interface)")
        if iface.ipv4_for(settings.dhcp4.range_start) is None or iface.ipv4_for(settings.dhcp4.range_end) is None:
            nets = ", ".join(str(i.network) for i in iface.ipv4)
            raise StartupError(
                f"dhcp4.range {settings.dhcp4.range_start}-{settings.dhcp4.range_end} is not inside the subnet of "
                f"interface {iface.name!r} ({nets})"
            )
        own = {i.ip for i in iface.ipv4}
        start, end = int(settings.dhcp4.range_start), int(settings.dhcp4.range_end)
        for ip in own:
            if start <= int(ip) <= end:
                raise StartupError(f"dhcp4.range contains the interface's own address {ip}")
        for host in settings.dhcp4.hosts:
            if iface.ipv4_for(host.address) is None:
                raise StartupError(f"dhcp4.host {host.address} is not in the subnet of interface {iface.name!r}")
    if settings.dhcp6.enabled:
        check_interface6(settings, iface)


def check_interface6(settings: Settings, iface: Interface) -> None:
    """DHCPv6 needs a link-local address (replies leave from it) and a prefix holding the whole range."""
    if iface.link_local_ipv6 is None:
        raise StartupError(f"interface {iface.name!r} has no IPv6 link-local address; dhcp6 needs one")
    start, end = settings.dhcp6.range_start, settings.dhcp6.range_end
    nets = [i.network for i in iface.ipv6 if not i.ip.is_link_local]
    if not any(start in net and end in net for net in nets):
        shown = ", ".join(str(n) for n in nets) or "none"
        raise StartupError(
            f"dhcp6.range {start}-{end} is not inside a prefix of interface {iface.name!r} ({shown})"
        )
    for own in iface.ipv6:
        if int(start) <= int(own.ip) <= int(end):
            raise StartupError(f"dhcp6.range contains the interface's own address {own.ip}")


def sd_notify(message: str) -> bool:
    """Send a state line to systemd's notification socket, if there is one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


class Daemon:
    def __init__(self, settings: Settings, adjust: Callable[[Settings], Settings] | None = None) -> None:
        # ``adjust``: command-line overrides (run --pcap), applied again to every reloaded file.
        self._adjust = adjust or (lambda s: s)
        self.settings = self._adjust(settings)
        self.events = Events()
        self.services: list[Service] = []
        self._stop = asyncio.Event()
        self.context: Context | None = None

    async def run(self) -> None:
        settings = self.settings
        # Capabilities first: a missing one is named here, not met later as a bind error or a reply never sent.
        lacking = privileges.problem(settings)
        if lacking:
            raise StartupError(lacking)
        warning = privileges.root_warning(settings)
        if warning:
            log.warning(warning)
        loop = asyncio.get_running_loop()
        cpu = self._pin(loop)
        try:
            # pyroute2's synchronous IPRoute runs its own event loop: keep it off ours.
            iface = await loop.run_in_executor(None, lookup, settings.server.interface)
        except InterfaceError as exc:
            raise StartupError(f"{exc} (server.interface)") from None
        check_interface(settings, iface)
        try:
            settings.server.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"server.state_dir {settings.server.state_dir}: {exc.strerror}") from None
        # Subscribed first: a database that is down while the daemon starts is an outage status and /metrics show.
        health = StoreHealth(settings.store, settings.server.state_dir)
        self.events.subscribe(health.sink, HEALTH_KINDS)
        try:
            store = await open_store(settings, self.events, iface.mac.hex())
        except StoreOpenError as exc:
            raise StartupError(str(exc)) from None
        health.save()
        if store.backend == "postgresql":
            from bootstrapd.leases.postgresql import PgStore

            assert isinstance(store, PgStore)
            await _share_state(store, settings)
        self.context = Context(settings=settings, interface=iface, events=self.events, store=store)
        self.context.extras["services"] = self.services  # the running services, for /metrics
        self.context.extras[HEALTH] = health
        for warning in settings.warnings:
            log.warning("%s", warning)
        try:
            _files(settings, self.context)
            for factory in service_factories(settings):
                service = factory(self.context)
                try:
                    await service.start()
                except OSError as exc:
                    raise StartupError(f"{service.name}: cannot bind: {exc.strerror or exc}") from None
                self.services.append(service)
                log.info("%s serving on %s", service.name, iface.name)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            # Leases, bindings and caches loaded at start-up live as long as the process: move them out of the
            # cyclic collector's sight, and collect less often. With default thresholds a full collection scanning
            # 50,000 bindings ran every few hundred packets and tripled the cost of a DHCP exchange (measured).
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            watchdog = self._start_watchdog(loop)
            sd_notify("READY=1\nSTATUS=serving")
            log.info("ready", extra={"interface": iface.name, "services": [s.name for s in self.services],
                                     "event_loop": eventloop.name(loop), "cpu": "any" if cpu is None else cpu})
            await self._stop.wait()
            if watchdog:
                watchdog.cancel()
            sd_notify("STOPPING=1")
            log.info("stopping", extra={"counters": dict(sorted(self.events.counters.items()))})
        finally:
            for service in reversed(self.services):
                try:
                    await service.stop()
                except Exception:
                    log.exception("error stopping %s", service.name)
            if self.context.work is not None:
                self.context.work.close()
            await store.shutdown()

    def _pin(self, loop: asyncio.AbstractEventLoop) -> int | None:
        """The event loop's thread, and the writer threads it starts, on one CPU (``server.cpu``; bootstrapd.cpus);
        the threads that work outside the interpreter lock get the whole CPU set back."""
        try:
            cpu = cpus.pin(self.settings.server.cpu)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:  # a container without sched_setaffinity: run unpinned rather than not at all
            log.warning("server.cpu: cannot pin the event loop: %s", exc.strerror or exc)
            return None
        if cpu is not None:
            loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="executor", initializer=cpus.release))
        return cpu

    def _start_watchdog(self, loop: asyncio.AbstractEventLoop) -> asyncio.TimerHandle | None:
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec or not usec.isdigit():
            return None
        interval = int(usec) / 2_000_000

        def ping() -> None:
            sd_notify("WATCHDOG=1")
            self._watchdog = loop.call_later(interval, ping)

        self._watchdog = loop.call_later(interval, ping)
        return self._watchdog

    def stop(self) -> None:
        self._stop.set()

    def reload(self) -> None:
        sd_notify("RELOADING=1")
        try:
            new = self._adjust(config.load(self.settings.file))
            if new.server.interface != self.settings.server.interface:
                raise config.ConfigError(new.file, None, "server.interface", "cannot change on reload; restart")
            if new.server.state_dir != self.settings.server.state_dir:
                raise config.ConfigError(new.file, None, "server.state_dir", "cannot change on reload; restart")
            if new.store != self.settings.store:
                raise config.ConfigError(new.file, None, "store", "cannot change on reload; restart")
            enabled = [f.__name__ for f in service_factories(new)]
            running = [f.__name__ for f in service_factories(self.settings)]
            if enabled != running:
                raise config.ConfigError(new.file, None, "enabled", "enabling or disabling a service needs a restart")
            assert self.context is not None
            check_interface(new, self.context.interface)
        except (config.ConfigError, StartupError) as exc:
            log.error("reload rejected, the running configuration stays in force: %s", exc)
            sd_notify("READY=1\nSTATUS=reload rejected")
            return
        try:
            _files(new, self.context)
        except StartupError as exc:
            log.error("reload rejected, the running configuration stays in force: %s", exc)
            sd_notify("READY=1\nSTATUS=reload rejected")
            return
        self.settings = new
        self.context.settings = new
        for service in self.services:
            service.reload(new)
        log.info("configuration reloaded", extra={"file": new.file})
        sd_notify("READY=1\nSTATUS=serving")
