"""The HTTP(S) service: aiohttp's low-level server on the provisioning interface's addresses only.

- One listening socket per address of the interface (IPv4, IPv6 global and link-local), each bound to the device,
  on ``http.port`` and, with ``tls_cert``/``tls_key``, on ``tls_port`` with TLS 1.2 or newer; both at once.
- Every request: the limits (:mod:`bootstrapd.http.limits`, and a per-client request rate: 429), then a registered
  route (:mod:`bootstrapd.http.routes`: status page, API, metrics) or the tree (:mod:`bootstrapd.http.files`), then
  one ``http.request`` event: client, method, path, status, bytes, duration, user, and the phone's vendor, model,
  version and MAC when its User-Agent says them (:mod:`bootstrapd.http.event`).
- On plain HTTP the service accepts connections itself (:mod:`bootstrapd.http.accept`): the common request (GET/HEAD
  of a small file in memory, not keep-alive) is answered at once by the fast path (:mod:`bootstrapd.http.fast`),
  without a transport; other connections get one with the fast path's protocol, which hands what it does not
  answer to aiohttp with what it read. HTTPS connections are aiohttp's from the start.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl

from aiohttp import web

from bootstrapd.config import Settings
from bootstrapd.credentials import CredentialError
from bootstrapd.http.accept import Acceptor
from bootstrapd.http.event import emit_request
from bootstrapd.http.fast import SERVER, FastServer
from bootstrapd.http.files import READ_METHODS, WRITE_METHODS, FileHandler, Outcome
from bootstrapd.http.limits import Admission, GuardedHandler, GuardedServer, client_key, peer_host
from bootstrapd.http.paths import BadPath, decode_path
from bootstrapd.http.settings import HttpSettings
from bootstrapd.leases.ratelimit import RateLimiter
from bootstrapd.net.sockets import interface_binds, tcp_listener
from bootstrapd.provisioning.work import file_work
from bootstrapd.service import Context, StartupError

log = logging.getLogger("bootstrapd.http")


def tls_context(settings: HttpSettings, context: ssl.SSLContext | None = None) -> ssl.SSLContext:
    """TLS 1.2 or newer with the configured chain and key (the key may be a systemd credential); raises
    CredentialError, OSError or ssl.SSLError."""
    assert settings.tls_key is not None
    if context is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(settings.tls_cert, settings.tls_key.resolve())
    return context


class HttpService:
    name = "http"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events = ctx.events
        self.settings = ctx.settings.http
        self.admission = Admission(ctx.events, self.settings)
        self.rate = RateLimiter(self.settings.rate_limit, self.settings.rate_burst)
        # The daemon's resolver and worker threads (on the running loop).
        self.files = FileHandler(file_work(ctx), self.settings.send_timeout,
                                 lambda: ctx.events.count("http.send_timeout"))
        self.servers: list[asyncio.Server] = []
        self.web: GuardedServer | None = None
        self.fast: FastServer | None = None
        self.acceptor: Acceptor | None = None
        self.tls: ssl.SSLContext | None = None

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        if settings.tls:
            try:
                self.tls = tls_context(settings)
            except CredentialError as exc:
                raise StartupError(str(exc)) from None
            except (OSError, ssl.SSLError) as exc:
                raise StartupError(f"http.tls_cert/http.tls_key: cannot load: {exc}") from None
        self.web = GuardedServer(self.handle, self.admission, settings.head_timeout,
                                 keepalive_timeout=settings.keepalive_timeout, max_line_size=settings.max_header_size,
                                 max_field_size=settings.max_header_size, access_log=None, handler_cancellation=True,
                                 tcp_keepalive=False)  # idle connections end by our own timers
        self.fast = FastServer(self, self.web)  # plain HTTP: the common request without aiohttp (fast.py)
        self.acceptor = Acceptor(self.fast)
        iface = self.ctx.interface
        binds = interface_binds(iface)
        if not binds:
            raise OSError(errno.EADDRNOTAVAIL, f"interface {iface.name} has no address to serve HTTP on")
        ports: list[tuple[int, ssl.SSLContext | None]] = []
        if settings.port:
            ports.append((settings.port, None))
        if self.tls is not None:
            ports.append((settings.tls_port, self.tls))
        errors: list[OSError] = []
        for port, context in ports:
            for family, address, scope in binds:
                try:
                    sock = tcp_listener(family, iface.name, address, port, scope=scope)
                except OSError as exc:
                    errors.append(exc)
                    log.warning("http: cannot listen on [%s]:%d: %s", address, port, exc.strerror or exc)
                    continue
                if context is None:
                    self.acceptor.listen(sock)  # plain HTTP: accepted and mostly answered without a transport
                    continue
                server = await loop.create_server(self.web, sock=sock, ssl=context, backlog=1024,
                                                  ssl_handshake_timeout=settings.head_timeout)
                self.servers.append(server)
        if not self.servers and not self.acceptor.listeners:
            raise errors[0]

    def reload(self, settings: Settings) -> None:
        new = settings.http
        if (new.port, new.tls_port, new.tls) != (self.settings.port, self.settings.tls_port, self.settings.tls):
            log.warning("http: ports and turning TLS on or off take effect at the next restart")
        if self.tls is not None and new.tls:
            try:
                tls_context(new, self.tls)  # new connections get the new certificate
            except (CredentialError, OSError, ssl.SSLError) as exc:
                log.error("http: reload keeps the previous certificate: %s", exc)
        self.settings = new
        self.admission.settings = new
        self.rate = RateLimiter(new.rate_limit, new.rate_burst)
        self.files.send_timeout = new.send_timeout
        if self.web is not None:
            self.web.head_timeout = new.head_timeout

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        if self.acceptor is not None:
            self.acceptor.close()
        if self.fast is not None:
            self.fast.close()
        if self.web is not None:
            await self.web.shutdown(2.0)
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()

    # -- requests -----------------------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        protocol = request.protocol
        if isinstance(protocol, GuardedHandler):
            protocol.request_started()
        client = peer_host(request.transport)
        outcome = Outcome()
        response: web.StreamResponse | None = None
        try:
            response = await self._dispatch(request, client, outcome)
            response.headers["Server"] = SERVER
            return response
        finally:
            if isinstance(protocol, GuardedHandler):
                protocol.request_finished()
            self._event(request, client, outcome, response, loop.time() - started)

    async def _dispatch(self, request: web.BaseRequest, client: str, outcome: Outcome) -> web.StreamResponse:
        settings = self.settings
        if settings.rate_limit > 0 and not self.rate.allow(client_key(client), asyncio.get_running_loop().time()):
            outcome.outcome = "rate_limited"
            return web.Response(status=429, headers={"Retry-After": "1"}, text="rate_limited\n")
        try:
            path = decode_path(request.raw_path)
        except BadPath as exc:
            outcome.outcome = "bad_path"
            return web.Response(status=400, text=f"bad_path: {exc}\n")
        route = self.ctx.http_routes.match(path)
        if route is not None:
            if request.method not in route.methods:
                outcome.outcome = "method_not_allowed"
                return web.Response(status=405, headers={"Allow": ", ".join(sorted(route.methods))})
            outcome.outcome = "route"
            return await route.handler(request)
        if request.method not in READ_METHODS + WRITE_METHODS:
            outcome.outcome = "method_not_allowed"
            resolver = self.files.work.resolver()
            allow = READ_METHODS + (WRITE_METHODS if resolver.uploads is not None and resolver.uploads.enabled else ())
            response = web.Response(status=405, headers={"Allow": ", ".join(allow)})
            response.force_close()
            return response
        name = path.lstrip("/")
        if not name:
            outcome.outcome = "not_regular"  # the root folder: there is no index to send
            return web.Response(status=404, text="not_regular\n")
        if request.method in READ_METHODS:
            return await self.files.get(request, name, client, outcome)
        return await self.files.put(request, name, client, outcome, settings.body_timeout)

    def _event(self, request: web.BaseRequest, client: str, outcome: Outcome, response: web.StreamResponse | None,
               duration: float) -> None:
        emit_request(self.events, client, request.method, request.raw_path,
                     response.status if response is not None else 500, outcome, duration, request.secure,
                     request.headers.get("User-Agent"))
