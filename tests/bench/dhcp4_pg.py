"""DHCPv4 on PostgreSQL (``make bench-dhcp4-pg``; not a test): one and two bootstrapd appliances beside kea-dhcp4.

Every server keeps its leases in the same PostgreSQL (started here: initdb in a temporary folder, unix socket, fsync
on), a fresh database for every run: bootstrapd with ``[store] backend = "postgresql"`` (schema of ``db init``), Kea
with ``lease-database`` type postgresql (schema of ``kea-admin db-init pgsql``; Debian's kea-dhcp4-server links the
PostgreSQL backend itself, in kea-common's libkea-pgsql, no other package), single-threaded (Kea's default without
``multi-threading``). perfdhcp (relays in phone namespaces) offers rising rates for a few seconds each; a figure is
the highest offered rate answered with under 1% of exchanges lost. "two" runs two appliances on one bridge, each
fed half the rate by its own perfdhcp, sharing one range and one database; their lost commits (an address the other
appliance took first) are printed as the collision rate.

Bounded: at most ``len(RATES)`` runs of ``PERIOD`` seconds per configuration.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.dhcp4 import FIRST, LAST, PERIOD, SERVER, Running, perfdhcp_run, run_kea
from tests.conftest import init_schema
from tests.lab.appliance import Appliance
from tests.lab.netns import Node, lab
from tests.pgserver import PostgresServer

RATES = [250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000]
SECOND, CLIENT2 = "10.78.0.3", "10.78.0.4"

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
66 = "tftp://{{ipv4}}/"
[store]
backend = "postgresql"
dsn = "@DSN@"
"""


def kea_config(workdir: Path, server: PostgresServer, database: str) -> str:
    return json.dumps({"Dhcp4": {
        "interfaces-config": {"interfaces": ["eth1"], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "postgresql", "name": database, "user": server.user,
                           "host": str(server.socket_dir), "port": server.port},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": "10.78.0.0/16", "pools": [{"pool": f"{FIRST} - {LAST}"}],
                     "option-data": [{"name": "tftp-server-name", "data": f"tftp://{SERVER}/"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "stderr"}]}],
    }})


def kea_schema(server: PostgresServer, database: str) -> None:
    result = subprocess.run(["kea-admin", "db-init", "pgsql", "-u", server.user, "-n", database,
                             "-h", str(server.socket_dir), "-P", str(server.port)],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "PGPASSWORD": ""})
    if result.returncode != 0:
        raise RuntimeError(f"kea-admin db-init pgsql failed: {result.stdout}{result.stderr}")


def start_bootstrapd(node: Node, workdir: Path, dsn: str) -> tuple[Running, Appliance]:
    app = Appliance(node, workdir, BOOTSTRAPD.replace("@DSN@", dsn))
    app.start()
    assert app.proc

    def stop() -> None:
        app.stop()

    return Running(stop, app.proc.pid), app


def start_kea(node: Node, workdir: Path, server: PostgresServer, database: str) -> Running:
    return run_kea(node, workdir, kea_config(workdir, server, database))


def _counters(app: Appliance) -> dict[str, int]:
    found = re.findall(r"stopping counters=(\{.*\})", app.log())
    return dict(ast.literal_eval(found[-1])) if found else {}


