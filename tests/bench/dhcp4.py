"""DHCPv4 benchmark (``make bench-dhcp4``; not a test): perfdhcp against bootstrapd, Kea and dnsmasq, side by side.

Each server runs in the same lab appliance namespace with a durable lease store (bootstrapd: SQLite with fsync per
group commit; Kea: memfile with persist; dnsmasq: its lease file), one at a time, freshly started for every rate.
perfdhcp (a relay, in a phone namespace) offers rising rates for a few seconds each; a server's figure is the
highest offered rate it answered with under 1% of the exchanges lost (protocols.md section 9: compare offered rates,
not perfdhcp's "Rate" line). The servers are interleaved over ``--repeat`` rounds (tests/bench/rounds.py); the
benchmark prints every round, min/median/max and bootstrapd's ratio of medians, and the server's CPU time per
completed exchange at its highest passing rate. Then bootstrapd is started on a store holding 50,000 leases and its
peak RSS is printed.

bootstrapd runs its defaults plus what any deployment sets: the interface, the pool and option 66. Kea gets the same
pool and option, dnsmasq likewise (``--no-ping``: its default probes each address with ICMP first).

Bounded: at most ``len(RATES)`` runs of ``PERIOD`` seconds per server and round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from bootstrapd.leases.store import Lease4, LeaseStore
from tests.bench import rounds
from tests.lab import perfdhcp
from tests.lab.appliance import Appliance
from tests.lab.netns import Node, lab

RATES = [250, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 12000, 14000, 16000]
REPEAT = 3
PERIOD = 4
SERVER, CLIENT = "10.78.0.1", "10.78.0.2"
FIRST, LAST = "10.78.1.0", "10.78.250.255"

BOOTSTRAPD = f"""
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
[dhcp4]
range = "{FIRST}-{LAST}"
[dhcp4.options]
66 = "tftp://{SERVER}/"
"""


def kea_config(workdir: Path) -> str:
    return json.dumps({"Dhcp4": {
        "interfaces-config": {"interfaces": ["eth1"], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": True, "name": str(workdir / "kea-leases4.csv"),
                           "lfc-interval": 0},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": "10.78.0.0/16", "pools": [{"pool": f"{FIRST} - {LAST}"}],
                     "option-data": [{"name": "tftp-server-name", "data": f"tftp://{SERVER}/"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "stderr"}]}],
    }})


class Running:
    def __init__(self, stop: Callable[[], None], pid: int) -> None:
        self.stop = stop
        self.pid = pid


def start_bootstrapd(node: Node, workdir: Path, extra: str = "") -> Running:
    app = Appliance(node, workdir, BOOTSTRAPD + extra)
    app.start()
    assert app.proc

    def stop() -> None:
        app.stop()

    return Running(stop, app.proc.pid)


def start_bootstrapd_nojournal(node: Node, workdir: Path) -> Running:
    return start_bootstrapd(node, workdir, "[journal]\nenabled = false\n")


def start_bootstrapd_livejournal(node: Node, workdir: Path) -> Running:
    """The journal folding as events come, storms or not (``storm_events = 0``): the storm mode's A/B."""
    return start_bootstrapd(node, workdir, "[journal]\nstorm_events = 0\n")


def start_kea(node: Node, workdir: Path) -> Running:
    return run_kea(node, workdir, kea_config(workdir))


def run_kea(node: Node, workdir: Path, config: str) -> Running:
    """kea-dhcp4 on ``config`` (JSON text) in ``node``, its PID and lock files in ``workdir``."""
    conf = workdir / "kea-dhcp4.json"
    conf.write_text(config)
    log = open(workdir / "kea.log", "wb")
    env = {"KEA_PIDFILE_DIR": str(workdir), "KEA_LOCKFILE_DIR": str(workdir), "PATH": "/usr/sbin:/usr/bin:/bin"}
    proc = node.popen(["kea-dhcp4", "-c", str(conf)], stdout=log, stderr=log, env=env)
    node.wait_udp_port(67, proc=proc)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return Running(stop, proc.pid)


def start_dnsmasq(node: Node, workdir: Path) -> Running:
    leases = workdir / "dnsmasq.leases"
    log = open(workdir / "dnsmasq.log", "wb")
    proc = node.popen(["dnsmasq", "-d", "-C", "/dev/null", "--port=0", "--interface=eth1", "--bind-interfaces",
                       f"--dhcp-range={FIRST},{LAST},1h", f"--dhcp-leasefile={leases}", "--dhcp-lease-max=200000",
                       "--no-ping", f"--dhcp-option=66,tftp://{SERVER}/", f"--pid-file={workdir / 'dnsmasq.pid'}"],
                      stdout=log, stderr=log)
    node.wait_udp_port(67, proc=proc)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return Running(stop, proc.pid)


