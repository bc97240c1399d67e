"""The TFTP clients of the lab tests and the benchmark, run inside a phone namespace (``python -m tests.bench.tftp``).

- :func:`storm`: many clients at once, each fetching a set of files at once (asyncio, lock-step or windowed), each
  optionally from its own source address, with a phone's retransmission timer; every byte checked.
- :func:`firmware`: many real clients (curl, lock-step) at once, each from its own source address, each downloading
  one large file piped into sha256sum; time to the last byte.
- :func:`probe` and :func:`stranger_error`: raw datagrams for the hostile-input lab tests.

A phone's timer: Yealink does not document its TFTP retransmission timer; the clients here use what tftp-hpa's
client, atftp and U-Boot do: a first retransmission after 5 s, 5 tries in all (``PHONE_TIMEOUT``, ``PHONE_TRIES``).
curl gets the same from ``--connect-timeout 25`` (its TFTP timer is the connect timeout over 5 tries, 5 s each).
"""

from __future__ import annotations

import asyncio
import hashlib
import resource
import socket
import struct
import subprocess
import time
from typing import Any, NamedTuple, cast

PHONE_TIMEOUT = 5.0
PHONE_TRIES = 5

RRQ, DATA, ACK, ERROR, OACK = 1, 3, 4, 5, 6


def rrq(name: str | bytes, options: dict[str, str] | None = None, mode: str = "octet") -> bytes:
    raw = name if isinstance(name, bytes) else name.encode()
    out = struct.pack("!H", RRQ) + raw + b"\0" + mode.encode() + b"\0"
    for key, value in (options or {}).items():
        out += key.encode() + b"\0" + value.encode() + b"\0"
    return out


def _parse_options(body: bytes) -> dict[str, str]:
    parts = body.rstrip(b"\0").split(b"\0")
    return {parts[i].decode().lower(): parts[i + 1].decode() for i in range(0, len(parts) - 1, 2)}


