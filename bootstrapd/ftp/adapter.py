"""The FTP service: aioftp in the daemon's event loop, serving the tree through the resolver.

- Control connections on every address of the provisioning interface (``ftp.port``), each socket bound to the
  device. Passive mode only (PASV, EPSV) on ``ftp.passive_ports``; a data connection from any address but the
  control connection's is closed at once (no data theft). PORT and EPRT are refused (no FTP bounce).
- Logins: anonymous (``anonymous``/``ftp``, any password) sees the tree minus the ``[[auth]]`` folders; a
  configured user sees its own folder as ``/``. A wrong password is answered after ``login_fail_delay``; passwords
  are checked off the loop, remembered once right.
- RETR goes through the resolver (MAC-file rule, symlinks, uploads served back), its file read off the loop when
  it is not in memory (:mod:`bootstrapd.provisioning.work`); STOR through the one upload store; everything else
  that writes gets 550. ``..`` and every path trick stop at the session's root (aioftp joins paths; the resolver
  refuses what is left).
- Limits: connections overall and per client address (421), idle time between commands, stall time of a data
  connection, total time of one transfer, length of a command line (500).
- Every RETR and STOR is an ``ftp.transfer`` event: client, user, command, file, outcome, bytes, duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any, cast

import aioftp

from bootstrapd.config import Settings
from bootstrapd.ftp.pathio import TreePathIO, tree_name
from bootstrapd.ftp.settings import FtpSettings
from bootstrapd.net.sockets import interface_binds, tcp_listener
from bootstrapd.provisioning.paths import Reason, Refused
from bootstrapd.provisioning.resolver import Opened, Resolver
from bootstrapd.provisioning.sendfile import SocketSender, socket_of
from bootstrapd.provisioning.work import FileWork, file_work
from bootstrapd.service import Context

log = logging.getLogger("bootstrapd.ftp")
logging.getLogger("aioftp").setLevel(logging.WARNING)  # it logs every command at INFO/DEBUG

ANONYMOUS = ("anonymous", "ftp")
BLOCK = 256 << 10
SHOWN = 256


class Users(aioftp.AbstractUserManager):
    """Anonymous and the ``[[auth]]`` users; an unknown login is asked for a password like a known one."""

    def __init__(self, service: FtpService) -> None:
        super().__init__()
        self.service = service

    async def get_user(self, login: str) -> tuple[aioftp.AbstractUserManager.GetUserResponse, aioftp.User | None,
                                                   str]:
        state = aioftp.AbstractUserManager.GetUserResponse.PASSWORD_REQUIRED
        permissions = [aioftp.Permission("/", readable=True, writable=True)]
        if login.lower() in ANONYMOUS:
            if not self.service.settings.anonymous:
                return aioftp.AbstractUserManager.GetUserResponse.ERROR, None, "anonymous login is off"
            return state, aioftp.User("anonymous", None, base_path=Path("/"), permissions=permissions), "any password"
        entry = self.service.resolver().access.auth.by_user.get(login)
        base = Path(entry.path) if entry is not None else Path("/nonexistent")
        return state, aioftp.User(login, None, base_path=base, permissions=permissions), "password required"

    async def authenticate(self, user: aioftp.User, password: str) -> bool:
        if user.login == "anonymous":
            return True
        auth = self.service.resolver().access.auth
        login = str(user.login)
        known = auth.known(login, password)
        if known is None:
            async with self.service.verifying:
                entry = await asyncio.get_running_loop().run_in_executor(None, auth.verify, login, password)
            known = entry is not None
        if not known:
            self.service.ctx.events.count("ftp.login_failed")
            await asyncio.sleep(self.service.settings.login_fail_delay)
        return known

    async def notify_logout(self, user: aioftp.User) -> None:
        return None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _reason_text(exc: Refused) -> str:
    return {Reason.NOT_FOUND: "no such file", Reason.AUTH_REQUIRED: "log in as this folder's user"}.get(
        exc.reason, f"refused ({exc.reason.value})")


class TreeServer(aioftp.Server):
    """aioftp's command loop and passive mode; paths, files and limits are ours."""

    def __init__(self, service: FtpService, settings: FtpSettings) -> None:
        service_ref = service

        class PathIO(TreePathIO):
            resolver = staticmethod(service_ref.resolver)

        first, last = settings.passive_ports
        super().__init__(Users(service), path_io_factory=PathIO, idle_timeout=settings.idle_timeout,
                         socket_timeout=settings.data_timeout, wait_future_timeout=settings.data_timeout,
                         data_ports=range(first, last + 1), block_size=BLOCK, welcome_message="bootstrapd")
        self.service = service
        self.per_client: Counter[str] = Counter()
        self.total = 0
        for command in ("mkd", "rmd", "dele", "rnfr", "rnto", "appe", "site"):
            self.commands_mapping[command] = self.read_only
        for command in ("port", "eprt"):
            self.commands_mapping[command] = self.no_active_mode
        self.commands_mapping["size"] = self.size
        self.commands_mapping["nlst"] = self.list
        self.commands_mapping["_too_long"] = self.too_long
        self.commands_mapping["_idle"] = self.idle
        self.connections = {}
        self._start_server_extra_arguments = {}
        self.listeners: list[asyncio.Server] = []

    async def listen(self, socks: list[socket.socket]) -> None:
        for sock in socks:
            self.listeners.append(await asyncio.start_server(self.dispatcher, sock=sock, limit=1 << 16))
        self.server_port = self.service.settings.port

    async def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        for connection in list(self.connections.values()):
            connection._dispatcher.cancel()
        tasks = [c._dispatcher for c in self.connections.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for listener in self.listeners:
            await listener.wait_closed()
        self.listeners.clear()

    # -- connections ------------------------------------------------------------------------------------------

    async def dispatcher(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("",)
        host = str(peer[0])
        settings = self.service.settings
        refusal = None
        if self.total >= settings.max_connections:
            refusal = "421 Too many connections, try again later\r\n"
        elif self.per_client[host] >= settings.max_connections_per_client:
            refusal = "421 Too many connections from your address\r\n"
        if refusal is not None:
            self.service.ctx.events.count("ftp.refused_connections")
            writer.write(refusal.encode())
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        self.total += 1
        self.per_client[host] += 1
        try:
            await super().dispatcher(reader, writer)
        finally:
            self.total -= 1
            self.per_client[host] -= 1
            if self.per_client[host] <= 0:
                del self.per_client[host]

    async def parse_command(self, stream: aioftp.StreamIO, censor_commands: tuple[str] = ("pass",)) -> tuple[str,
                                                                                                              str]:
        try:
            line = await stream.readline()
        except TimeoutError:
            self.service.ctx.events.count("ftp.idle_timeout")
            return "_idle", ""
        except (ValueError, asyncio.LimitOverrunError):
            return "_too_long", ""  # longer than the stream's 64 KiB buffer
        if not line:
            # The client closed the connection. aioftp's dispatcher may return (after a QUIT answered in the same
            # round) without looking at this task's exception: retrieve it here, or asyncio logs it as an error.
            task = asyncio.current_task()
            if task is not None:
                task.add_done_callback(_retrieve)
            raise ConnectionResetError
        if len(line) > self.service.settings.max_command_size:
            return "_too_long", ""
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            return "_too_long", "not UTF-8"
        cmd, _, rest = text.partition(" ")
        return cmd.lower(), rest

    async def _start_passive_server(self, connection: aioftp.Connection,
                                    handler_callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                               Awaitable[None]]) -> asyncio.Server:
        client = connection.client_host
        server = str(connection.server_host)
        if "%" not in server and ":" in server and ipaddress.IPv6Address(server).is_link_local:
            # A control connection on a link-local address: the data socket needs the scope to be bound there.
            connection.server_host = f"{server}%{self.service.ctx.interface.name}"

        async def only_the_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername") or ("",)
            if peer[0] != client:
                self.service.ctx.events.count("ftp.data_connection_stranger")
                writer.close()
                return
            await handler_callback(reader, writer)

        return await super()._start_passive_server(connection, only_the_client)

    # -- commands ---------------------------------------------------------------------------------------------

    async def read_only(self, connection: aioftp.Connection, rest: str) -> bool:
        connection.response("550", "read-only: only phone uploads (STOR) are accepted")
        return True

    async def no_active_mode(self, connection: aioftp.Connection, rest: str) -> bool:
        self.service.ctx.events.count("ftp.port_refused")
        connection.response("502", "active mode (PORT/EPRT) is not supported: use PASV or EPSV")
        return True

    async def idle(self, connection: aioftp.Connection, rest: str) -> bool:
        connection.response("421", "idle timeout, closing the control connection")
        return False

    async def too_long(self, connection: aioftp.Connection, rest: str) -> bool:
        self.service.ctx.events.count("ftp.bad_command")
        connection.response("500", "command line too long or not text")
        return True

    @staticmethod
    def _ready(connection: aioftp.Connection, passive: bool = False) -> bool:
        """aioftp's login (and PASV-first) conditions, answered 503 as aioftp does."""
        if not connection.future.logged.done():
            connection.response("503", "bad sequence of commands (not logged in)")
            return False
        if passive and not connection.future.passive_server.done():
            connection.response("503", "bad sequence of commands (use PASV or EPSV first)")
            return False
        return True

    @staticmethod
    async def _data_stream(connection: aioftp.Connection) -> aioftp.ThrottleStreamIO | None:
        try:
            await asyncio.wait_for(asyncio.shield(connection.future.data_connection), connection.wait_future_timeout)
        except TimeoutError:
            connection.response("425", "Can't open data connection")
            return None
        stream: aioftp.ThrottleStreamIO = connection.data_connection
        del connection.data_connection
        return stream

    def _request(self, connection: aioftp.Connection, rest: str) -> tuple[str, str, str | None]:
        """(tree name, client, user) of a path argument."""
        real, _ = self.get_paths(connection, rest)
        login = connection.user.login
        return tree_name(real), str(connection.client_host), None if login == "anonymous" else login

    async def size(self, connection: aioftp.Connection, rest: str) -> bool:
        if not self._ready(connection):
            return True
        name, client, user = self._request(connection, rest)
        started = asyncio.get_running_loop().time()
        try:
            opened = await self.service.work.open(name, client, user)
        except Refused as exc:
            # A refusal is an event whichever command met it (RETR's, STOR's, TFTP's, HTTP's): one stream to read.
            self.service.event("SIZE", client, user, name, exc.reason.value, 0, started)
            connection.response("550", _reason_text(exc))
            return True
        opened.close()
        connection.response("213", str(opened.size))
        return True

    async def retr(self, connection: aioftp.Connection, rest: str | PurePosixPath) -> bool:
        if not self._ready(connection, passive=True):
            return True
        name, client, user = self._request(connection, str(rest))
        started = asyncio.get_running_loop().time()
        try:
            opened = await self.service.work.open(name, client, user)
        except Refused as exc:
            self.service.event("RETR", client, user, name, exc.reason.value, 0, started)
            connection.response("550", _reason_text(exc))
            return True
        offset = min(connection.restart_offset, opened.size)

        async def retr_worker() -> None:
            outcome = "served"
            try:
                stream = await self._data_stream(connection)
                if stream is None:
                    outcome = "no_data_connection"
                    return
                async with asyncio.timeout(self.service.settings.transfer_timeout), stream:
                    await _send(self.service.work, stream, opened, offset, self.service.settings.data_timeout)
            except TimeoutError:
                outcome = "timeout"
            except OSError:
                outcome = "connection_lost"
            except asyncio.CancelledError:  # ABOR
                outcome = "aborted"
            finally:
                opened.close()
                self.service.event("RETR", client, user, name, outcome, opened.size - offset, started)
            if outcome == "served":
                connection.response("226", "data transfer done")
            elif outcome == "aborted":
                connection.response("426", "transfer aborted")
                connection.response("226", "abort successful")
            else:
                connection.response("426", f"transfer aborted ({outcome})")

        connection.extra_workers.add(asyncio.create_task(retr_worker()))
        connection.response("150", "data transfer started")
        return True

    async def stor(self, connection: aioftp.Connection, rest: str | PurePosixPath, mode: str = "wb") -> bool:
        if not self._ready(connection, passive=True):
            return True
        name, client, user = self._request(connection, str(rest))
        started = asyncio.get_running_loop().time()
        resolver = self.service.resolver()
        try:
            resolver.upload_name(name, client, user)
            if connection.restart_offset:
                raise Refused(Reason.NOT_ALLOWED, "uploads are stored whole (no REST)")
        except Refused as exc:
            self.service.event("STOR", client, user, name, exc.reason.value, 0, started)
            connection.response("550", _reason_text(exc))
            return True
        store = resolver.uploads
        assert store is not None
        limit = store.max_size
        if not store.begin():
            self.service.event("STOR", client, user, name, "busy_uploads", 0, started)
            connection.response("450", "too many uploads at once, try again")
            return True

        async def stor_worker() -> None:
            try:
                await receive()
            finally:
                store.end()

        async def receive() -> None:
            data = bytearray()
            code, info, outcome = "226", "stored", "stored"
            try:
                stream = await self._data_stream(connection)
                if stream is None:
                    return
                async with asyncio.timeout(self.service.settings.transfer_timeout), stream:
                    async for block in stream.iter_by_block(BLOCK):
                        data += block
                        if len(data) > limit:
                            raise Refused(Reason.TOO_LARGE, f"over {limit} bytes")
                await self.service.work.store_upload(name, bytes(data), client, user)
            except Refused as exc:
                code = "552" if exc.reason == Reason.TOO_LARGE else "550"
                info, outcome = _reason_text(exc), exc.reason.value
            except TimeoutError:
                code, info, outcome = "426", "transfer aborted (timeout)", "timeout"
            except OSError:
                code, info, outcome = "451", "cannot store the file", "store_failed"
            except asyncio.CancelledError:
                code, info, outcome = "426", "transfer aborted", "aborted"
            self.service.event("STOR", client, user, name, outcome, len(data), started)
            connection.response(code, info)

        connection.extra_workers.add(asyncio.create_task(stor_worker()))
        connection.response("150", "data transfer started")
        return True


async def _send(work: FileWork, stream: aioftp.ThrottleStreamIO, opened: Opened, offset: int,
                data_timeout: float) -> None:
    if opened.data is not None:
        view = memoryview(opened.data)
        for start in range(offset, len(view), BLOCK):
            await stream.write(bytes(view[start:start + BLOCK]))
        return
    assert opened.fd is not None
    transport = stream.writer.transport
    sock = socket_of(transport)
    if sock is None:
        await work.send(opened.fd, offset, opened.size - offset, stream.write)
        return
    # A plain data connection: sendfile from a worker, as HTTP does (bootstrapd/provisioning/sendfile.py); a client that
    # takes nothing for data_timeout ends the transfer ("timeout").
    sender = SocketSender(cast(asyncio.Transport, transport), sock, work.readers, data_timeout)
    try:
        await sender.send(opened.fd, offset, opened.size - offset)
    finally:
        sender.close()


class FtpService:
    name = "ftp"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.ftp
        self.verifying = asyncio.Semaphore(2)
        self.server: TreeServer | None = None
        self.work = file_work(ctx)  # the daemon's resolver and worker threads (on the running loop)

    def resolver(self) -> Resolver:
        return self.work.resolver()

    async def start(self) -> None:
        iface = self.ctx.interface
        socks: list[socket.socket] = []
        errors: list[OSError] = []
        for family, address, scope in interface_binds(iface):  # as HTTP and TFTP: link-local IPv6 too
            try:
                socks.append(tcp_listener(family, iface.name, address, self.settings.port, scope=scope))
            except OSError as exc:
                errors.append(exc)
                log.warning("ftp: cannot listen on [%s]:%d: %s", address, self.settings.port, exc.strerror or exc)
        if not socks:
            raise errors[0] if errors else OSError(errno.EADDRNOTAVAIL, f"{iface.name} has no address for FTP")
        self.server = TreeServer(self, self.settings)
        await self.server.listen(socks)

    def reload(self, settings: Settings) -> None:
        new = settings.ftp
        if (new.port, new.passive_ports) != (self.settings.port, self.settings.passive_ports):
            log.warning("ftp: port and passive_ports take effect at the next restart")
        self.settings = new
        if self.server is not None:
            self.server.idle_timeout = new.idle_timeout
            self.server.socket_timeout = new.data_timeout
            self.server.wait_future_timeout = new.data_timeout

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    def event(self, command: str, client: str, user: str | None, name: str, outcome: str, size: int,
              started: float) -> None:
        fields: dict[str, Any] = {"client": client, "user": user, "command": command,
                                  "file": name if len(name) <= SHOWN else name[:SHOWN] + "...", "outcome": outcome,
                                  "bytes": size, "duration": round(asyncio.get_running_loop().time() - started, 6)}
        self.ctx.events.emit("ftp.transfer", **fields)
