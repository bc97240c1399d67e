"""How a simulated phone fetches and uploads files, by the URL's scheme, from its own leased address.

- ``tftp://``: the TFTP client core (:mod:`bootstrapd.sim.tftp`) on a UDP socket bound to the phone's address, one
  socket per transfer (a new transfer ID each time, as phones do), its one timer re-armed on the core's deadline;
- ``http://`` / ``https://``: aiohttp, one client session per phone bound to its address, with the User-Agent a
  Yealink sends (model, firmware, MAC) and the credentials of the URL or of the phone's settings;
- ``ftp://``: aioftp, a login per file (anonymous unless the URL or the phone's settings give a user).

Every transfer ends in a :class:`~bootstrapd.sim.result.Result`; nothing here raises for what a server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from bootstrapd.sim import result as results
from bootstrapd.sim.result import Result
from bootstrapd.sim.tftp import TftpGet, TftpPut

USERNAME = "static.auto_provision.server.username"
PASSWORD = "static.auto_provision.server.password"


@dataclass(frozen=True)
class PhoneLink:
    """What a transfer needs to know about the phone making it."""

    address: str  # its leased address: every socket binds to it
    user_agent: str
    preset: dict[str, str]
    address6: str | None = None  # its DHCPv6 address, for URLs on an IPv6 host


@dataclass(frozen=True)
class Limits:
    tftp_timeout: float = 5.0
    tftp_tries: int = 5
    http_timeout: float = 10.0
    http_tries: int = 3
    ssl_context: ssl.SSLContext | None = None  # None: no certificate checks (a lab's self-signed certificate)


class _TftpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, core: TftpGet | TftpPut, host: str, done: asyncio.Future[Result]) -> None:
        self.core = core
        self.host = host
        self.done = done
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.armed: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._send(self.core.start(self.loop.time()))

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if addr[0] != self.host:
            return  # not the server this transfer talks to
        self._send(self.core.receive(data, addr[1], self.loop.time()))

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for one datagram: the core's timer retries

    def _send(self, datagrams: list[tuple[bytes, int | None]]) -> None:
        assert self.transport is not None
        for data, port in datagrams:
            target = port if port is not None else self.core.peer or self.core.server_port
            with contextlib.suppress(OSError):
                self.transport.sendto(data, (self.host, target))
        self._settle()

    def _settle(self) -> None:
        if self.core.result is not None:
            if self.timer is not None:
                self.timer.cancel()
            if not self.done.done():
                self.done.set_result(self.core.result)
            return
        deadline = self.core.deadline
        if deadline != self.armed:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._fire) if deadline is not None else None
            self.armed = deadline

    def _fire(self) -> None:
        self.armed = None
        self.timer = None
        self._send(self.core.on_timer(self.loop.time()))


def _host_port(url: str, default: int) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or default, unquote(parts.path).lstrip("/")


class Transports:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._http: dict[str, Any] = {}  # phone address -> aiohttp.ClientSession

    async def _tftp(self, link: PhoneLink, url: str, make: Callable[[str, int], TftpGet | TftpPut]) -> Result:
        host, port, name = _host_port(url, 69)
        if not host or not name:
            return Result(None, results.ERROR, f"not a TFTP file URL: {url}")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        local = (link.address, 0) if family == socket.AF_INET else (link.address6, 0) if link.address6 else None
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _TftpEndpoint(make(name, port), host, done), local_addr=local, family=family)
        except OSError as exc:
            return Result(None, results.ERROR, f"TFTP: cannot open a socket: {exc.strerror}")
        try:
            return await done
        finally:
            transport.close()

    async def get(self, link: PhoneLink, url: str) -> Result:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "tftp":
            return await self._tftp(link, url, lambda name, port: TftpGet(
                name, timeout=self.limits.tftp_timeout, tries=self.limits.tftp_tries, server_port=port))
        if scheme in ("http", "https"):
            return await self._http_request(link, "GET", url)
        if scheme == "ftp":
            return await self._ftp(link, url, None)
        return Result(None, results.ERROR, f"the phone cannot fetch {scheme or '(no scheme)'}:// URLs")

    async def put(self, link: PhoneLink, url: str, data: bytes) -> Result:
        scheme = urlsplit(url).scheme.lower()
        if scheme == "tftp":
            return await self._tftp(link, url, lambda name, port: TftpPut(
                name, timeout=self.limits.tftp_timeout, tries=self.limits.tftp_tries, server_port=port,
                payload=data))
        if scheme in ("http", "https"):
            return await self._http_request(link, "PUT", url, data)
        if scheme == "ftp":
            return await self._ftp(link, url, data)
        return Result(None, results.ERROR, f"the phone cannot upload to {scheme or '(no scheme)'}:// URLs")

    # -- HTTP(S) --------------------------------------------------------------------------------------------------

    def _session(self, link: PhoneLink, v6: bool) -> Any:
        import aiohttp

        key = f"{link.address}/{'6' if v6 else '4'}"
        session = self._http.get(key)
        if session is None:
            local = link.address6 if v6 else link.address
            connector = aiohttp.TCPConnector(local_addr=(local, 0) if local else None, limit=1, ssl=self._ssl())
            timeout = aiohttp.ClientTimeout(total=self.limits.http_timeout)
            session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                            headers={"User-Agent": link.user_agent})
            self._http[key] = session
        return session

    def _ssl(self) -> ssl.SSLContext | bool:
        return self.limits.ssl_context if self.limits.ssl_context is not None else False

    async def _http_request(self, link: PhoneLink, method: str, url: str, body: bytes | None = None) -> Result:
        import aiohttp

        parts = urlsplit(url)
        auth = None
        if parts.username is None and link.preset.get(USERNAME):
            auth = aiohttp.BasicAuth(link.preset[USERNAME], link.preset.get(PASSWORD, ""))
        session = self._session(link, ":" in (parts.hostname or ""))
        last = ""
        for attempt in range(self.limits.http_tries):
            try:
                async with session.request(method, url, data=body, auth=auth) as response:
                    data = await response.read()
                    status = response.status
                    reason = response.reason or ""
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                last = f"HTTP: {type(exc).__name__}: {exc}"[:200] if str(exc) else f"HTTP: {type(exc).__name__}"
                continue
            detail = f"HTTP {status} {reason}".strip()
            if 200 <= status < 300:
                return Result(data if method == "GET" else b"", results.OK, "", attempt)
            kind = {404: results.NOT_FOUND, 401: results.AUTH, 403: results.REFUSED}.get(status, results.ERROR)
            return Result(None, kind, detail, attempt)
        timeout = "timeout" in last.lower()
        return Result(None, results.TIMEOUT if timeout else results.ERROR, last, self.limits.http_tries - 1)

    # -- FTP ------------------------------------------------------------------------------------------------------

    async def _ftp(self, link: PhoneLink, url: str, upload: bytes | None) -> Result:
        try:
            import aioftp  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            return Result(None, results.ERROR, "FTP: aioftp is not installed")
        parts = urlsplit(url)
        host, port, name = parts.hostname or "", parts.port or 21, unquote(parts.path).lstrip("/")
        user = unquote(parts.username) if parts.username else link.preset.get(USERNAME) or "anonymous"
        password = unquote(parts.password) if parts.password else link.preset.get(PASSWORD, "")
        try:
            async with asyncio.timeout(self.limits.http_timeout):
                client = aioftp.Client(socket_timeout=self.limits.http_timeout)
                await client.connect(host, port)
                try:
                    await client.login(user, password)
                    if upload is not None:
                        async with client.upload_stream(name) as stream:
                            await stream.write(upload)
                        return Result(b"", results.OK)
                    chunks = []
                    async with client.download_stream(name) as stream:
                        async for block in stream.iter_by_block():
                            chunks.append(block)
                    return Result(b"".join(chunks), results.OK)
                finally:
                    with contextlib.suppress(Exception):
                        await client.quit()
                    client.close()
        except aioftp.StatusCodeError as exc:
            codes = {str(c) for c in exc.received_codes}
            kind = (results.AUTH if "530" in codes else results.NOT_FOUND if "550" in codes else results.ERROR)
            return Result(None, kind, f"FTP {', '.join(sorted(codes))}: {' '.join(exc.info)[:120]}".strip())
        except TimeoutError:
            return Result(None, results.TIMEOUT, "FTP: timeout")
        except (OSError, ConnectionError) as exc:
            return Result(None, results.ERROR, f"FTP: {exc}"[:200])

    async def close_phone(self, address: str) -> None:
        for key in (f"{address}/4", f"{address}/6"):
            session = self._http.pop(key, None)
            if session is not None:
                await session.close()

    async def close(self) -> None:
        for key in list(self._http):
            session = self._http.pop(key)
            await session.close()