def _report(name: str, rate: int, result: dict[str, float], extra: str = "") -> bool:
    ok = result["drop_ratio"] < 0.01
    print(f"  {name:14} offered {rate:6}/s  completed {result['completed']:7.0f}  drops "
          f"{result['drop_ratio'] * 100:6.2f}%  {'ok' if ok else 'FAIL'}{extra}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--servers", default="bootstrapd,two,kea")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    for tool in ("perfdhcp", "kea-dhcp4", "kea-admin"):
        if not shutil.which(tool):
            print(f"missing {tool}: run `make peers`", file=sys.stderr)
            return 2
    load = os.getloadavg()
    print(f"machine load before the runs: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs): "
          "figures from a busy machine are lower bounds; run again on a quiet one")
    pg = PostgresServer()
    base = Path(tempfile.mkdtemp(prefix="bench-dhcp4-pg-"))
    base.chmod(0o755)
    best: dict[str, int] = {}
    collisions: dict[int, str] = {}
    try:
        with lab() as the_lab:
            first = the_lab.add_appliance(ipv4=f"{SERVER}/16", ipv6=None)
            second = the_lab.add_appliance(ipv4=f"{SECOND}/16", ipv6=None, mac="02:77:00:00:00:02", suffix="ap2")
            client = the_lab.add_phone(mac="02:30:00:00:00:01", ipv4="10.78.0.2/16")
            client2 = the_lab.add_phone(mac="02:30:00:00:00:02", ipv4=f"{CLIENT2}/16")
            print(f"DHCPv4 DORA on PostgreSQL {pg.bin.parent.name}, perfdhcp relay, {PERIOD} s per rate, "
                  "pass = under 1% of exchanges lost")
            for name in args.servers.split(","):
                best[name] = 0
                for rate in rates:
                    database = pg.create_database(name[:4])
                    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-{rate}-", dir=base))
                    workdir.chmod(0o755)
                    extra = ""
                    if name == "kea":
                        kea_schema(pg, database)
                        server = start_kea(first, workdir, pg, database)
                        try:
                            result = perfdhcp_run(client, rate)
                        finally:
                            server.stop()
                    else:
                        init_schema(pg.dsn(database))
                        nodes = [first] if name == "bootstrapd" else [first, second]
                        started = []
                        for n, node in enumerate(nodes):
                            folder = workdir / f"ap{n}"
                            folder.mkdir(mode=0o755)
                            started.append(start_bootstrapd(node, folder, pg.dsn(database)))
                        try:
                            if name == "bootstrapd":
                                result = perfdhcp_run(client, rate)
                            else:
                                result = _two(client, client2, rate)
                        finally:
                            for running, _ in started:
                                running.stop()
                        if name == "two":
                            counters = [_counters(app) for _, app in started]
                            lost = sum(c.get("dhcp4.lease_lost", 0) for c in counters)
                            acks = sum(c.get("dhcp4.ack", 0) for c in counters)
                            collisions[rate] = f"{lost}/{acks + lost} = {lost / max(1, acks + lost):.3%}"
                            extra = f"  collisions {collisions[rate]}"
                    pg.drop_database(database)
                    if not _report(name, rate, result, extra):
                        break
                    best[name] = rate
    finally:
        shutil.rmtree(base, ignore_errors=True)
        pg.close()
    print("\nHighest rate with under 1% drops (4-way exchanges/s offered), leases in PostgreSQL:")
    labels = {"bootstrapd": "bootstrapd, one appliance", "two": "bootstrapd, two appliances",
              "kea": "kea-dhcp4 (single-threaded)"}
    for name, rate in best.items():
        print(f"  {labels.get(name, name):30} {rate:6}")
    if best.get("kea"):
        for name in ("bootstrapd", "two"):
            if name in best:
                print(f"  {labels[name]} / kea: {best[name] / best['kea']:.2f}x")
    if best.get("bootstrapd") and "two" in best:
        print(f"  two appliances / one: {best['two'] / best['bootstrapd']:.2f}x")
    if collisions:
        print("  collision rate of the two appliances (commits lost to the other / all): "
              + ", ".join(f"{rate}/s: {text}" for rate, text in collisions.items()))
    print(f"machine load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def _two(client: Node, client2: Node, rate: int) -> dict[str, Any]:
    """Half the rate to each appliance, at once, from two relays; the exchanges of both counted together."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(perfdhcp_run, client, rate // 2, None, server=SERVER,
                            extra=("-b", "mac=02:40:00:00:00:00")),
                pool.submit(perfdhcp_run, client2, rate - rate // 2, None, server=SECOND,
                            extra=("-b", "mac=02:50:00:00:00:00"))]
        a, b = (r.result() for r in runs)
    sent, completed = a["sent"] + b["sent"], a["completed"] + b["completed"]
    return {"sent": sent, "completed": completed, "drop_ratio": 1 - completed / sent if sent else 1.0,
            "achieved": completed / PERIOD}


if __name__ == "__main__":
    raise SystemExit(main())
