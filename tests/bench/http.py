"""HTTP and FTP benchmark: bootstrapd (uvloop, its default; the standard loop) vs nginx (1 worker, sendfile) and vsftpd.

``python -m tests.bench.http`` (``make bench-http``) builds a lab (network namespaces, nothing on the real network)
with the same tree for every server, and for each one, freshly started:

- HTTP boot storm: wrk with 1,000 connections, ``Connection: close`` (a new connection per file, as phones do),
  three small files (400 B, 4 KB, 20 KB) in rotation, for ``--seconds``; requests/s, failures (socket errors and
  non-2xx answers), p99 latency;
- a 50 MB download with curl, ``--downloads`` times (7), the median throughput;
- FTP: sessions of connect, anonymous login, passive RETR of the 4 KB file, QUIT (``--ftp-sessions``, 50 at a time,
  aioftp's client), then the 50 MB file with curl;
- peak RSS (VmHWM; for nginx its master and worker together).

It prints a table, the ratios against the anchors, and the machine's load average before and after. A benchmark,
not a test: it asserts nothing about time. The sub-command ``ftpstorm`` is the FTP client run in the phone namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import rounds

SMALL = {"y000000000000.boot": 400, "common.cfg": 4096, "features.cfg": 20480}
BIG = 50 * 1000 * 1000
HOST = "10.77.0.1"

WRK_SCRIPT = """
local paths = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1], {["Connection"] = "close", ["Host"] = "10.77.0.1",
                    ["User-Agent"] = "Yealink SIP-T46U 108.86.0.90 00:15:65:00:00:01"})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, "write": %%d, '
    .. '"status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

BOOTSTRAPD = """
[server]
interface = "eth1"
root = "{root}"
state_dir = "{state}"

[dhcp4]
enabled = false

[http]
enabled = true
max_connections = 10000
max_connections_per_client = 10000
rate_limit = 0

[ftp]
enabled = true
passive_ports = "30000-30999"
max_connections = 10000
max_connections_per_client = 10000
"""

NGINX = """
daemon off;
master_process on;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 10000; }}
worker_rlimit_nofile 16384;
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 15;
  client_body_temp_path {work}/nginx-tmp;
  proxy_temp_path {work}/nginx-tmp;
  fastcgi_temp_path {work}/nginx-tmp;
  uwsgi_temp_path {work}/nginx-tmp;
  scgi_temp_path {work}/nginx-tmp;
  types {{ text/plain cfg boot; application/octet-stream bin; }}
  server {{
    listen {host}:80 backlog=4096;
    root {root};
  }}
}}
"""

VSFTPD = """
listen=YES
listen_address={host}
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=NO
anon_root={root}
no_anon_password=YES
pasv_enable=YES
pasv_min_port=30000
pasv_max_port=30999
port_enable=NO
max_clients=10000
max_per_ip=10000
use_sendfile=YES
seccomp_sandbox=NO
secure_chroot_dir={work}/vsftpd-empty
xferlog_enable=NO
dual_log_enable=NO
"""


def make_small(root: Path) -> None:
    rng = random.Random(80)
    root.mkdir(parents=True, exist_ok=True)
    for name, size in SMALL.items():
        (root / name).write_bytes(rng.randbytes(size))
    root.chmod(0o755)


