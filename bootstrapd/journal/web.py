"""The status page, the JSON API and ``/metrics``: aiohttp handlers the HTTP service routes to.

- ``<status.path>/`` the page (``bootstrapd/data/status/``: one HTML file, its script and style; no external asset:
  the appliance's VLAN has no internet), refreshing itself from the API;
- ``/api/phones`` (``?stage=``), ``/api/phones/<mac>`` (the journey), ``/api/leases``, ``/api/store`` (whether the
  lease store is reachable, since when), and ``POST /api/phones/<mac>/resync`` (a check-sync NOTIFY, the code of
  ``bootstrapd resync``);
- ``/metrics`` in the Prometheus text format.

Everything asks for the ``[status]`` credentials (HTTP basic; ``/metrics`` too unless ``metrics_auth = false``).
Verifying a scrypt hash costs tens of milliseconds on purpose: it runs in a thread, and a verified pair is remembered
by an HMAC under a per-process key (the password itself is never kept), so the page's refreshes cost one
verification. Errors are JSON documents ``{"error": …}`` with the usual status codes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from importlib import resources
from typing import Any

from aiohttp import web

from bootstrapd.journal.settings import StatusSettings
from bootstrapd.journal.stage import STAGES
from bootstrapd.journal.steps import normal_mac
from bootstrapd.journal.store import JournalStore, JournalUnavailable
from bootstrapd.journal.views import phone_document, phones_document

Verify = Callable[[str, str], bool]  # (stored password, given password) -> right?
Resync = Callable[[str], Awaitable[dict[str, Any]]]  # MAC -> the phone's answer (see pnp.cli.resync_phones)
Metrics = Callable[[], bytes]
Leases = Callable[[bool], tuple[list[Any], list[Any]]]  # include expired/released -> (DHCPv4 rows, DHCPv6 rows)
Reader = Callable[[], AbstractContextManager[JournalStore | None]]  # the journal for one read (journal.backends)
Health = Callable[[], dict[str, Any] | None]  # the lease store's state (leases.health), None: not known here

ASSETS = {"": ("index.html", "text/html; charset=utf-8"), "index.html": ("index.html", "text/html; charset=utf-8"),
          "status.js": ("status.js", "text/javascript; charset=utf-8"),
          "status.css": ("status.css", "text/css; charset=utf-8")}
REMEMBERED = 64  # verified credential pairs kept
# Nothing but the page's own files (the icon: none, as data:), and never inside another site's frame.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


def _asset(name: str) -> bytes:
    return resources.files("bootstrapd.data").joinpath("status", name).read_bytes()


def _json(status: int, document: dict[str, Any]) -> web.Response:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


def error(status: int, message: str, **extra: Any) -> web.Response:
    return _json(status, {"error": message, "status": status, **extra})


class StatusWeb:
    def __init__(self, settings: StatusSettings, journal: Reader, verify: Verify, metrics: Metrics | None = None,
                 resync: Resync | None = None, flush: Callable[[], Awaitable[Any]] | None = None,
                 leases: Leases | None = None, health: Health | None = None) -> None:
        self.settings = settings
        self.journal = journal  # a store to read the journal from, for one request (journal.backends.reading)
        self.health = health or (lambda: None)
        self.leases = leases  # the configured store's leases (SQLite file or PostgreSQL), read in a thread
        self.verify = verify
        self.metrics = metrics
        self.resync = resync
        self.flush = flush  # the journal's flush: a resync's step is written before the answer returns
        self._key = os.urandom(32)
        self._verified: OrderedDict[bytes, bool] = OrderedDict()
        self._assets = {name: _asset(file) for name, (file, _) in ASSETS.items()}

    def routes(self) -> list[tuple[str, Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], tuple[str, ...]]]:
        """(path, handler, methods) for the HTTP service's routes (a path ending in / is a prefix)."""
        return [(self.settings.path + "/", self.page, ("GET", "HEAD")),
                ("/api/", self.api, ("GET", "HEAD", "POST")),
                ("/metrics", self.serve_metrics, ("GET", "HEAD"))]

    # -- credentials --------------------------------------------------------------------------------------------
    async def _authorized(self, request: web.BaseRequest) -> bool:
        header = request.headers.get("Authorization", "")
        if header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not sep or not hmac.compare_digest(user.encode(), self.settings.user.encode()):
            return False
        key = hmac.new(self._key, f"{self.settings.password}\0{password}".encode(), hashlib.sha256).digest()
        known = self._verified.get(key)
        if known is None:
            known = await asyncio.get_running_loop().run_in_executor(None, self.verify, self.settings.password,
                                                                     password)
            self._verified[key] = known
            while len(self._verified) > REMEMBERED:
                self._verified.popitem(last=False)
        return known

    def _challenge(self, json_error: bool) -> web.Response:
        headers = {"WWW-Authenticate": 'Basic realm="bootstrapd status", charset="UTF-8"'}
        if json_error:
            response = error(401, "credentials needed ([status] user and password)")
            response.headers.update(headers)
            return response
        return web.Response(status=401, text="401: credentials needed\n", headers=headers)

    # -- the page -----------------------------------------------------------------------------------------------
    async def page(self, request: web.BaseRequest) -> web.StreamResponse:
        if not await self._authorized(request):
            return self._challenge(False)
        path = request.path
        base = self.settings.path
        if path == base:
            raise web.HTTPMovedPermanently(base + "/")
        name = path[len(base) + 1:]
        asset = ASSETS.get(name)
        if asset is None:
            return web.Response(status=404, text="not_found\n")
        body = self._assets[name]
        if name in ("", "index.html"):
            body = body.replace(b"@REFRESH@", str(int(self.settings.refresh * 1000)).encode())
        return web.Response(body=body, content_type=asset[1].split(";")[0], charset="utf-8",
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": CSP})

    # -- the API ------------------------------------------------------------------------------------------------
    async def api(self, request: web.BaseRequest) -> web.StreamResponse:
        if not await self._authorized(request):
            return self._challenge(True)
        parts = [p for p in request.path.split("/") if p][1:]  # after "api"
        loop = asyncio.get_running_loop()
        if parts == ["phones"] and request.method in ("GET", "HEAD"):
            stage = request.query.get("stage")
            if stage is not None and stage not in STAGES:
                return error(400, f"stage must be one of {', '.join(STAGES)}")
            try:
                return _json(200, await loop.run_in_executor(None, self._phones, stage))
            except JournalUnavailable as exc:  # the shared database is down: say so, and what the store sees
                return error(503, f"the journal cannot be read: {exc}", store=self.health())
        if parts == ["store"] and request.method in ("GET", "HEAD"):
            state = self.health()
            return _json(200, state) if state is not None else error(404, "the store's state is not known here")
        if parts == ["leases"] and request.method in ("GET", "HEAD"):
            from bootstrapd.leases import listing
            from bootstrapd.leases.backends import StoreOpenError

            if self.leases is None:
                return error(503, "no lease store here")
            include_all = request.query.get("all") in ("1", "true", "yes")
            try:
                rows = await loop.run_in_executor(None, self.leases, include_all)
            except StoreOpenError as exc:
                return error(503, str(exc))
            return _json(200, listing.as_json(*rows))
        if len(parts) in (2, 3) and parts[0] == "phones":
            mac = normal_mac(parts[1])
            if mac is None:
                return error(400, "not a MAC address", mac=parts[1][:40])
            if len(parts) == 2 and request.method in ("GET", "HEAD"):
                try:
                    document = await loop.run_in_executor(None, self._phone, mac)
                except JournalUnavailable as exc:
                    return error(503, f"the journal cannot be read: {exc}", mac=mac, store=self.health())
                return _json(200, document) if document is not None else error(404, "no such phone", mac=mac)
            if len(parts) == 3 and parts[2] == "resync":
                if request.method != "POST":
                    response = error(405, "resync is a POST")
                    response.headers["Allow"] = "POST"
                    return response
                return await self._resync(mac)
        if parts and parts[0] in ("phones", "leases", "store"):
            response = error(405, f"{request.method} is not allowed here")
            response.headers["Allow"] = "GET, HEAD"
            return response
        return error(404, "no such API resource", path=request.path[:200])

    def _phones(self, stage: str | None) -> dict[str, Any]:
        with self.journal() as store:
            return phones_document(store, stage, self.health())

    def _phone(self, mac: str) -> dict[str, Any] | None:
        with self.journal() as store:
            return phone_document(store, mac)

    async def _resync(self, mac: str) -> web.Response:
        if self.resync is None:
            return error(503, "resync needs the PnP service ([pnp] enabled)")
        result = await self.resync(mac)
        if result.get("ip") is None:
            return error(404, "unknown phone: no active lease and no PnP record", mac=mac)
        if self.flush is not None:
            await self.flush()
        if result.get("status") is None:
            return error(504, f"the phone did not answer the check-sync NOTIFY ({result.get('reason') or 'timeout'})",
                         mac=mac, ip=result.get("ip"))
        return _json(200, result)

    # -- metrics ------------------------------------------------------------------------------------------------
    async def serve_metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.settings.metrics_auth and not await self._authorized(request):
            return self._challenge(False)
        if self.metrics is None:
            return web.Response(status=503, text="metrics unavailable\n")
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=self.metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})
