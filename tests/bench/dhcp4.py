"""DHCPv4 benchmark (``make bench-dhcp4``; not a test): perfdhcp against bootstrapd, Kea and dnsmasq, side by side.

Each server runs in the same lab appliance namespace with a durable lease store (bootstrapd: SQLite with fsync per
group commit; Kea: memfile with persist; dnsmasq: its lease file), one at a time, freshly started for every rate.
perfdhcp (a relay, in a phone namespace) offers rising rates for a few seconds each; a server's figure is the
highest offered rate it answered with under 1% drops (protocols.md section 9: compare offered rates, not perfdhcp's
"Rate" line). Then bootstrapd is started on a store holding 50,000 leases and its peak RSS is printed.

Bounded: at most ``len(RATES)`` runs of ``PERIOD`` seconds per server.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bootstrapd.leases.store import Lease4, LeaseStore
from tests.lab import perfdhcp
from tests.lab.appliance import Appliance
from tests.lab.netns import Lab, Node, lab

RATES = [100, 250, 500, 1000, 2000, 3000, 4000, 4500, 5000, 6000, 8000]
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
lease_time = 3600
rate_limit = 50.0
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


def start_bootstrapd(node: Node, workdir: Path) -> Running:
    app = Appliance(node, workdir, BOOTSTRAPD)
    app.start()
    assert app.proc

    def stop() -> None:
        app.stop()

    return Running(stop, app.proc.pid)


def start_kea(node: Node, workdir: Path) -> Running:
    conf = workdir / "kea-dhcp4.json"
    conf.write_text(kea_config(workdir))
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


def perfdhcp_run(client: Node, rate: int, server: str = SERVER, *extra: str) -> dict[str, float]:
    before = perfdhcp.rcvbuf_errors(client)
    result = perfdhcp.run(client, 4, "-r", str(rate), "-p", str(PERIOD), "-R", "4000000", "-W", "1000000", "-d", "2",
                          *extra, server, timeout=PERIOD + 30)
    return {"sent": result.started, "completed": result.completed, "drop_ratio": result.loss,
            "achieved": result.completed / PERIOD, "client_rcvbuf_drops": perfdhcp.rcvbuf_errors(client) - before}


def peak_rss_kb(pid: int) -> int:
    """VmHWM of the python process (the child of `ip netns exec`)."""
    for candidate in [pid, *_children(pid)]:
        try:
            status = Path(f"/proc/{candidate}/status").read_text()
        except FileNotFoundError:
            continue
        if "python" in Path(f"/proc/{candidate}/cmdline").read_text(errors="replace"):
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                return int(match.group(1))
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split() if (task / "children").exists() else []
        for child in children:
            out.append(int(child))
            out.extend(_children(int(child)))
    return out


def measure(the_lab: Lab, name: str, start: Callable[[Node, Path], Running], appliance: Node, client: Node,
            base: Path, rates: list[int]) -> tuple[int, list[dict[str, Any]]]:
    best = 0
    runs: list[dict[str, Any]] = []
    for rate in rates:
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{rate}-", dir=base))
        workdir.chmod(0o755)
        server = start(appliance, workdir)
        try:
            result = perfdhcp_run(client, rate)
        finally:
            server.stop()
        runs.append({"rate": rate, **result})
        ok = result["drop_ratio"] < 0.01
        print(f"  {name:10} offered {rate:6}/s  completed {result['completed']:7.0f}  "
              f"drops {result['drop_ratio'] * 100:6.2f}%  {'ok' if ok else 'FAIL'}"
              f"  (of which perfdhcp's own socket buffer: {result['client_rcvbuf_drops']:.0f})", flush=True)
        if not ok:
            break
        best = rate
    return best, runs


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
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--servers", default="bootstrapd,kea,dnsmasq")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    for tool in ("perfdhcp", "kea-dhcp4", "dnsmasq"):
        if not shutil.which(tool):
            print(f"missing {tool}: run `make peers`", file=sys.stderr)
            return 2
    starters = {"bootstrapd": start_bootstrapd, "kea": start_kea, "dnsmasq": start_dnsmasq}
    results: dict[str, int] = {}
    base = Path(tempfile.mkdtemp(prefix="bench-dhcp4-"))
    base.chmod(0o755)
    try:
        with lab() as the_lab:
            appliance = the_lab.add_appliance(ipv4=f"{SERVER}/16", ipv6=None)
            client = the_lab.add_phone(mac="02:30:00:00:00:01", ipv4=f"{CLIENT}/16")
            print(f"DHCPv4 DORA, perfdhcp relay, {PERIOD} s per rate, pass = under 1% of exchanges lost")
            for name in args.servers.split(","):
                results[name], _ = measure(the_lab, name, starters[name], appliance, client, base, rates)
            print("\nHighest rate with under 1% drops (4-way exchanges/s offered):")
            for name, rate in results.items():
                print(f"  {name:10} {rate:6}")
            ours = results.get("bootstrapd", 0)
            for other in ("kea", "dnsmasq"):
                if results.get(other):
                    print(f"  bootstrapd / {other}: {ours / results[other]:.2f}x")
            if "bootstrapd" in args.servers:
                rss = rss_with_leases(appliance, client, base)
                print(f"\nbootstrapd peak RSS with 50,000 leases in the store: {rss / 1024:.1f} MB")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