def make_big(root: Path) -> None:
    rng = random.Random(50)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "firmware.bin", "wb") as out:
        for _ in range(BIG // 1_000_000):
            out.write(rng.randbytes(1_000_000))


def make_tree(root: Path) -> None:
    make_small(root)
    make_big(root)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def vmhwm_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += int(next((ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")), "0"))
    return total


class Server:
    """One server, started in the appliance namespace; ``pids`` are the processes whose memory counts."""

    def __init__(self, kind: str, ap: Any, work: Path) -> None:
        from tests.lab.appliance import Appliance

        self.kind = kind
        self.app: Any = None
        root = work / "root"
        if kind.startswith("bootstrapd"):
            config = BOOTSTRAPD.format(root=root, state=work / "state")
            if "nojournal" in kind:  # what the phone journal costs per request
                config += "\n[journal]\nenabled = false\n"
            self.app = Appliance(ap, work, config)
            # bootstrapd as deployed runs on uvloop (the default, `auto`); bootstrapd-asyncio on the standard loop.
            loop = "asyncio" if "asyncio" in kind else "uvloop"
            self.app.start("--event-loop", loop)
            self.proc = self.app.proc
        elif kind.startswith("aiohttp-floor"):
            # aiohttp's bare low-level server answering 4 KB to anything: the floor under bootstrapd's CPU per request
            loop = "uvloop" if "uvloop" in kind else "asyncio"
            self.proc = ap.popen([sys.executable, "-m", "tests.bench.http", "floor", "--loop", loop],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif kind == "nginx":
            (work / "nginx-tmp").mkdir(exist_ok=True)
            conf = work / "nginx.conf"
            conf.write_text(NGINX.format(work=work, root=root, host=HOST))
            self.proc = ap.popen(["nginx", "-c", str(conf), "-p", str(work)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        elif kind == "vsftpd":
            (work / "vsftpd-empty").mkdir(exist_ok=True)
            conf = work / "vsftpd.conf"
            conf.write_text(VSFTPD.format(work=work, root=root, host=HOST))
            self.proc = ap.popen(["vsftpd", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            raise SystemExit(f"unknown server {kind}")
        self.ap = ap
        port = 21 if kind == "vsftpd" else 80
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ap.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip():
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {self.proc.returncode}")
            time.sleep(0.1)

    @property
    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.ap.ns], capture_output=True, text=True).stdout.split()
        return [int(p) for p in out] if self.kind in ("nginx", "vsftpd") else [self.proc.pid]

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop()
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wrk(phone: Any, work: Path, seconds: int, connections: int) -> dict[str, Any]:
    script = work / "storm.lua"
    script.write_text(WRK_SCRIPT % ", ".join(f'"/{n}"' for n in SMALL))
    result = phone.run(["prlimit", "--nofile=16384", "wrk", "-t2", f"-c{connections}", f"-d{seconds}s",
                        "--timeout", "10s", "-s", str(script), f"http://{HOST}/"], timeout=seconds + 120)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("{")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {result.stdout[-1000:]} {result.stderr[-1000:]}")
    stats: dict[str, Any] = json.loads(line)
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    stats["failures"] = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    return stats


def download(phone: Any, url: str, tries: int) -> dict[str, Any]:
    speeds = []
    for _ in range(tries):
        result = phone.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url],
                           timeout=300)
        speed, _, size = result.stdout.partition(" ")
        if result.returncode != 0 or int(float(size or 0)) != BIG:
            return {"mb_s": float("nan"), "ok": False, "error": result.stderr[-300:]}
        speeds.append(float(speed) / 1e6)
    return {"mb_s": statistics.median(speeds), "ok": True}


async def floor() -> None:
    from aiohttp import web

    body = b"x" * 4096

    async def handle(_request: web.BaseRequest) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    server = web.Server(handle, access_log=None, handler_cancellation=True, tcp_keepalive=False)
    await asyncio.get_running_loop().create_server(server, HOST, 80, backlog=1024)
    await asyncio.Event().wait()


async def ftpstorm(host: str, name: str, sessions: int, concurrency: int) -> dict[str, Any]:
    import aioftp

    latencies: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failures
        async with gate:
            started = time.monotonic()
            try:
                async with asyncio.timeout(30):
                    async with aioftp.Client.context(host, user="anonymous", password="bench@") as client:
                        data = b""
                        async with client.download_stream(name) as stream:
                            async for block in stream.iter_by_block():
                                data += block
                        if len(data) != SMALL[name]:
                            raise RuntimeError("short")
            except Exception:
                failures += 1
                return
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(sessions)))
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"sessions": sessions, "ok": len(latencies), "failures": failures, "seconds": elapsed,
            "per_s": len(latencies) / elapsed, "p99_ms": p99 * 1000}


def cpu_of(pids: list[int]) -> float:
    return sum(rounds.cpu_seconds(p) for p in pids)


def settle(pids: list[int], longest: float = 20.0) -> None:
    """Until the server is idle: under 20 ms of CPU in half a second."""
    deadline = time.monotonic() + longest
    before = cpu_of(pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_of(pids)
        if now - before < 0.02:
            return
        before = now


def measure_http(kind: str, ap: Any, phone: Any, work: Path, seconds: int, connections: int,
                 downloads: int) -> dict[str, Any]:
    server = Server(kind, ap, work)
    try:
        load_at = os.getloadavg()[0]
        pids = server.pids
        cpu0 = cpu_of(pids)
        storm = wrk(phone, work, seconds, connections)
        settle(pids)  # what the storm left to do (the journal folds its events in batches) counts for the storm
        storm["cpu_us"] = 1e6 * (cpu_of(pids) - cpu0) / max(storm["requests"], 1)
        storm["vmhwm_kb"] = vmhwm_kb(pids)
        cpu0 = cpu_of(pids)
        big = download(phone, f"http://{HOST}/firmware.bin", downloads)
        big["cpu_ms_per_mb"] = 1e3 * (cpu_of(pids) - cpu0) / (downloads * BIG / 1e6) if big["ok"] else float("nan")
    finally:
        server.stop()
    return {"storm": storm, "big": big, "load": load_at}


def measure_ftp(kind: str, ap: Any, phone: Any, work: Path, ftp_sessions: int, downloads: int) -> dict[str, Any]:
    server = Server(kind, ap, work)
    try:
        load_at = os.getloadavg()[0]
        out = phone.run([sys.executable, "-m", "tests.bench.http", "ftpstorm", "--host", HOST,
                         "--sessions", str(ftp_sessions)], timeout=600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        storm = json.loads(out.stdout)
        storm["vmhwm_kb"] = vmhwm_kb(server.pids)
        big = download(phone, f"ftp://{HOST}/firmware.bin", downloads)
    finally:
        server.stop()
    return {"storm": storm, "big": big, "load": load_at}


def run(seconds: int, connections: int, ftp_sessions: int, http_servers: list[str],
        ftp_servers: list[str], repeat: int = 3, downloads: int = 7) -> dict[str, Any]:
    from tests.lab.netns import lab

    for tool in ("wrk", "curl", "nginx", "vsftpd"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (make peers)")
    results: dict[str, Any] = {"load_before": rounds.load_average(), "downloads": downloads}
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        make_tree(work / "root")
        ap = the_lab.add_appliance()
        phones = iter(range(10, 250))

        def fresh_phone() -> Any:
            # A new client address per run: the connections the previous run left in TIME_WAIT (tens of thousands
            # of them, on both sides) never meet this run's, whose ports would collide with theirs.
            return the_lab.add_phone(ipv4=f"10.77.0.{next(phones)}/24")

        http_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in http_servers}
        ftp_runs: dict[str, list[dict[str, Any]]] = {k: [] for k in ftp_servers}
        # Servers interleave round by round, each round starting one server further on (tests/bench/rounds.py), so
        # a burst of load from elsewhere on a shared machine does not always land on the same server.
        for round_, kind in rounds.interleaved(http_servers, repeat):
            print(f"-- round {round_ + 1}/{repeat}: http {kind} ({rounds.load_average()})", file=sys.stderr,
                  flush=True)
            http_runs[kind].append(measure_http(kind, ap, fresh_phone(), work, seconds, connections,
                                                          downloads))
        for round_, kind in rounds.interleaved(ftp_servers, repeat):
            print(f"-- round {round_ + 1}/{repeat}: ftp {kind} ({rounds.load_average()})", file=sys.stderr,
                  flush=True)
            ftp_runs[kind].append(measure_ftp(kind, ap, fresh_phone(), work, ftp_sessions, downloads))
    results["http"] = http_runs
    results["ftp"] = ftp_runs
    results["rounds"] = repeat
    results["load_after"] = rounds.load_average()
    return results


def _series(runs: dict[str, list[dict[str, Any]]], part: str, key: str, scale: float = 1.0) -> dict[str, list[float]]:
    def value(r: dict[str, Any]) -> float:
        v = r[part].get(key) if part else r.get(key)
        return float("nan") if v is None or (part == "big" and not r["big"]["ok"]) else float(v) * scale

    return {kind: [value(r) for r in rs] for kind, rs in runs.items()}


def _ratios(runs: dict[str, list[dict[str, Any]]], anchor: str, rows: list[tuple[str, str, str, bool]]) -> list[str]:
    lines = []
    for kind in runs:
        if kind == anchor:
            continue
        parts = []
        for label, part, key, higher in rows:
            series = _series(runs, part, key)
            parts.append(f"{label} x{rounds.fmt(rounds.ratio(series[kind], series[anchor], higher), 2)}")
        lines.append(f"  {kind} / {anchor} (ratio of medians, above 1 is better): " + ", ".join(parts))
    return lines


def report(results: dict[str, Any], seconds: int, connections: int) -> str:
    http, ftp = results["http"], results["ftp"]
    lines = [f"started with {results['load_before']}, finished with {results['load_after']}; {results['rounds']} "
             "interleaved rounds, a fresh server per round; min/median/max over the rounds, ratios of medians", ""]
    if http:
        title = (f"HTTP boot storm: wrk, {connections} connections, a new connection per request, 3 small files "
                 f"(400 B, 4 KB, 20 KB), {seconds} s")
        lines += rounds.table(title + ": requests/s", "req/s", _series(http, "storm", "rps"), 0)
        lines += rounds.table("  failures (socket errors, non-2xx)", "", _series(http, "storm", "failures"), 0)
        lines += rounds.table("  p99 latency", "ms", _series(http, "storm", "p99_us", 1e-3), 1, False)
        lines += rounds.table("  server CPU per request", "us", _series(http, "storm", "cpu_us"), 1, False)
        lines += rounds.table("  peak RSS (nginx: master + worker)", "MiB",
                              _series(http, "storm", "vmhwm_kb", 1 / 1024), 1, False)
        lines += rounds.table(f"50 MB download with curl (median of {results['downloads']} per round)", "MB/s",
                              _series(http, "big", "mb_s"))
        lines += rounds.table("  server CPU per MB", "ms", _series(http, "big", "cpu_ms_per_mb"), 2, False)
        lines += rounds.table("  load average (1 min) at the start of the run", "", _series(http, "", "load"), 2, False)
        if "nginx" in http:
            lines += _ratios(http, "nginx", [("storm req/s", "storm", "rps", True),
                                             ("CPU/request", "storm", "cpu_us", False),
                                             ("50 MB", "big", "mb_s", True),
                                             ("CPU/MB", "big", "cpu_ms_per_mb", False)])
        lines.append("")
    if ftp:
        lines += rounds.table("FTP: sessions of connect + anonymous login + passive RETR 4 KB + QUIT, 50 at a time "
                              "(aioftp client): sessions/s", "/s", _series(ftp, "storm", "per_s"), 0)
        lines += rounds.table("  failures", "", _series(ftp, "storm", "failures"), 0)
        lines += rounds.table("  p99 latency", "ms", _series(ftp, "storm", "p99_ms"), 1, False)
        lines += rounds.table("  peak RSS", "MiB", _series(ftp, "storm", "vmhwm_kb", 1 / 1024), 1, False)
        lines += rounds.table(f"50 MB over FTP with curl (median of {results['downloads']} per round)", "MB/s",
                              _series(ftp, "big", "mb_s"))
        lines += rounds.table("  load average (1 min) at the start of the run", "", _series(ftp, "", "load"), 2, False)
        if "vsftpd" in ftp:
            lines += _ratios(ftp, "vsftpd", [("sessions/s", "storm", "per_s", True), ("50 MB", "big", "mb_s", True)])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.http")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("floor").add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    f = sub.add_parser("ftpstorm")
    f.add_argument("--host", required=True)
    f.add_argument("--sessions", type=int, default=500)
    f.add_argument("--concurrency", type=int, default=50)
    f.add_argument("--file", default="common.cfg")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--ftp-sessions", type=int, default=500)
    parser.add_argument("--downloads", type=int, default=7,
                        help="50 MB downloads per round and server, their median the round's figure (one lasts "
                             "~25 ms at 2 GB/s: three were too few to steady it)")
    parser.add_argument("--http-servers", default="bootstrapd,bootstrapd-asyncio,nginx",
                        help="bootstrapd runs its default loop (uvloop), bootstrapd-asyncio the standard one; also "
                             "bootstrapd-nojournal, bootstrapd-asyncio-nojournal ([journal] enabled = false), "
                             "aiohttp-floor, aiohttp-floor-uvloop (aiohttp's bare server, 4 KB to anything)")
    parser.add_argument("--ftp-servers", default="bootstrapd,vsftpd")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; min/median/max and ratios of medians")
    args = parser.parse_args()
    if args.command == "floor":
        from bootstrapd import eventloop

        eventloop.run(floor(), eventloop.loop_factory(args.loop))
        return
    if args.command == "ftpstorm":
        print(json.dumps(asyncio.run(ftpstorm(args.host, args.file, args.sessions, args.concurrency))))
        return
    if os.geteuid() != 0:
        raise SystemExit("the benchmark needs root (network namespaces)")
    results = run(args.seconds, args.connections, args.ftp_sessions, args.http_servers.split(","),
                  [s for s in args.ftp_servers.split(",") if s], args.rounds, args.downloads)
    print(json.dumps(results), file=sys.stderr)
    print(report(results, args.seconds, args.connections))


if __name__ == "__main__":
    main()
