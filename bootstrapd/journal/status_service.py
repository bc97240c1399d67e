"""``[status]``: the status page, the API and ``/metrics`` as one of the daemon's services.

With ``status.port = 0`` the handlers are routes of the HTTP service (``ctx.http_routes``, registered here before
the HTTP service starts: this factory comes first); with a port of its own, a small aiohttp server listens on the
provisioning interface's addresses at that port (for a box that serves no HTTP to phones).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from bootstrapd.config import Settings
from bootstrapd.journal.backends import reading
from bootstrapd.journal.web import StatusWeb
from bootstrapd.leases.health import HEALTH
from bootstrapd.metrics import Metrics, registry_for, render
from bootstrapd.service import Context, StartupError

log = logging.getLogger("bootstrapd.status")


def _verify(stored: str, password: str) -> bool:
    # The [[auth]] entries' scrypt check: one implementation for both (the http-ftp branch's provisioning.auth).
    from bootstrapd.provisioning.auth import check_password

    return bool(check_password(stored, password))


class StatusService:
    name = "status"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        settings = ctx.settings
        services = ctx.extras.setdefault("services", [])
        assert isinstance(services, list)
        journal: Any = ctx.extras.get("journal")
        health: Any = ctx.extras.get(HEALTH)
        self.metrics = Metrics(ctx.events, services, journal, ctx.store, health)
        self.registry = registry_for(self.metrics)
        resync = self._resync if settings.pnp.enabled else None
        flush = journal.flush if journal is not None else None
        running = journal.store if journal is not None else None
        self.web = StatusWeb(settings.status, lambda: reading(self.ctx.settings, running), _verify,
                             lambda: render(self.registry), resync, flush, self._leases,
                             health.as_dict if health is not None else None)
        self.servers: list[asyncio.Server] = []
        self._low: web.Server | None = None
        if not settings.status.port:
            routes = getattr(ctx, "http_routes", None)
            if routes is None or not settings.http.enabled:
                raise StartupError("status: the page is served by the HTTP service ([http] enabled = true), or set "
                                   "status.port for a listener of its own")
            for path, handler, methods in self.web.routes():
                routes.add(path, handler, methods=methods)

    async def start(self) -> None:
        port = self.ctx.settings.status.port
        if not port:
            log.info("status page at %s/ on the HTTP service", self.ctx.settings.status.path)
            return
        self._low = web.Server(self._dispatch, access_log=None)
        loop = asyncio.get_running_loop()
        addresses = [str(a.ip) for a in self.ctx.interface.ipv4] + [
            str(a.ip) for a in self.ctx.interface.ipv6 if not a.ip.is_link_local]
        for address in addresses:
            self.servers.append(await loop.create_server(self._low, host=address, port=port, backlog=128))
        log.info("status page at http://%s:%d%s/", addresses[0] if addresses else "?", port,
                 self.ctx.settings.status.path)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        for path, handler, methods in self.web.routes():
            if request.path == path or (path.endswith("/") and (request.path.startswith(path)
                                                                  or request.path == path[:-1])):
                if request.method not in methods:
                    return web.Response(status=405, headers={"Allow": ", ".join(methods)})
                return await handler(request)
        return web.Response(status=404, text="not_found\n")

    def _leases(self, include_all: bool) -> tuple[list[Any], list[Any]]:
        from bootstrapd.leases import listing

        return listing.read(self.ctx.settings, include_all)

    async def _resync(self, mac: str) -> dict[str, Any]:
        from bootstrapd.pnp.cli import resync_phones

        settings = self.ctx.settings
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, lambda: resync_phones(settings, [mac], timeout=8.0))
        row = rows[0] if rows else {"target": mac, "ip": None, "status": None, "reason": "unknown phone"}
        if row.get("ip") is not None:
            self.ctx.events.emit("resync.sent", mac=mac, ip=row["ip"], status=row.get("status"),
                                 acknowledged=bool(row.get("ok")))
        return row

    def reload(self, settings: Settings) -> None:
        self.web.settings = settings.status

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        if self._low is not None:
            await self._low.shutdown(2.0)
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