def perfdhcp_run(client: Node, rate: int, server_pid: int | None = None, *, server: str = SERVER,
                 extra: tuple[str, ...] = (), settle: bool = False) -> dict[str, float]:
    """One perfdhcp run; ``settle``: the CPU figure includes the work the daemon does once the run is over (the
    journal folds what it collected during the storm; see rounds.settled_cpu_seconds)."""
    before = perfdhcp.rcvbuf_errors(client)
    cpu = rounds.tree_cpu_seconds(server_pid) if server_pid else 0.0
    result = perfdhcp.run(client, 4, "-r", str(rate), "-p", str(PERIOD), "-R", "4000000", "-W", "1000000", "-d", "2",
                          *extra, server, timeout=PERIOD + 30)
    if server_pid:
        cpu = (rounds.settled_cpu_seconds(server_pid) if settle else rounds.tree_cpu_seconds(server_pid)) - cpu
    return {"sent": result.started, "completed": result.completed, "drop_ratio": result.loss,
            "achieved": result.completed / PERIOD, "client_rcvbuf_drops": perfdhcp.rcvbuf_errors(client) - before,
            "cpu_us": 1e6 * cpu / result.completed if result.completed else float("nan")}


def peak_rss_kb(pid: int) -> int:
    """VmHWM of the python process (``ip netns exec`` execs into it, so normally ``pid`` itself)."""
    for candidate in rounds.process_tree(pid):
        try:
            status = Path(f"/proc/{candidate}/status").read_text()
            cmdline = Path(f"/proc/{candidate}/cmdline").read_text(errors="replace")
        except FileNotFoundError:
            continue
        if "python" in cmdline:
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                return int(match.group(1))
    return 0


def measure(name: str, start: Callable[[Node, Path], Running], appliance: Node, client: Node, base: Path,
            rates: list[int]) -> tuple[int, float]:
    """The highest rate with under 1% lost, and the server's CPU microseconds per completed exchange there."""
    best, cpu_us = 0, float("nan")
    for rate in rates:
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{rate}-", dir=base))
        workdir.chmod(0o755)
        server = start(appliance, workdir)
        try:
            result = perfdhcp_run(client, rate, server.pid, settle=True)
        finally:
            server.stop()
        ok = result["drop_ratio"] < 0.01
        print(f"  {name:10} offered {rate:6}/s  completed {result['completed']:7.0f}  "
              f"lost {result['drop_ratio'] * 100:6.2f}%  {'ok' if ok else 'FAIL'}"
              f"  (of which perfdhcp's own socket buffer: {result['client_rcvbuf_drops']:.0f})"
              f"  server CPU {result['cpu_us']:.0f} us/exchange", flush=True)
        if not ok:
            break
        best, cpu_us = rate, result["cpu_us"]
    return best, cpu_us


def journal_ab(appliance: Node, client: Node, base: Path, rates: list[int], repeats: int,
               what: str = "journal") -> None:
    """The journal's (or the capture's) cost: bootstrapd without and with it, interleaved, ``repeats`` times each
    per rate.

    Prints completed exchanges, drops and the daemon's CPU per exchange, the work done once the run is over included
    (the journal folds a storm's events after it); the CPU figure is the steady one on a shared machine (a drop
    figure near a rate limit moves with the neighbours' load).
    """
    extras = {"journal": ("[journal]\nenabled = false\n", ""),
              "capture": ("", "[capture]\nfile = \"@STATE@/capture.pcap\"\n")}[what]
    print(f"{what} off/on interleaved, {repeats} runs each per rate, {PERIOD} s per run "
          f"(load average at start: {os.getloadavg()[0]:.2f})")
    totals: dict[str, list[float]] = {"off": [], "on": []}
    for rate in rates:
        per: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
        for rep in range(repeats):
            order = ("off", "on") if rep % 2 == 0 else ("on", "off")
            for mode in order:
                workdir = Path(tempfile.mkdtemp(prefix=f"ab-{mode}-{rate}-", dir=base))
                workdir.chmod(0o755)
                server = start_bootstrapd(appliance, workdir, extras[0] if mode == "off" else extras[1])
                try:
                    result = perfdhcp_run(client, rate, server.pid, settle=True)
                finally:
                    server.stop()
                per_exchange = result["cpu_us"]
                per[mode].append((result["completed"], result["drop_ratio"], per_exchange))
                print(f"  {rate:6}/s {what} {mode:3}  completed {result['completed']:7.0f}  drops "
                      f"{result['drop_ratio'] * 100:6.2f}% (perfdhcp's own buffer: {result['client_rcvbuf_drops']:.0f})"
                      f"  daemon CPU {per_exchange:6.1f} us/exchange (load {os.getloadavg()[0]:.2f})", flush=True)
        means = {m: [sum(x[i] for x in v) / len(v) for i in range(3)] for m, v in per.items()}
        for mode in ("off", "on"):
            totals[mode].append(means[mode][2])
        print(f"  {rate:6}/s on/off: completed x{means['on'][0] / max(1.0, means['off'][0]):.3f}, CPU per exchange "
              f"x{means['on'][2] / means['off'][2]:.3f}", flush=True)
    off, on = sum(totals["off"]) / len(totals["off"]), sum(totals["on"]) / len(totals["on"])
    print(f"\n{what} on / off, daemon CPU per DORA exchange over all rates: {on:.1f} / {off:.1f} us = x{on / off:.3f}")


