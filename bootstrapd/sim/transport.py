"""How a simulated phone fetches and uploads files, by the URL's scheme, from its own leased address.

- ``tftp://``: the TFTP client core (:mod:`bootstrapd.sim.tftp`) on a UDP socket bound to the phone's address, one
  socket per transfer (a new transfer ID each time, as phones do) read from the loop's selector, its one timer
  re-armed on the core's deadline;
- ``http://`` / ``https://``: the phone's own HTTP/1.1 client (:mod:`bootstrapd.sim.http`), one kept-alive
  connection per phone and server, from its address, with the User-Agent a Yealink sends (model, firmware, MAC) and
  the credentials of the URL or of the phone's settings (preemptive basic auth); a request that fails (connection
  refused or lost, timeout, unreadable response) is sent again on a new connection, ``http_tries`` in all;
- ``ftp://``: aioftp, a login per file (anonymous unless the URL or the phone's settings give a user), its control
  and passive data connections from the phone's address.

Every transfer ends in a :class:`~bootstrapd.sim.result.Result`; nothing here raises for what a server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

from bootstrapd.sim import http
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


class _TftpSocket:
    """One transfer's UDP socket, read straight from the loop's selector: a phone makes one per file, and asyncio's
    datagram endpoint (transport, protocol, buffer bookkeeping) cost more than the transfer itself in the storm."""

    def __init__(self, core: TftpGet | TftpPut, host: str, sock: socket.socket, done: asyncio.Future[Result]) -> None:
        self.core = core
        self.host = host
        self.sock = sock
        self.done = done
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.armed: float | None = None
        self.loop.add_reader(sock.fileno(), self._readable)
        self._send(core.start(self.loop.time()))

    def _readable(self) -> None:
        for _ in range(64):
            try:
                data, addr = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for one datagram: the core's timer retries
                return
            if addr[0] == self.host:  # else not the server this transfer talks to
                self._send(self.core.receive(data, addr[1], self.loop.time()))
            if self.core.result is not None:
                return

    def _send(self, datagrams: list[tuple[bytes, int | None]]) -> None:
        for data, port in datagrams:
            target = port if port is not None else self.core.peer or self.core.server_port
            with contextlib.suppress(OSError):
                self.sock.sendto(data, (self.host, target))
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

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class _HttpConnection(asyncio.Protocol):
    """One phone's connection to a web server: one request at a time, kept alive while the server allows."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader: http.ResponseReader | None = None
        self.waiter: asyncio.Future[http.Response] | None = None
        self.usable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def exchange(self, request: bytes, head: bool) -> asyncio.Future[http.Response]:
        assert self.transport is not None and self.usable and (self.waiter is None or self.waiter.done())
        self.reader = http.ResponseReader(head_request=head)
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        if self.reader is None or self.waiter is None or self.waiter.done():
            self.close()  # nothing was asked: a server talking out of turn
            return
        try:
            response = self.reader.feed(data)
        except http.HttpError as exc:
            self.waiter.set_exception(exc)
            self.close()
            return
        if response is not None:
            self.waiter.set_result(response)
            if not response.keep_alive:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self.waiter is not None and not self.waiter.done():
            try:
                assert self.reader is not None
                self.waiter.set_result(self.reader.eof())
            except http.HttpError as error:
                self.waiter.set_exception(error)

    def close(self) -> None:
        self.usable = False
        if self.transport is not None:
            self.transport.close()


