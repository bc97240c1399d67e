"""DHCPv6 benchmark: perfdhcp -6 against bootstrapd, kea-dhcp6 (memfile, persist) and dnsmasq, in one lab.

``python -m tests.bench.dhcp6`` builds a lab (network namespaces, nothing on the real network) and, for each server
in turn, runs perfdhcp -6 (full Solicit/Advertise/Request/Reply exchanges, a new random client per exchange) from a
phone namespace at a few offered rates, a few seconds each, stopping at the first rate with 1% drops or more. It
prints, per server, the highest offered rate held with under 1% drops, and the ratios to bootstrapd. The servers are
interleaved over ``--repeat`` rounds (tests/bench/rounds.py): every round is printed, then min/median/max and the
ratio of medians, and the server's CPU time per completed exchange at its highest passing rate.

bootstrapd runs its defaults plus the interface and the pool; the peers get the same pool and boot-file URL.

Offered rate, not perfdhcp's "Rate" line: that line counts the exit wait in its period (protocols.md 9).

All three servers get the same pool (fd77::1:0 - fd77::10:ffff, about a million addresses, so no run exhausts it).
Durability differs: bootstrapd fsyncs every group commit before replying (SQLite WAL, synchronous=FULL); kea's
memfile appends to a CSV without fsync; dnsmasq rewrites its lease file without fsync.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import rounds
from tests.lab import perfdhcp
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import Node, lab

POOL_FIRST, POOL_LAST = "fd77::1:0", "fd77::10:ffff"
RATES = (250, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12000, 14000, 16000)
REPEAT = 3
PERIOD = 3  # seconds of offered load per rate


def perfdhcp_run(phone: Node, rate: int, period: int, server_pid: int) -> dict[str, Any]:
    """One perfdhcp -6 run; sent/received per exchange, the drop ratio over both, server CPU per exchange (the work
    done once the run is over included: the journal folds a storm's events after it)."""
    cpu = rounds.tree_cpu_seconds(server_pid)
    before = perfdhcp.rcvbuf_errors(phone)
    # A Request only follows an Advertise: exchanges that never got their Reply count as lost, whatever stage.
    result = perfdhcp.run(phone, 6, "-r", str(rate), "-p", str(period), "-R", "100000000", "-W", "1000000",
                          timeout=period + 60)
    cpu = rounds.settled_cpu_seconds(server_pid) - cpu
    per = {name: (c.get("sent packets", 0), c.get("received packets", 0)) for name, c in result.stats.items()}
    # perfdhcp exits with 3 when any exchange was lost: the rule here is under 1% lost, as for DHCPv4.
    return {"rate": rate, "solicits": result.started, "replies": result.completed, "drop_ratio": result.loss,
            "per": per, "ok": result.returncode in (0, 3) and result.started > 0,
            "client_rcvbuf_drops": perfdhcp.rcvbuf_errors(phone) - before,
            "cpu_us": 1e6 * cpu / result.completed if result.completed else float("nan")}


def sweep(name: str, phone: Node, rates: tuple[int, ...], period: int, server_pid: int) -> tuple[int, float]:
    """The highest rate with under 1% lost, and the server's CPU microseconds per completed exchange there."""
    best, cpu_us = 0, float("nan")
    for rate in rates:
        run = perfdhcp_run(phone, rate, period, server_pid)
        print(f"  {name:10} offered {rate:5}/s: {run['solicits']:6} solicits, {run['replies']:6} replies, "
              f"{100 * run['drop_ratio']:5.2f}% lost (of which perfdhcp's own socket buffer: "
              f"{run['client_rcvbuf_drops']}), server CPU {run['cpu_us']:.0f} us/exchange", flush=True)
        if not run["ok"] or run["drop_ratio"] >= 0.01:
            break
        best, cpu_us = rate, run["cpu_us"]
    return best, cpu_us


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run_bootstrapd(ap: Node, phone: Node, workdir: Path, rates: tuple[int, ...], period: int,
                   extra: str = "", name: str = "bootstrapd", loop: str = "auto") -> tuple[int, float]:
    text = BASE_CONFIG.format(root=workdir / "root", state=workdir / "state") + f"""
[dhcp6]
enabled = true
range = "{POOL_FIRST}-{POOL_LAST}"
""" + extra
    app = Appliance(ap, workdir, text)
    app.start("--event-loop", loop)
    assert app.proc
    try:
        return sweep(name, phone, rates, period, app.proc.pid)
    finally:
        app.stop()


def run_bootstrapd_nojournal(ap: Node, phone: Node, workdir: Path, rates: tuple[int, ...],
                             period: int) -> tuple[int, float]:
    """bootstrapd with [journal] off: the journal's cost (issue #12) is bootstrapd against this, same rounds."""
    return run_bootstrapd(ap, phone, workdir, rates, period, "[journal]\nenabled = false\n", "no-journal")


def run_bootstrapd_nojournal_asyncio(ap: Node, phone: Node, workdir: Path, rates: tuple[int, ...],
                                     period: int) -> tuple[int, float]:
    """The same on asyncio's standard loop (the default is uvloop when installed): what the loop costs DHCPv6."""
    return run_bootstrapd(ap, phone, workdir, rates, period, "[journal]\nenabled = false\n", "nj-asyncio",
                          "asyncio")


def run_kea(ap: Node, phone: Node, workdir: Path, rates: tuple[int, ...], period: int) -> tuple[int, float]:
    conf = {
        "Dhcp6": {
            "interfaces-config": {"interfaces": [ap.ifname]},
            "lease-database": {"type": "memfile", "persist": True, "name": str(workdir / "leases6.csv"),
                               "lfc-interval": 0},
            "server-id": {"type": "LLT", "persist": True},
            "data-directory": str(workdir),
            "preferred-lifetime": 3600, "valid-lifetime": 7200, "renew-timer": 1800, "rebind-timer": 2880,
            "subnet6": [{
                "id": 1, "subnet": "fd77::/64", "interface": ap.ifname,
                "pools": [{"pool": f"{POOL_FIRST}-{POOL_LAST}"}],
                "option-data": [{"name": "bootfile-url", "data": "tftp://[fd77::1]/"}],
            }],
            "loggers": [{"name": "kea-dhcp6", "severity": "WARN",
                         "output_options": [{"output": str(workdir / "kea.log")}]}],
        }
    }
    path = workdir / "kea-dhcp6.json"
    path.write_text(json.dumps(conf, indent=2))
    env = {"KEA_PIDFILE_DIR": str(workdir), "KEA_LOCKFILE_DIR": str(workdir), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = ap.popen(["kea-dhcp6", "-c", str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ap.wait_udp_port(547, 15.0, proc)
        return sweep("kea-dhcp6", phone, rates, period, proc.pid)
    finally:
        _stop(proc)


def run_dnsmasq(ap: Node, phone: Node, workdir: Path, rates: tuple[int, ...], period: int) -> tuple[int, float]:
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0", f"--interface={ap.ifname}",
            "--bind-interfaces", f"--dhcp-range={POOL_FIRST},{POOL_LAST},64,2h",
            "--dhcp-option=option6:bootfile-url,tftp://[fd77::1]/",
            f"--dhcp-leasefile={workdir / 'leases'}", f"--pid-file={workdir / 'pid'}", "--user=root",
            "--log-facility=-", "--quiet-dhcp6"]
    proc = ap.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ap.wait_udp_port(547, 15.0, proc)
        return sweep("dnsmasq", phone, rates, period, proc.pid)
    finally:
        _stop(proc)


Runner = Callable[[Node, Node, Path, tuple[int, ...], int], tuple[int, float]]
SERVERS: dict[str, tuple[str, Runner]] = {
    "bootstrapd": ("", run_bootstrapd),
    "bootstrapd-nojournal": ("", run_bootstrapd_nojournal),
    "bootstrapd-nojournal-asyncio": ("", run_bootstrapd_nojournal_asyncio),
    "kea-dhcp6": ("kea-dhcp6", run_kea),
    "dnsmasq": ("dnsmasq", run_dnsmasq),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="offered rates to try, ascending")
    parser.add_argument("--period", type=int, default=PERIOD, help="seconds per rate")
    parser.add_argument("--servers", default=",".join(n for n in SERVERS if not n.endswith("-asyncio")),
                        help="which servers to measure (bootstrapd-nojournal-asyncio: on the standard loop)")
    parser.add_argument("--repeat", type=int, default=REPEAT, help="rounds, servers interleaved")
    args = parser.parse_args(argv)
    rates = tuple(int(r) for r in args.rates.split(","))
    names = [n for n in args.servers.split(",") if n]
    for name in names:
        tool = SERVERS[name][0]
        if tool and not shutil.which(tool):
            print(f"{tool} is missing: run `make peers`", file=sys.stderr)
            return 2
    if not shutil.which("perfdhcp"):
        print("perfdhcp is missing (Debian package kea-admin)", file=sys.stderr)
        return 2
    print(f"DHCPv6, perfdhcp -6 full exchanges (SARR), {args.period} s per rate, pass = under 1% lost; "
          f"{args.repeat} rounds, servers interleaved; {rounds.load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-dhcp6-") as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone()
        for node in (ap, phone):
            the_lab.wait_link_local(node)

        def measure(round_: int, name: str) -> tuple[int, float]:
            workdir = work / f"{name}-{round_}"
            workdir.mkdir()
            return SERVERS[name][1](ap, phone, workdir, rates, args.period)

        series = rounds.run_rounds(names, args.repeat, measure)
    best = {name: [float(b) for b, _ in values] for name, values in series.values.items()}
    cpu = {name: [c for _, c in values] for name, values in series.values.items()}
    print()
    print("\n".join(rounds.table("Highest offered rate with under 1% of exchanges lost (SARR/s):", "/s", best,
                                 digits=0)))
    print("\n".join(rounds.table("Server CPU per completed exchange at that rate (lower is better):", "us", cpu,
                                 digits=0, higher_is_better=False)))
    journal = rounds.journal_cost(best, "SARR/s")
    if journal:
        print(journal)
    print(f"finished with {rounds.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