class _Fetch(asyncio.DatagramProtocol):
    """One RRQ: lock-step or windowed (RFC 7440 receiver), retries on silence, result into a future."""

    def __init__(self, server: tuple[Any, ...], name: str, options: dict[str, str], done: asyncio.Future[Any],
                 timeout: float = 1.0, tries: int = 6) -> None:
        self.retransmits = 0
        self.server = server
        self.name = name
        self.options = options
        self.done = done
        self.timeout = timeout
        self.tries = tries
        self.peer: tuple[Any, ...] | None = None
        self.blksize = 512
        self.window = 1
        self.expected = 1
        self.in_window = 0
        self.chunks: list[bytes] = []
        self.last: bytes = b""
        self.transport: asyncio.DatagramTransport | None = None
        self.heard = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector datagram transport does not subclass DatagramTransport, hence the cast.
        self.transport = cast(asyncio.DatagramTransport, transport)
        transport = self.transport
        self.last = rrq(self.name, self.options)
        transport.sendto(self.last, self.server)
        self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self.heard = loop.time()
        if self.timer is None:
            self.timer = loop.call_later(self.timeout, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.done.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self.heard < self.timeout:
            self.timer = loop.call_later(self.timeout - (loop.time() - self.heard), self._tick)
            return
        self.tries -= 1
        if self.tries <= 0:
            self._finish(None, "timeout")
            return
        assert self.transport
        self.retransmits += 1
        self.transport.sendto(self.last, self.peer or self.server)
        self._arm()

    def _send(self, data: bytes) -> None:
        self.last = data
        assert self.transport
        self.transport.sendto(data, self.peer or self.server)

    def _finish(self, data: bytes | None, error: str = "") -> None:
        if not self.done.done():
            self.done.set_result(Fetched(data, error, self.retransmits, time.monotonic()))
        if self.timer:
            self.timer.cancel()
        if self.transport:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.peer is None:
            self.peer = addr
        elif addr[:2] != self.peer[:2]:
            return
        if len(data) < 4:
            return
        opcode, number = struct.unpack_from("!HH", data)
        self._arm()
        if opcode == OACK:
            options = _parse_options(data[2:])
            self.blksize = int(options.get("blksize", "512"))
            self.window = int(options.get("windowsize", "1"))
            self._send(struct.pack("!HH", ACK, 0))
        elif opcode == DATA:
            if number == self.expected & 0xFFFF:
                payload = data[4:]
                self.chunks.append(payload)
                self.expected += 1
                self.in_window += 1
                if len(payload) < self.blksize:
                    self._send(struct.pack("!HH", ACK, number))
                    self._finish(b"".join(self.chunks))
                elif self.in_window >= self.window:
                    self.in_window = 0
                    self._send(struct.pack("!HH", ACK, number))
            elif number != (self.expected - 1) & 0xFFFF:
                # A gap: acknowledge the last block we have, the server goes on from there (RFC 7440).
                self.in_window = 0
                self._send(struct.pack("!HH", ACK, (self.expected - 1) & 0xFFFF))
        elif opcode == ERROR:
            self._finish(None, f"error {number}: {data[4:].rstrip(bytes(1)).decode(errors='replace')}")


class Fetched(NamedTuple):
    """What one fetch got."""

    data: bytes | None  # None: failed
    error: str
    retransmits: int  # how often this client had to wait out its retransmission timeout
    ended: float  # time.monotonic() when it ended


async def fetch(host: str, port: int, name: str, options: dict[str, str] | None = None, timeout: float = 1.0,
                tries: int = 6, source: str | None = None) -> Fetched:
    """Download ``name``; ``source``: the address to send from (one per simulated phone)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    done: asyncio.Future[Fetched] = loop.create_future()
    server = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
    await loop.create_datagram_endpoint(lambda: _Fetch(server, name, options or {}, done, timeout, tries),
                                        family=family, local_addr=(source, 0) if source else None)
    return await done


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def storm(host: str, port: int, files: dict[str, str], clients: int, options: dict[str, str],
                limit_s: float, timeout: float = 1.0, tries: int = 6,
                sources: list[str] | None = None) -> dict[str, Any]:
    """``clients`` clients each fetching every file at once; counts the transfers whose bytes match their digest.

    ``sources``: one source address per client (else all share the namespace's address). Reports the time to the
    last file served, the client's retransmissions (how many transfers had to wait a retransmission timeout) and the
    failures by reason.
    """
    _raise_nofile()
    start = time.monotonic()
    names = [n for _ in range(clients) for n in files]
    tasks = [fetch(host, port, name, options, timeout, tries, sources[i] if sources else None)
             for i in range(clients) for name in files]
    results = await asyncio.wait_for(asyncio.gather(*tasks), limit_s)
    elapsed = time.monotonic() - start
    ok = failed = total = retransmits = retransmitted = 0
    last_ok = 0.0
    errors: dict[str, int] = {}
    for (data, error, resent, ended), name in zip(results, names, strict=True):
        retransmits += resent
        retransmitted += resent > 0
        if data is not None and hashlib.sha256(data).hexdigest() == files[name]:
            ok += 1
            total += len(data)
            last_ok = max(last_ok, ended - start)
        else:
            failed += 1
            key = error or "bad content"
            errors[key] = errors.get(key, 0) + 1
    return {"ok": ok, "failed": failed, "bytes": total, "seconds": elapsed, "last_ok_s": last_ok, "errors": errors,
            "retransmits": retransmits, "transfers_retransmitted": retransmitted}


def firmware(host: str, name: str, digest: str, sources: list[str], blksize: int, limit_s: float) -> dict[str, Any]:
    """One curl per source address, all at once, each piping ``name`` into sha256sum: lock-step, phone timers."""
    url = f"tftp://{host}/{name}"
    start = time.monotonic()
    procs = []
    for source in sources:
        # pipefail: a curl that fails must not be hidden behind sha256sum's success.
        command = (f"curl -sS --connect-timeout {int(PHONE_TIMEOUT * PHONE_TRIES)} --interface {source} "
                   f"--tftp-blksize {blksize} {url} | sha256sum")
        procs.append(subprocess.Popen(["bash", "-o", "pipefail", "-c", command], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, stdin=subprocess.DEVNULL))
    ok = failed = 0
    last_ok = 0.0
    errors: dict[str, int] = {}
    pending = dict(enumerate(procs))
    ended: dict[int, float] = {}
    deadline = start + limit_s
    while pending and time.monotonic() < deadline:
        for i, proc in list(pending.items()):
            if proc.poll() is not None:
                ended[i] = time.monotonic() - start
                del pending[i]
        time.sleep(0.01)
    for proc in pending.values():
        proc.kill()
    for i, proc in enumerate(procs):
        out, err = proc.communicate()
        got = out.decode().split()[0] if out.split() else ""
        if i in ended and proc.returncode == 0 and got == digest:
            ok += 1
            last_ok = max(last_ok, ended[i])
        else:
            failed += 1
            reason = "killed at the time limit" if i not in ended else (
                err.decode(errors="replace").strip().splitlines()[-1][:120] if err.strip() else
                "bad content" if proc.returncode == 0 else f"exit {proc.returncode}")
            errors[reason] = errors.get(reason, 0) + 1
    return {"ok": ok, "failed": failed, "seconds": time.monotonic() - start, "last_ok_s": last_ok, "errors": errors}


def probe(host: str, port: int, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send raw datagrams; report what came back (opcode, error code/text, from which port) within ``wait``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out = []
    for case in cases:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(float(case.get("wait", 0.5)))
            sock.sendto(bytes.fromhex(case["hex"]), (host, port))
            replies: list[dict[str, Any]] = []
            try:
                while len(replies) < 4:
                    data, addr = sock.recvfrom(70000)
                    replies.append(_describe(data, addr))
                    if case.get("first_only"):
                        break
            except TimeoutError:
                pass
            out.append({"name": case.get("name", ""), "replies": replies})
    return out


def _describe(data: bytes, addr: tuple[Any, ...]) -> dict[str, Any]:
    reply: dict[str, Any] = {"port": addr[1], "len": len(data)}
    if len(data) >= 4:
        opcode, number = struct.unpack_from("!HH", data)
        reply.update(opcode=opcode, number=number)
        if opcode == ERROR:
            reply["text"] = data[4:].rstrip(b"\0").decode(errors="replace")
    return reply


def client_error(host: str, port: int, name: str, length: int, wait: float = 2.5) -> dict[str, Any]:
    """Start a lock-step download, take DATA 1, then answer it with an ERROR carrying a ``length``-byte message: the
    transfer must end there. Returns DATA 1's length and whatever the transfer's port sent within ``wait`` seconds
    after the ERROR (a transfer still running retransmits DATA 1 after its 1 s timeout)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(rrq(name), (host, port))
        data, peer = sock.recvfrom(70000)
        first = _describe(data, peer)
        sock.sendto(struct.pack("!HH", ERROR, 0) + b"x" * length + b"\0", peer)
        after = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                reply, addr = sock.recvfrom(70000)
            except TimeoutError:
                break
            after.append(_describe(reply, addr))
        return {"first": first, "after": after}


def stranger_error(host: str, port: int, name: str, blksize: int = 512) -> dict[str, Any]:
    """Start a lock-step transfer, let a second socket (a stranger) send ERROR and a bogus ACK to the transfer's
    port, acknowledge a block never sent, then finish the transfer: returns what the stranger got and the digest of
    what was downloaded (None if anything unexpected arrived)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock, socket.socket(family, socket.SOCK_DGRAM) as other:
        sock.settimeout(3)
        other.settimeout(1)
        sock.sendto(rrq(name, {"blksize": str(blksize)}), (host, port))
        data, peer = sock.recvfrom(70000)
        if data[1] == OACK:
            sock.sendto(struct.pack("!HH", ACK, 0), peer)
            data, peer = sock.recvfrom(70000)
        other.sendto(struct.pack("!HH", ERROR, 0) + b"stranger\0", peer)
        other.sendto(struct.pack("!HH", ACK, 1), peer)
        stranger = []
        try:
            reply, addr = other.recvfrom(1000)
            stranger.append(_describe(reply, addr))
        except TimeoutError:
            pass
        # The client itself acknowledges a block never sent: ignored, no resend, the transfer goes on.
        sock.sendto(struct.pack("!HH", ACK, 500), peer)
        chunks = [data[4:]]
        block = 1
        while len(data) - 4 == blksize:
            sock.sendto(struct.pack("!HH", ACK, block), peer)
            data, addr = sock.recvfrom(70000)
            number = struct.unpack_from("!H", data, 2)[0]
            if data[1] != DATA or number != (block + 1) & 0xFFFF:
                return {"stranger": stranger, "sha256": None, "unexpected": _describe(data, addr)}
            block += 1
            chunks.append(data[4:])
        sock.sendto(struct.pack("!HH", ACK, block & 0xFFFF), peer)
        return {"stranger": stranger, "sha256": hashlib.sha256(b"".join(chunks)).hexdigest()}