def rss_with_leases(appliance: Node, client: Node, base: Path, count: int = 50_000) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rss-", dir=base))
    workdir.chmod(0o755)
    state = workdir / "state"
    store = LeaseStore(state / "leases.sqlite3")
    first = int(IPv4Address(FIRST))
    now = time.time()
    store.write_now(Lease4(IPv4Address(first + i), (0x021500000000 + i).to_bytes(6, "big"), None, now + 3600,
                           vendor_class="yealink", hostname=f"phone{i}") for i in range(count))
    store.close()
    app = Appliance(appliance, workdir, BOOTSTRAPD)
    app.start(timeout=60)
    assert app.proc
    perfdhcp_run(client, 1000)  # some traffic on top of the loaded store
    rss = peak_rss_kb(app.proc.pid)
    app.stop()
    return rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="offered rates to try, ascending")
    parser.add_argument("--servers", default="bootstrapd,bootstrapd-nojournal,kea,dnsmasq",
                        help="bootstrapd-nojournal: bootstrapd with [journal] off (the journal's cost, issue #12); "
                        "bootstrapd-livejournal: the journal without its storm mode (storm_events = 0)")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="rounds, servers interleaved")
    parser.add_argument("--no-rss", action="store_true", help="skip the 50,000-lease memory measurement")
    parser.add_argument("--journal-ab", type=int, default=0, metavar="N",
                        help="instead: bootstrapd with the journal off and on, interleaved, N runs each per rate")
    parser.add_argument("--capture-ab", type=int, default=0, metavar="N",
                        help="instead: bootstrapd without and with [capture] (the pcap recorder), interleaved")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    servers = [n for n in args.servers.split(",") if n]
    for tool in ("perfdhcp", "kea-dhcp4", "dnsmasq"):
        if not shutil.which(tool):
            print(f"missing {tool}: run `make peers`", file=sys.stderr)
            return 2
    starters = {"bootstrapd": start_bootstrapd, "bootstrapd-nojournal": start_bootstrapd_nojournal,
                "bootstrapd-livejournal": start_bootstrapd_livejournal, "kea": start_kea,
                "dnsmasq": start_dnsmasq}
    base = Path(tempfile.mkdtemp(prefix="bench-dhcp4-"))
    base.chmod(0o755)
    print(f"DHCPv4 DORA, perfdhcp relay, {PERIOD} s per rate, pass = under 1% of exchanges lost; "
          f"{args.repeat} rounds, servers interleaved; {rounds.load_average()}", flush=True)
    try:
        with lab() as the_lab:
            appliance = the_lab.add_appliance(ipv4=f"{SERVER}/16", ipv6=None)
            client = the_lab.add_phone(mac="02:30:00:00:00:01", ipv4=f"{CLIENT}/16")
            if args.journal_ab or args.capture_ab:
                journal_ab(appliance, client, base, rates, args.journal_ab or args.capture_ab,
                           "journal" if args.journal_ab else "capture")
                return 0
            series = rounds.run_rounds(servers, args.repeat, lambda _r, name: measure(
                name, starters[name], appliance, client, base, rates))
            print()
            best = {name: [float(b) for b, _ in values] for name, values in series.values.items()}
            cpu = {name: [c for _, c in values] for name, values in series.values.items()}
            print("\n".join(rounds.table("Highest offered rate with under 1% of exchanges lost (DORA/s):", "/s",
                                         best, digits=0)))
            print("\n".join(rounds.table("Server CPU per completed exchange at that rate (lower is better):", "us",
                                         cpu, digits=0, higher_is_better=False)))
            journal = rounds.journal_cost(best, "DORA/s")
            if journal:
                print(journal)
            print(f"finished with {rounds.load_average()}")
            if "bootstrapd" in servers and not args.no_rss:
                rss = rss_with_leases(appliance, client, base)
                print(f"\nbootstrapd peak RSS with 50,000 leases in the store: {rss / 1024:.1f} MB")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
