"""Where the daemon's time goes, per DHCP exchange, TFTP block, HTTP request or MB (a developer tool, not a test).

    python -m tests.bench.profile WORKLOAD TOOL [--count N] [--rate R]

WORKLOAD: ``dhcp4`` / ``dhcp6`` (perfdhcp at a fixed offered rate for N exchanges), ``tftp`` (atftp downloads of a
file of N lock-step blocks at blksize 1428; ``--parallel P``: P downloads at once of N/P blocks each),
``tftp-window`` (the same at windowsize 64), ``http`` (wrk for N seconds, 200 connections, a new connection per
request, bench-http's three small files), ``http-big`` (N downloads of bench-http's 50 MB file with curl). TOOL:

- ``cpu``: the daemon's user and system CPU time and context switches per unit, split by thread (the event loop is
  the main thread; the lease store's writer and the journal's writer are the others), from /proc, counted until
  the daemon is idle again (the journal folds a storm's events after it); ``--journal off`` for the daemon without
  its journal;
- ``cprofile``: the event-loop thread under cProfile (tests/bench/profiled.py, thread CPU time), switched on for the
  workload only: calls and own time per unit for the top functions (cProfile's own overhead inflates small
  functions, so read the shares and the call counts, not the absolute times);
- ``perf``: ``perf record`` sampling of the whole process (kernel included) during the workload: shares by shared
  object and by symbol (the interpreter, allocation, the kernel's UDP path, SQLite);
- ``strace``: system calls per unit (``strace -c -f``);
- ``callgrind``: instructions per unit under valgrind (``--instr-atstart=no``, switched on for the workload only):
  repeatable on a loaded machine, unlike wall-clock time;
- ``pyspy``: py-spy sampling of every thread with the GIL state (``--gil`` off: all samples; idle shown).

Every run warms the daemon up first (a short workload) so that start-up and first-time costs stay out. The daemon
runs its defaults with the service under test enabled (TFTP: with ``workers = 0``, every transfer on its loop).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pstats
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import rounds
from tests.lab import perfdhcp
from tests.lab.appliance import BASE_CONFIG
from tests.lab.netns import Node, lab

BLKSIZE = 1428
CONFIGS = {
    "dhcp4": '[dhcp4]\nenabled = true\nrange = "10.78.1.0-10.78.250.255"\n[dhcp4.options]\n66 = "tftp://10.78.0.1/"\n',
    "dhcp6": '[dhcp6]\nenabled = true\nrange = "fd77::1:0-fd77::10:ffff"\n',
    # workers = 0: the transfers run on the daemon's own loop, where every TOOL sees them (a transfer worker runs
    # the same code per block in a process of its own: tftp/sessions.py).
    "tftp": "[tftp]\nenabled = true\nworkers = 0\n",
    "http": "[http]\nenabled = true\nmax_connections = 10000\nmax_connections_per_client = 10000\nrate_limit = 0\n",
}


class Daemon:
    """bootstrapd in the appliance namespace, optionally under a profiler that wraps it from the start."""

    def __init__(self, node: Node, work: Path, service: str, tool: str, loop: str = "asyncio",
                 journal: str = "on") -> None:
        base = BASE_CONFIG.format(root=work / "root", state=work / "state")
        if journal != "on":
            base += {"off": "[journal]\nenabled = false\n", "live": "[journal]\nstorm_events = 0\n"}[journal]
        if service == "dhcp4":
            base = base.replace("[dhcp4]\nenabled = false\n", "")
        config = work / "bootstrapd.toml"
        config.write_text(base + CONFIGS[service])
        self.out = work / f"profile.{tool}"
        argv = [sys.executable, "-m", "bootstrapd", "run", "--config", str(config)]
        if tool == "cprofile":
            argv = [sys.executable, "-m", "tests.bench.profiled", str(self.out), *argv[3:]]
        if tool == "callgrind":
            argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out}", *argv]
        self.tool = tool
        self.log = open(work / "daemon.log", "wb")
        argv += ["--event-loop", loop]
        self.proc = node.popen(argv, stdout=self.log, stderr=self.log)
        port = {"dhcp4": 67, "dhcp6": 547, "tftp": 69, "http": 80}[service]
        try:
            if service == "http":
                _wait_tcp_port(node, port, 300 if tool == "callgrind" else 30, self.proc)
            else:
                node.wait_udp_port(port, timeout=300 if tool == "callgrind" else 30, proc=self.proc)
        except (RuntimeError, TimeoutError):
            self.log.close()
            print((work / "daemon.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        self.pid = self.proc.pid
        self.attached: subprocess.Popen[Any] | None = None

    def threads(self) -> dict[int, tuple[float, float, int]]:
        """User and system CPU seconds and context switches (voluntary and not) of each thread."""
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            switches = sum(int(line.split()[1]) for line in (task / "status").read_text().splitlines()
                           if "ctxt_switches" in line)
            out[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick, switches)
        return out

    def settled(self, timeout: float = 30.0) -> None:
        """Wait until the daemon is idle (the journal folds a storm's events after it): that work counts too."""
        rounds.settled_cpu_seconds(self.pid, timeout)

    def start(self) -> None:
        if self.tool == "cprofile":
            os.kill(self.pid, signal.SIGUSR1)
        elif self.tool == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", str(self.pid)], check=True, capture_output=True)
        elif self.tool == "perf":
            self.attached = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-g", "-p", str(self.pid), "-o",
                                              str(self.out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif self.tool == "strace":
            self.attached = subprocess.Popen(["strace", "-c", "-f", "-p", str(self.pid), "-o", str(self.out)],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif self.tool == "pyspy":
            self.attached = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                                              str(self.pid), "-r", "500", "--threads", "--idle", "-f", "raw", "-o",
                                              str(self.out), "--nonblocking"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.attached is not None:
            time.sleep(1.0)  # let the profiler attach before the workload starts

    def stop_profiler(self) -> None:
        if self.tool == "cprofile":
            os.kill(self.pid, signal.SIGUSR2)
            time.sleep(1.0)
        elif self.tool == "callgrind":
            subprocess.run(["callgrind_control", "-i", "off", str(self.pid)], check=True, capture_output=True)
        elif self.attached is not None:
            self.attached.send_signal(signal.SIGINT)
            self.attached.wait(60)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def _dhcp(family: int) -> Callable[[Node, int, int], int]:
    def run(phone: Node, count: int, rate: int) -> int:
        server = ["10.78.0.1"] if family == 4 else []
        result = perfdhcp.run(phone, family, "-r", str(rate), "-n", str(count), "-R", "100000000", "-W", "1000000",
                              *server, timeout=count / rate + 120)
        print(f"  perfdhcp: {result.started} exchanges started, {result.completed} completed; {result.stats}",
              flush=True)
        return result.completed

    return run


def _tftp(window: int, root: Path, parallel: int = 1) -> Callable[[Node, int, int], int]:
    def run(phone: Node, count: int, _rate: int) -> int:
        # ``parallel`` downloads at once, of count / parallel blocks each (a small firmware storm: the daemon's
        # cost per block when it serves many transfers, not one).
        each = max(count // parallel, 1)
        name = f"f{each}.bin"
        if not (root / name).exists():
            (root / name).write_bytes(random.Random(each).randbytes(each * BLKSIZE - 1))
        digest = hashlib.sha256((root / name).read_bytes()).digest()
        procs = []
        for i in range(parallel):
            argv = ["atftp", "--get", "-r", name, "-l", str(root.parent / f"out{i}.bin"), "--option",
                    f"blksize {BLKSIZE}"]
            if window > 1:
                argv += ["--option", f"windowsize {window}"]
            procs.append(phone.popen([*argv, "10.77.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        done = 0
        for i, proc in enumerate(procs):
            proc.wait(3600)
            dest = root.parent / f"out{i}.bin"
            if proc.returncode == 0 and hashlib.sha256(dest.read_bytes()).digest() == digest:
                done += each
            dest.unlink(missing_ok=True)
        return done

    return run


def _wait_tcp_port(node: Node, port: int, timeout: float, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.run(["ss", "-Hltn", f"sport = :{port}"]).stdout.strip():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on TCP port {port}")


def _http_storm(root: Path) -> Callable[[Node, int, int], int]:
    """wrk for ``count`` seconds, 200 connections, a new one per request, the benchmark's three small files: the
    requests answered."""
    from tests.bench import http as bench

    bench.make_small(root)

    def run(phone: Node, count: int, _rate: int) -> int:
        stats = bench.wrk(phone, root.parent, max(count, 1), 200)
        print(f"  wrk: {stats['requests']} requests, {stats['failures']} failures, {stats['rps']:.0f}/s", flush=True)
        return int(stats["requests"]) - int(stats["failures"])

    return run


def _http_big(root: Path) -> Callable[[Node, int, int], int]:
    """``count`` downloads of a 50 MB file with curl: the MB received."""
    from tests.bench import http as bench

    bench.make_big(root)

    def run(phone: Node, count: int, _rate: int) -> int:
        mb = 0
        for _ in range(max(count, 1)):
            result = phone.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
                                "http://10.77.0.1/firmware.bin"], timeout=600)
            mb += int(float(result.stdout or 0)) // 1_000_000
        return mb

    return run


def report(tool: str, out: Path, units: int, unit: str, before: dict[int, tuple[float, float, int]],
           after: dict[int, tuple[float, float, int]], pid: int) -> None:
    print(f"{units} {unit}s measured")
    for tid, (user, system, switches) in sorted(after.items()):
        user -= before.get(tid, (0.0, 0.0, 0))[0]
        system -= before.get(tid, (0.0, 0.0, 0))[1]
        switches -= before.get(tid, (0.0, 0.0, 0))[2]
        if user + system > 0:
            which = "event loop (main thread)" if tid == pid else f"thread {tid}"
            print(f"  CPU {which}: {user + system:.2f} s = {1e6 * (user + system) / units:.1f} us per {unit} "
                  f"(user {1e6 * user / units:.1f}, system {1e6 * system / units:.1f}; "
                  f"{switches / units:.2f} context switches)")
    if tool == "cprofile":
        stats = pstats.Stats(str(out))
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:40]  # type: ignore[attr-defined]
        print(f"  {'own us/' + unit:>12} {'cum us/' + unit:>12} {'calls/' + unit:>12}  function")
        for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in rows:
            where = f"{Path(path).parent.name}/{Path(path).name}:{line}" if line else path
            print(f"  {1e6 * tottime / units:12.2f} {1e6 * cumtime / units:12.2f} {calls / units:12.2f}  "
                  f"{func} ({where})")
    elif tool == "perf":
        for sort in ("dso", "dso,sym"):
            text = subprocess.run(["perf", "report", "-i", str(out), "--stdio", "--no-children", "-g", "none",
                                   "--percent-limit", "0.7", "--sort", sort], capture_output=True, text=True).stdout
            print("\n".join(line for line in text.splitlines() if line.strip() and not line.startswith("#")))
    elif tool == "strace":
        lines = out.read_text().splitlines()
        print("  calls/" + unit + "  " + lines[0] if lines else "")
        for line in lines[2:]:
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit():
                print(f"  {int(parts[3]) / units:8.2f}  {line}")
    elif tool == "callgrind":
        text = subprocess.run(["callgrind_annotate", "--inclusive=no", str(out)], capture_output=True,
                              text=True).stdout
        lines = text.splitlines()
        for line in lines:
            if "PROGRAM TOTALS" in line:
                total = int(line.split()[0].replace(",", ""))
                print(f"  {total / units:,.0f} instructions per {unit}")
        start = next((i for i, line in enumerate(lines) if "file:function" in line), 0)
        for line in lines[start + 2:start + 42]:
            parts = line.split()
            if parts and parts[0].replace(",", "").isdigit():
                print(f"  {int(parts[0].replace(',', '')) / units:12,.0f} Ir/{unit}  {' '.join(parts[1:])[:140]}")
    elif tool == "pyspy":
        counts: dict[str, int] = {}
        total = 0
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            frames = stack.split(";")
            # The innermost frame of this project or asyncio: what the thread was doing.
            leaf = next((f for f in reversed(frames) if "bootstrapd" in f or "asyncio" in f or "sqlite" in f),
                        frames[-1])
            key = f"{frames[0].split(' ')[0]} {leaf}"
            counts[key] = counts.get(key, 0) + int(n)
            total += int(n)
        for key, samples in sorted(counts.items(), key=lambda kv: -kv[1])[:30]:
            print(f"  {100 * samples / total:5.1f}%  {key[:150]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["dhcp4", "dhcp6", "tftp", "tftp-window", "http", "http-big"])
    parser.add_argument("tool", choices=["cpu", "cprofile", "perf", "strace", "callgrind", "pyspy"])
    parser.add_argument("--count", type=int, default=0, help="exchanges or blocks (default by tool)")
    parser.add_argument("--rate", type=int, default=0,
                        help="DHCP: offered exchanges/s (default 2,000, under cprofile/strace 250, callgrind 10; "
                             "a rate given is used as it is)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="TFTP: downloads at once (the blocks split between them; at most max_per_client, 8)")
    parser.add_argument("--journal", choices=["on", "off", "live"], default="on",
                        help="the phone journal: on (the default), off, or live (without its storm mode)")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop",
                        help="the daemon's event loop (run --event-loop; uvloop, the daemon's default when installed)")
    args = parser.parse_args()
    slow = args.tool == "callgrind"
    dhcp = args.workload.startswith("dhcp")
    default = (2000 if slow else 20000) if dhcp else (3000 if slow else 35000)
    count = args.count or default
    # Under a profiler the daemon is slower: offer what it still answers, so the profile is of exchanges, not of
    # perfdhcp's retransmissions.
    rate = args.rate or (10 if slow else 250 if args.tool in ("cprofile", "strace") else 2000)
    for tool in {"perf": "perf", "strace": "strace", "callgrind": "valgrind"}.get(args.tool, "").split():
        if not shutil.which(tool):
            print(f"{tool} is needed", file=sys.stderr)
            return 2
    service = "tftp" if args.workload.startswith("tftp") else "http" if args.workload.startswith("http") \
        else args.workload
    if service == "http":
        count = args.count or (10 if args.workload == "http" else 4)  # seconds of wrk / 50 MB downloads
    unit = {"http": "request", "http-big": "MB"}.get(args.workload, "exchange" if dhcp else "block")
    print(f"{args.workload} under {args.tool} on {args.loop}: {count} "
          f"{'seconds' if args.workload == 'http' else unit + 's'}"
          f"{f' at {rate}/s' if dhcp else ''}; {rounds.load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        (work / "root").mkdir()
        if service == "dhcp4":
            ap = the_lab.add_appliance(ipv4="10.78.0.1/16", ipv6=None)
            phone = the_lab.add_phone(mac="02:30:00:00:00:01", ipv4="10.78.0.2/16")
        else:
            ap = the_lab.add_appliance()
            phone = the_lab.add_phone(ipv4="10.77.0.10/24")
            if service == "dhcp6":
                for node in (ap, phone):
                    the_lab.wait_link_local(node)
        workload = _dhcp(4) if service == "dhcp4" else _dhcp(6) if service == "dhcp6" else \
            _http_storm(work / "root") if args.workload == "http" else \
            _http_big(work / "root") if args.workload == "http-big" else \
            _tftp(64 if args.workload == "tftp-window" else 1, work / "root", args.parallel)
        daemon = Daemon(ap, work, service, args.tool, args.loop, args.journal)
        try:
            workload(phone, 1 if service == "http" else max(count // 20, 20), min(rate, 500))  # warm-up
            before = daemon.threads()
            daemon.start()
            units = workload(phone, count, rate)
            daemon.stop_profiler()
            if args.tool == "cpu":
                daemon.settled()
            after = daemon.threads()
        finally:
            daemon.stop()
        if not units:
            print("the workload completed nothing", file=sys.stderr)
            return 1
        report(args.tool, daemon.out, units, unit, before, after, daemon.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
