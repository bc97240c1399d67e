"""TFTP benchmark (bootstrapd vs tftpd-hpa vs dnsmasq) and the small TFTP clients the lab tests use.

``python -m tests.bench.tftp`` builds a lab (network namespaces, nothing on the real network), and for each server:

- a boot storm: N clients each fetching three small files (400 B, 4 KB, 20 KB) at once, from our asyncio client
  running in the phone namespace; every byte checked;
- one 50 MB file with atftp, lock-step (blksize 1428) and windowed (windowsize 64, where the server supports it);

then prints throughputs, ratios and bootstrapd's peak RSS (VmHWM). Sub-commands ``storm`` and ``probe`` are the
clients run inside the phone namespace by this benchmark and by ``tests/lab/test_tftp.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

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
        self.transport.sendto(self.last, self.peer or self.server)
        self._arm()

    def _send(self, data: bytes) -> None:
        self.last = data
        assert self.transport
        self.transport.sendto(data, self.peer or self.server)

    def _finish(self, data: bytes | None, error: str = "") -> None:
        if not self.done.done():
            self.done.set_result((data, error))
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


async def fetch(host: str, port: int, name: str, options: dict[str, str] | None = None,
                timeout: float = 1.0) -> tuple[bytes | None, str]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    done: asyncio.Future[Any] = loop.create_future()
    server = (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)
    await loop.create_datagram_endpoint(lambda: _Fetch(server, name, options or {}, done, timeout), family=family)
    result: tuple[bytes | None, str] = await done
    return result


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def storm(host: str, port: int, files: dict[str, str], clients: int, options: dict[str, str],
                limit_s: float) -> dict[str, Any]:
    """``clients`` clients each fetching every file at once; counts the transfers whose bytes match their digest."""
    _raise_nofile()
    start = time.monotonic()
    tasks = [fetch(host, port, name, options) for _ in range(clients) for name in files]
    results = await asyncio.wait_for(asyncio.gather(*tasks), limit_s)
    elapsed = time.monotonic() - start
    ok = failed = total = 0
    errors: dict[str, int] = {}
    for (data, error), name in zip(results, [n for _ in range(clients) for n in files], strict=True):
        if data is not None and hashlib.sha256(data).hexdigest() == files[name]:
            ok += 1
            total += len(data)
        else:
            failed += 1
            key = error or "bad content"
            errors[key] = errors.get(key, 0) + 1
    return {"ok": ok, "failed": failed, "bytes": total, "seconds": elapsed, "errors": errors}


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


# -- the benchmark ----------------------------------------------------------------------------------------------

SMALL = {"s400.cfg": 400, "s4k.cfg": 4096, "s20k.cfg": 20480}
BIG = 50 * 1000 * 1000


def make_files(root: Path, seed: int = 77) -> dict[str, str]:
    rng = random.Random(seed)
    digests = {}
    for name, size in SMALL.items():
        data = rng.randbytes(size)
        (root / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    big = rng.randbytes(BIG)
    (root / "big.bin").write_bytes(big)
    digests["big.bin"] = hashlib.sha256(big).hexdigest()
    return digests


def _atftp(phone: Any, host: str, name: str, dest: Path, options: dict[str, str]) -> float:
    argv = ["atftp", "--get", "-r", name, "-l", str(dest)]
    for key, value in options.items():
        argv += ["--option", f"{key} {value}"]
    start = time.monotonic()
    result = phone.run([*argv, host], timeout=300)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"atftp failed: {result.stderr}")
    return elapsed


class _Server:
    """One server under test, started fresh for each phase (a storm's leftovers must not slow the next phase)."""

    def __init__(self, kind: str, ap: Any, work: Path) -> None:
        from tests.lab.appliance import BASE_CONFIG, Appliance

        root = work / "root"
        self.app: Any = None
        self.log_tail = ""
        if kind in ("bootstrapd", "bootstrapd-nojournal"):
            config = BASE_CONFIG.format(root=root, state=work / "state") + (
                "\n[tftp]\nenabled = true\nmax_transfers = 5000\nmax_per_client = 5000\nrate_limit = 0\n"
            ) + ("\n[journal]\nenabled = false\n" if kind == "bootstrapd-nojournal" else "")
            self.app = Appliance(ap, work, config)
            self.app.start()
            self.proc = self.app.proc
        elif kind == "tftpd-hpa":
            self.proc = ap.popen(["in.tftpd", "-L", "-s", str(root)])
            ap.wait_udp_port(69)
        else:
            # dnsmasq caps --tftp-max by its descriptor limit (1024 here): raise it, as bootstrapd does for itself.
            self.proc = ap.popen(["prlimit", "--nofile=16384", "dnsmasq", "-d", "--port=0", "--enable-tftp",
                                  f"--tftp-root={root}", "--interface=eth1", "--tftp-max=5000",
                                  "--conf-file=/dev/null", f"--pid-file={work / 'dnsmasq.pid'}"])
            ap.wait_udp_port(69)

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
            return
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            # tftpd-hpa forks a child per transfer; children still retransmitting after a storm keep the stderr pipe
            # open after the parent is gone. The anchor runs in a session of its own: end that whole group.
            os.killpg(self.proc.pid, signal.SIGKILL)
            _, err = self.proc.communicate(timeout=10)
        self.log_tail = err.decode(errors="replace")[-600:]


def _run_server(kind: str, ap: Any, phone: Any, work: Path, digests: dict[str, str], clients: int) -> dict[str, Any]:
    result: dict[str, Any] = {"server": kind}
    server = _Server(kind, ap, work)
    try:
        small = {n: digests[n] for n in SMALL}
        out = phone.run([sys.executable, "-m", "tests.bench.tftp", "storm", "--host", "10.77.0.1", "--clients",
                         str(clients), "--files", json.dumps(small), "--options", json.dumps({"blksize": "1428"}),
                         "--limit", "120"], timeout=300)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        result["storm"] = json.loads(out.stdout)
        if kind == "bootstrapd":
            status = Path(f"/proc/{server.proc.pid}/status").read_text()
            result["vmhwm_kb"] = int(next(line.split()[1] for line in status.splitlines()
                                          if line.startswith("VmHWM:")))
    finally:
        server.stop()
        result["storm_log"] = server.log_tail
    dest = work / "big.out"
    for label, options in (("lockstep", {"blksize": "1428"}), ("windowed", {"blksize": "1428", "windowsize": "64"})):
        server = _Server(kind, ap, work)
        try:
            seconds = _atftp(phone, "10.77.0.1", "big.bin", dest, options)
            digest = hashlib.sha256(dest.read_bytes()).hexdigest()
            result[label] = {"seconds": seconds, "ok": digest == digests["big.bin"]}
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result[label] = {"seconds": float("nan"), "ok": False, "error": str(exc)[-300:]}
        finally:
            server.stop()
        dest.unlink(missing_ok=True)
    return result


def bench(clients: int, servers: list[str]) -> list[dict[str, Any]]:
    import tempfile

    from tests.lab.netns import lab

    if not shutil.which("atftp"):
        raise SystemExit("atftp is needed (make peers)")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tftp-") as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        (work / "root").mkdir()
        digests = make_files(work / "root")
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.10/24")
        for kind in servers:
            print(f"-- {kind}", file=sys.stderr, flush=True)
            results.append(_run_server(kind, ap, phone, work, digests, clients))
    return results


def journal_ab(results: list[dict[str, Any]]) -> list[str]:
    """With and without the journal (``--servers bootstrapd,bootstrapd-nojournal,…`` interleaved): mean ratios."""
    on = [r for r in results if r["server"] == "bootstrapd"]
    off = [r for r in results if r["server"] == "bootstrapd-nojournal"]
    if not on or not off:
        return []

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return sum(float(r[key]) for r in rows) / len(rows)

    return ["", f"journal on / off ({len(on)} and {len(off)} interleaved runs): storm files/s "
                f"x{mean(on, 'files_per_s') / mean(off, 'files_per_s'):.3f}, lock-step "
                f"x{mean(on, 'lock_mb_s') / mean(off, 'lock_mb_s'):.3f}, windowed "
                f"x{mean(on, 'win_mb_s') / mean(off, 'win_mb_s'):.3f}"]


def report(results: list[dict[str, Any]], clients: int) -> str:
    lines = [f"TFTP boot storm: {clients} clients x 3 files (400 B, 4 KB, 20 KB) at once, blksize 1428; "
             f"then 50 MB with atftp (blksize 1428), lock-step and windowsize 64", ""]
    lines.append(f"{'server':<12} {'storm files/s':>14} {'storm MB/s':>11} {'failed':>7} {'50MB lock-step':>16} "
                 f"{'50MB window 64':>16}")
    base = results[0]
    for r in results:
        storm_ = r["storm"]
        files_s = storm_["ok"] / storm_["seconds"]
        lock = BIG / r["lockstep"]["seconds"] / 1e6
        win = BIG / r["windowed"]["seconds"] / 1e6
        r["files_per_s"], r["lock_mb_s"], r["win_mb_s"] = files_s, lock, win
        lines.append(f"{r['server']:<12} {files_s:>14.0f} {storm_['bytes'] / storm_['seconds'] / 1e6:>11.2f} "
                     f"{storm_['failed']:>7} {lock:>11.1f} MB/s {win:>11.1f} MB/s")
    lines.append("")
    for r in results[1:]:
        lines.append(f"bootstrapd / {r['server']}: storm x{base['files_per_s'] / r['files_per_s']:.2f}, "
                     f"lock-step x{base['lock_mb_s'] / r['lock_mb_s']:.2f}, "
                     f"windowed x{base['win_mb_s'] / r['win_mb_s']:.2f}")
    lines.extend(journal_ab(results))
    if "vmhwm_kb" in base:
        lines.append(f"bootstrapd peak RSS during the storm (VmHWM): {base['vmhwm_kb'] / 1024:.1f} MiB")
    if any(not r[k]["ok"] for r in results for k in ("lockstep", "windowed")):
        lines.append("WARNING: a 50 MB download did not match")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tftp")
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("storm")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, default=69)
    s.add_argument("--clients", type=int, default=1000)
    s.add_argument("--files", required=True, help="JSON {name: sha256}")
    s.add_argument("--options", default="{}")
    s.add_argument("--limit", type=float, default=120.0)
    p = sub.add_parser("probe")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=69)
    p.add_argument("--cases", required=True, help="JSON list of {name, hex, wait}")
    st = sub.add_parser("stranger")
    st.add_argument("--host", required=True)
    st.add_argument("--port", type=int, default=69)
    st.add_argument("--file", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--clients", type=int, default=1000)
    b.add_argument("--servers", default="bootstrapd,tftpd-hpa,dnsmasq",
                   help="in order; bootstrapd-nojournal is bootstrapd with [journal] off: "
                        "bootstrapd,bootstrapd-nojournal,bootstrapd,bootstrapd-nojournal measures the journal's cost")
    args = parser.parse_args()
    if args.command == "storm":
        result = asyncio.run(storm(args.host, args.port, json.loads(args.files), args.clients,
                                   json.loads(args.options), args.limit))
        print(json.dumps(result))
    elif args.command == "probe":
        print(json.dumps(probe(args.host, args.port, json.loads(args.cases))))
    elif args.command == "stranger":
        print(json.dumps(stranger_error(args.host, args.port, args.file)))
    else:
        clients = getattr(args, "clients", 1000)
        if os.geteuid() != 0:
            raise SystemExit("the benchmark needs root (network namespaces)")
        results = bench(clients, getattr(args, "servers", "bootstrapd,tftpd-hpa,dnsmasq").split(","))
        print(json.dumps(results), file=sys.stderr)
        print(report(results, clients))


if __name__ == "__main__":
    main()