def _no_verify() -> ssl.SSLContext:
    """HTTPS without certificate checks (a lab's self-signed certificate), unless ``--ca`` gave a context."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _host_port(url: str, default: int) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or default, unquote(parts.path).lstrip("/")


class Transports:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # phone address -> (scheme, host, port) -> its kept-alive connection to that server
        self._http: dict[str, dict[tuple[str, str, int], _HttpConnection]] = {}
        self._insecure: ssl.SSLContext | None = None

    async def _tftp(self, link: PhoneLink, url: str, make: Callable[[str, int], TftpGet | TftpPut]) -> Result:
        host, port, name = _host_port(url, 69)
        if not host or not name:
            return Result(None, results.ERROR, f"not a TFTP file URL: {url}")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        local = (link.address, 0) if family == socket.AF_INET else (link.address6, 0) if link.address6 else None
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if local is not None:
                sock.bind(local)
        except OSError as exc:
            sock.close()
            return Result(None, results.ERROR, f"TFTP: cannot open a socket: {exc.strerror}")
        transfer = _TftpSocket(make(name, port), host, sock, done)
        try:
            return await done
        finally:
            transfer.close()

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

    async def _connection(self, link: PhoneLink, scheme: str, host: str, port: int) -> _HttpConnection:
        """The phone's kept-alive connection to that server, or a new one from its own address."""
        key = (scheme, host, port)
        conns = self._http.setdefault(link.address, {})
        conn = conns.get(key)
        if conn is not None and conn.usable:
            return conn
        if conn is not None:
            conn.close()
        v6 = ":" in host
        local = link.address6 if v6 else link.address
        context = None
        if scheme == "https":
            if self.limits.ssl_context is None and self._insecure is None:
                self._insecure = _no_verify()  # one for every phone: a context is costly to make
            context = self.limits.ssl_context or self._insecure
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            _HttpConnection, host, port, ssl=context, local_addr=(local, 0) if local else None,
            server_hostname=host if context is not None else None)
        conns[key] = conn
        return conn

    async def _http_request(self, link: PhoneLink, method: str, url: str, body: bytes | None = None) -> Result:
        parts = urlsplit(url)
        host, scheme = parts.hostname or "", parts.scheme.lower()
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            return Result(None, results.ERROR, f"not an HTTP URL: {url}")
        headers = [("User-Agent", link.user_agent), ("Accept", "*/*")]
        if parts.username is not None:
            headers.append(("Authorization", http.basic_auth(unquote(parts.username), unquote(parts.password or ""))))
        elif link.preset.get(USERNAME):
            headers.append(("Authorization", http.basic_auth(link.preset[USERNAME], link.preset.get(PASSWORD, ""))))
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        try:
            request = http.encode_request(method, target, parts.netloc.rpartition("@")[2], headers, body)
        except http.HttpError as exc:
            return Result(None, results.ERROR, f"HTTP: {exc}")
        if not host:
            return Result(None, results.ERROR, f"not an HTTP URL: {url}")
        last = ""
        for attempt in range(self.limits.http_tries):
            try:
                async with asyncio.timeout(self.limits.http_timeout):
                    conn = await self._connection(link, scheme, host, port)
                    response = await conn.exchange(request, method == "HEAD")
            except (TimeoutError, OSError, http.HttpError) as exc:
                last = f"HTTP: {type(exc).__name__}: {exc}"[:200] if str(exc) else f"HTTP: {type(exc).__name__}"
                stale = self._http.get(link.address, {}).pop((scheme, host, port), None)
                if stale is not None:
                    stale.close()
                continue
            detail = f"HTTP {response.status} {response.reason}".strip()
            if 200 <= response.status < 300:
                return Result(response.body if method == "GET" else b"", results.OK, "", attempt)
            kind = {404: results.NOT_FOUND, 401: results.AUTH, 403: results.REFUSED}.get(response.status,
                                                                                            results.ERROR)
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
                # Control and passive data connections from the phone's own address (aioftp passes local_addr on
                # to asyncio.open_connection): the server's per-client rules and the MAC-file rule see the phone.
                v6 = ":" in host
                local = link.address6 if v6 else link.address
                if local:
                    client = aioftp.Client(socket_timeout=self.limits.http_timeout, local_addr=(local, 0))
                else:
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

    def close_phone(self, address: str) -> None:
        for conn in self._http.pop(address, {}).values():
            conn.close()

    async def close(self) -> None:
        for conns in self._http.values():
            for conn in conns.values():
                conn.close()
        self._http.clear()
