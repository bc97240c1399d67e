"""The status page's handlers and the JSON API over a real journal (SQLite, and a real PostgreSQL), through aiohttp's
client."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient

from bootstrapd.config import loads
from bootstrapd.journal.backends import reading
from bootstrapd.journal.settings import StatusSettings
from bootstrapd.journal.stage import Phone, fold
from bootstrapd.journal.steps import step_of
from bootstrapd.journal.store import Batch, Limits
from bootstrapd.journal.web import StatusWeb
from bootstrapd.leases import listing
from tests.unit.conftest import JournalBackend

MAC = "00:15:65:aa:bb:cc"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cret").decode()}


def _journal(backend: JournalBackend) -> None:
    store = backend.writer()
    phone = Phone(MAC)
    steps = []
    for kind, fields in (("dhcp4.ack", {"mac": MAC, "request": "REQUEST", "address": "10.77.0.100",
                                        "options": [1, 66]}),
                         ("tftp.transfer", {"file": "sip.cfg", "outcome": "not_found"})):
        step = step_of(kind, fields, 1000.0)
        assert step is not None
        fold(phone, step)
        steps.append(step | {"mac": MAC})
    store.write([Batch.of([phone.as_dict()], steps)], Limits(100, 1000, 100))
    store.close()


async def _checks(backend: JournalBackend) -> None:
    _journal(backend)
    verified: list[str] = []
    resynced: list[str] = []

    def verify(stored: str, password: str) -> bool:
        verified.append(password)
        return stored == "hash-of-s3cret" and password == "s3cret"

    async def resync(mac: str) -> dict[str, Any]:
        resynced.append(mac)
        if mac == MAC:
            return {"target": mac, "ip": "10.77.0.100", "status": 200, "reason": "OK", "ok": True}
        return {"target": mac, "ip": None, "status": None, "reason": "unknown"}

    settings = backend.settings()
    status = StatusWeb(StatusSettings(enabled=True, password="hash-of-s3cret", refresh=2), lambda: reading(settings),
                       verify,
                       lambda: b"bootstrapd_requests_total 1\n", resync,
                       leases=lambda include_all: listing.read(settings, include_all))
    routes = status.routes()

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        for path, handler, methods in routes:
            if request.path == path or (path.endswith("/") and request.path.startswith(path)):
                assert request.method in methods
                return await handler(request)
        return web.Response(status=404)

    c: TestClient[Any, Any] = TestClient(RawTestServer(dispatch))
    await c.start_server()
    try:
            r = await c.get("/api/phones")
            assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]
            assert (await r.json())["error"].startswith("credentials")
            r = await c.get("/api/phones", headers={"Authorization": "Basic " + base64.b64encode(b"admin:x").decode()})
            assert r.status == 401
            r = await c.get("/api/phones", headers=AUTH)
            assert r.status == 200
            data = await r.json()
            assert data["phones"][0]["mac"] == MAC and data["phones"][0]["error"] == "asked for sip.cfg: not found"
            assert data["summary"]["stuck"] == 1
            for _ in range(3):
                await c.get("/api/phones", headers=AUTH)
            assert verified.count("s3cret") == 1  # a verified pair is remembered
            r = await c.get("/api/phones?stage=done", headers=AUTH)
            assert (await r.json())["phones"] == []
            r = await c.get("/api/phones?stage=bogus", headers=AUTH)
            assert r.status == 400
            r = await c.get(f"/api/phones/{MAC.replace(':', '')}", headers=AUTH)
            journey = await r.json()
            assert [s["kind"] for s in journey["steps"]] == ["ack", "get"]
            assert journey["steps"][1]["text"] == "TFTP get sip.cfg: not found"
            r = await c.get("/api/phones/00:15:65:00:00:01", headers=AUTH)
            assert r.status == 404 and (await r.json())["error"] == "no such phone"
            r = await c.get("/api/phones/nonsense", headers=AUTH)
            assert r.status == 400
            r = await c.get("/api/phones/00:15:65:aa:bb:cc/resync", headers=AUTH)
            assert r.status == 405 and r.headers["Allow"] == "POST"
            r = await c.post(f"/api/phones/{MAC}/resync", headers=AUTH)
            assert r.status == 200 and (await r.json())["status"] == 200 and resynced == [MAC]
            r = await c.post("/api/phones/00:15:65:00:00:01/resync", headers=AUTH)
            assert r.status == 404
            r = await c.get("/api/leases", headers=AUTH)
            assert r.status == 200 and await r.json() == {"dhcp4": [], "dhcp6": []}
            r = await c.get("/api/nothing", headers=AUTH)
            assert r.status == 404 and r.content_type == "application/json"
            r = await c.get("/status/", headers=AUTH)
            page = await r.text()
            assert r.status == 200 and 'data-refresh="2000"' in page and "status.js" in page
            assert "http://" not in page and "https://" not in page  # no external asset
            r = await c.get("/status/status.js", headers=AUTH)
            assert r.status == 200 and "textContent" in await r.text()
            r = await c.get("/status/../../etc/passwd", headers=AUTH)
            assert r.status == 404
            r = await c.get("/metrics")
            assert r.status == 401
            r = await c.get("/metrics", headers=AUTH)
            assert r.status == 200 and "text/plain" in r.headers["Content-Type"]
            assert (await r.text()) == "bootstrapd_requests_total 1\n"
    finally:
        await c.close()


def test_api_and_page(journal_backend: JournalBackend) -> None:
    asyncio.run(_checks(journal_backend))


def test_status_settings_are_checked() -> None:
    from bootstrapd.config import ConfigError

    base = '[server]\ninterface = "eth1"\n[dhcp4]\nrange = "10.77.0.100-10.77.0.199"\n[status]\n'
    for bad, key in (("enabled = true\n", "status.password"), ('path = "/api"\n', "status.path"),
                     ('path = "status"\n', "status.path"), ('user = "a:b"\n', "status.user")):
        with pytest.raises(ConfigError) as info:
            loads(base + bad, "f.toml")
        assert info.value.key == key, (bad, info.value)
    assert json.dumps(loads(base + 'path = "/phones"\n').status.path) == '"/phones"'


def test_a_shared_journal_that_cannot_be_read_is_a_503_with_the_stores_state(tmp_path: Path) -> None:
    """PostgreSQL down (here: no server at the socket's path): the API says so, and what the lease store sees."""
    from bootstrapd.leases.health import StoreHealth

    settings = loads(f'[server]\ninterface = "eth1"\nstate_dir = "{tmp_path}"\n[dhcp4]\nenabled = false\n'
                     f'[store]\nbackend = "postgresql"\ndsn = "postgresql://bootstrapd:topsecret@/none?host={tmp_path}"\n'
                     'connect_timeout = 1\n')
    health = StoreHealth(settings.store, clock=lambda: 1000.0)
    health.sink("store.down", {"error": "connection refused"})

    async def checks() -> None:
        status = StatusWeb(StatusSettings(enabled=True, password="pw", refresh=2), lambda: reading(settings),
                           lambda stored, given: stored == given, health=health.as_dict)

        async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
            return await status.api(request)

        c: TestClient[Any, Any] = TestClient(RawTestServer(dispatch))
        await c.start_server()
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
        try:
            r = await c.get("/api/phones", headers=auth)
            document = await r.json()
            assert r.status == 503 and document["error"].startswith("the journal cannot be read: PostgreSQL at")
            assert document["store"]["up"] is False and document["store"]["down_since"] == 1000.0
            assert "topsecret" not in json.dumps(document) and "topsecret" not in json.dumps(health.as_dict())
            r = await c.get(f"/api/phones/{MAC}", headers=auth)
            assert r.status == 503 and (await r.json())["mac"] == MAC
            r = await c.get("/api/store", headers=auth)
            state = await r.json()
            assert r.status == 200 and state["backend"] == "postgresql" and state["error"] == "connection refused"
            r = await c.post("/api/store", headers=auth)
            assert r.status == 405
        finally:
            await c.close()

    asyncio.run(checks())
