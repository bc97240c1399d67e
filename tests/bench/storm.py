"""The full-provisioning boot storm (``make bench-storm``; not a test): N simulated phones power on at once.

Each phone (``bootstrapd sim``) does DHCPv4, then downloads what the guide's algorithm asks for: ``<mac>.boot``
(missing), the common boot file, three CFG files (its model's common CFG, ``sip.cfg``, ``features.cfg``) and its
own ``<mac>.cfg`` rendered from ``{mac}.cfg.j2`` and an inventory of every phone. Over TFTP, then over HTTP:

- bootstrapd: DHCP + PnP + TFTP (+ HTTP), rendering the per-phone files itself; the phones learn the URL from PnP;
- the setup a user would build instead: dnsmasq (DHCP + TFTP, option 66 = the URL; no PnP, so the phones' PnP is
  off and they take option 66 at once) for TFTP, and dnsmasq (DHCP) + nginx (Debian nginx-light) for HTTP, serving
  the same files pre-rendered by bootstrapd's own renderer.

Printed: time until the last phone is provisioned, p50/p99 time to provisioned, the DHCP and download stages,
failures with their reasons, the ratio, bootstrapd's peak RSS, and the machine's load average before each run.
Every server runs alone in the same lab, one after the other; the simulated phones share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import rounds
from tests.bench.dhcp4 import peak_rss_kb
from tests.lab.appliance import Appliance
from tests.lab.netns import Lab, Node, lab
from tests.lab.simphones import add_sim_node, inventory, lab_macs, run_sims

SERVER = "10.77.0.1"
FIRST, LAST = "10.77.1.0", "10.77.8.255"  # 2,048 addresses in 10.77.0.0/16

BOOT = """#!version:1.0.0.1
[T46U]include:config "y000000000108.cfg"
[T48U]include:config "y000000000109.cfg"
[T54W]include:config "y000000000096.cfg"
include:config "sip.cfg"
include:config "features.cfg"
include:config "$MAC.cfg"
overwrite_mode = 1
"""
COMMON = {"y000000000108.cfg": "phone_setting.backlight_time = 60", "y000000000109.cfg": "linekey.1.type = 15",
          "y000000000096.cfg": "static.wifi.enable = 0"}
SIP = "account.1.sip_server.1.address = 10.77.0.1\naccount.1.sip_server.1.port = 5060\n" \
      "static.auto_provision.repeat.enable = 0"
FEATURES = "local_time.time_zone = +1\nlocal_time.ntp_server1 = 10.77.0.1\nfeatures.dnd.enable = 0"
TEMPLATE = """#!version:1.0.0.1
account.1.enable = 1
account.1.label = {{ phone.label }}
account.1.auth_name = {{ phone.extension }}
account.1.user_name = {{ phone.extension }}
account.1.password = {{ phone.password }}
"""

BOOTSTRAPD = """
[server]
interface = "eth1"
root = "{root}"
state_dir = "@STATE@"
url = "{scheme}://{{ipv4}}/"

[dhcp4]
enabled = true
range = "{first}-{last}"
lease_time = 3600

[pnp]
enabled = true

[tftp]
enabled = true

{http}

[provisioning]
inventory = "{inventory}"
"""


def make_tree(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "y000000000000.boot").write_text(BOOT)
    for name, body in {**COMMON, "sip.cfg": SIP, "features.cfg": FEATURES}.items():
        (root / name).write_text(f"#!version:1.0.0.1\n{body}\n")
    (root / "{mac}.cfg.j2").write_text(TEMPLATE)


def prerender(root: Path, phones_csv: Path, out: Path) -> int:
    """The tree as files, the per-phone ones rendered by bootstrapd's own renderer (what dnsmasq/nginx serve)."""
    from bootstrapd.provisioning.overlays import RenderedFiles

    shutil.copytree(root, out, ignore=shutil.ignore_patterns("*.j2"))
    rendered = RenderedFiles(str(root), phones_csv)
    rendered.refresh(force=True)
    count = 0
    for name in rendered.names():
        content = rendered.get(name)
        if content is not None:
            (out / name).write_bytes(content.data)
            count += 1
    return count


def tune(node: Node) -> None:
    """Room for one neighbour entry per phone (the kernel's default gc_thresh3 is 1,024), for every server alike."""
    for key, value in (("gc_thresh1", 4096), ("gc_thresh2", 8192), ("gc_thresh3", 16384)):
        node.run(["sysctl", "-qw", f"net.ipv4.neigh.default.{key}={value}"])


class Server:
    def __init__(self, node: Node, work: Path) -> None:
        self.node = node
        self.work = work
        self.procs: list[subprocess.Popen[Any]] = []
        self.app: Appliance | None = None

    def bootstrapd(self, scheme: str, root: Path, phones_csv: Path, extra: str = "") -> None:
        http = "[http]\nenabled = true\n" if scheme == "http" else ""
        text = BOOTSTRAPD.format(root=root, scheme=scheme, first=FIRST, last=LAST, http=http, inventory=phones_csv)
        text += extra
        self.app = Appliance(self.node, self.work, text)
        self.app.start(timeout=60)

    def dnsmasq(self, scheme: str, served: Path) -> None:
        log = open(self.work / "dnsmasq.log", "wb")
        tftp = ["--enable-tftp", f"--tftp-root={served}", "--tftp-max=5000"] if scheme == "tftp" else []
        self.procs.append(self.node.popen(
            ["prlimit", "--nofile=16384", "dnsmasq", "-d", "-C", "/dev/null", "--port=0", "--interface=eth1",
             "--bind-interfaces", f"--dhcp-range={FIRST},{LAST},255.255.0.0,1h",
             f"--dhcp-leasefile={self.work / 'dnsmasq.leases'}", "--dhcp-lease-max=100000", "--no-ping",
             f"--dhcp-option=66,{scheme}://{SERVER}/", f"--pid-file={self.work / 'dnsmasq.pid'}", *tftp],
            stdout=log, stderr=log))
        self.node.wait_udp_port(67, proc=self.procs[-1])
        if scheme == "http":
            conf = self.work / "nginx.conf"
            conf.write_text(f"""worker_processes auto;
pid {self.work / 'nginx.pid'};
error_log {self.work / 'nginx-error.log'};
events {{ worker_connections 8192; }}
http {{
  access_log off;
  sendfile on;
  keepalive_timeout 65;
  default_type application/octet-stream;
  client_body_temp_path {self.work}/nginx-body;
  proxy_temp_path {self.work}/nginx-proxy;
  fastcgi_temp_path {self.work}/nginx-fastcgi;
  uwsgi_temp_path {self.work}/nginx-uwsgi;
  scgi_temp_path {self.work}/nginx-scgi;
  server {{ listen {SERVER}:80 backlog=4096; root {served}; }}
}}
""")
            self.procs.append(self.node.popen(["nginx", "-c", str(conf), "-g", "daemon off;"],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 20
            while not self.node.run(["ss", "-Hltn", "sport = :80"]).stdout.strip():
                if time.monotonic() > deadline:
                    raise TimeoutError("nginx did not listen on port 80")
                time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU of every server process so far (bootstrapd's python, dnsmasq, nginx workers)."""
        roots = [self.app.proc.pid] if self.app is not None and self.app.proc is not None else []
        roots += [p.pid for p in self.procs]
        total = 0
        for pid in {c for r in roots for c in rounds.process_tree(r)}:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError):
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float | None:
        if self.app is None or self.app.proc is None:
            return None
        return peak_rss_kb(self.app.proc.pid) / 1024

    def stop(self) -> None:
        if self.app is not None:
            self.app.stop(timeout=30)
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def one_run(the_lab: Lab, base: Path, server_name: str, scheme: str, count: int, tree: Path, phones_csv: Path,
            served: Path, sim: Node, appliance: Node, processes: int, config: str = "") -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"{server_name}-{scheme}-", dir=base))
    work.chmod(0o755)
    server = Server(appliance, work)
    # Every run from the same neighbour state: a run leaves one entry per phone address (some in PROBE or DELAY as the
    # addresses leave the simulator's interface), which the next server's first replies would meet. (A bootstrapd
    # HTTP run right after a dnsmasq run once had 33 phones time out; not seen again in 12 runs since this flush.)
    for node in (appliance, sim):
        node.run(["ip", "neigh", "flush", "all"])
    load = os.getloadavg()
    try:
        if server_name == "bootstrapd":
            server.bootstrapd(scheme, tree, phones_csv, config)
            extra: list[str] = []
        else:
            server.dnsmasq(scheme, served)
            extra = ["--no-pnp"]  # no PnP responder: phones that wait for one would measure their own timeout
        # Every phone, then its address removed again (the sim does it), so runs start from the same state.
        # Server CPU is counted over the simulator's run only (not bootstrapd's start-up and rendering).
        before = server.cpu_seconds()
        runs, doc = run_sims(sim, work, processes, "--count", str(count), "--inventory", str(phones_csv),
                             "--timeout", "300", *extra, name="storm", timeout=900)
        rss = server.rss_mb()
        cpu = server.cpu_seconds() - before
    finally:
        server.stop()
    if not doc:
        return {"server": server_name, "scheme": scheme,
                "error": "".join(r.stdout + r.stderr for r in runs)[-2000:]}
    summary = doc["boots"][0]["summary"]
    return {"server": server_name, "scheme": scheme, "load_before": [round(x, 2) for x in load], "rss_mb": rss,
            "server_cpu": round(cpu, 2), "sim_cpu": doc["simulator_cpu_seconds_per_boot"][0],
            "sim_cpu_max": max(c[0] for c in doc.get("simulator_cpu_seconds_per_process", [[doc[
                "simulator_cpu_seconds_per_boot"][0]]])), "processes": processes, "summary": summary}


def bench(count: int, schemes: list[str], servers: list[str], processes: int, config: str = ""
          ) -> list[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="bench-storm-"))
    base.chmod(0o755)
    results = []
    try:
        tree = base / "tree"
        make_tree(tree)
        phones_csv = inventory(base / "phones.csv", lab_macs(count))
        served = base / "served"
        rendered = prerender(tree, phones_csv, served)
        print(f"tree: boot file, 3 common/shared CFG files, {rendered} rendered <mac>.cfg files", file=sys.stderr)
        with lab() as the_lab:
            appliance = the_lab.add_appliance(ipv4=f"{SERVER}/16")
            sim = add_sim_node(the_lab)
            tune(appliance)
            tune(sim)
            for scheme in schemes:
                for name in servers:
                    print(f"== {name} over {scheme}: {count} phones at once", file=sys.stderr, flush=True)
                    results.append(one_run(the_lab, base, name, scheme, count, tree, phones_csv, served, sim,
                                           appliance, processes, config))
                    print(json.dumps(results[-1].get("summary", results[-1]))[:600], file=sys.stderr, flush=True)
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    return results


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(results: list[dict[str, Any]], count: int) -> str:
    processes = results[0].get("processes", 1) if results else 1
    lines = [f"Boot storm: {count} simulated phones powered on at once, fully provisioned (DHCP, boot file, 3 CFG "
             f"files, a rendered <mac>.cfg); {processes} simulator process(es), phones' CPU: all of them (the busiest"
             f" one's share of the storm)", "",
             "| server | scheme | provisioned | last provisioned | p50 | p99 | DHCP p50 | download p50 | "
             "failures | server CPU | phones' CPU | peak RSS | load before |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by: dict[tuple[str, str], float] = {}
    for r in results:
        if "summary" not in r:
            lines.append(f"| {r['server']} | {r['scheme']} | {r['error'][:80]} | | | | | | | | | | |")
            continue
        s = r["summary"]
        t = s["time_to_provisioned"]
        stages = s["stages"]
        fails = "; ".join(f"{f['count']} x {f['reason']}" for f in s["failures"][:3]) or "0"
        rss = f"{r['rss_mb']:.0f} MB" if r.get("rss_mb") else "-"
        wall = s["last_provisioned"]
        # A simulator process uses one core at most: its busiest process near 100% of the storm sets the pace.
        busy = f" ({r['sim_cpu_max'] / wall:.0%})" if wall else ""
        lines.append(f"| {r['server']} | {r['scheme']} | {s['provisioned']}/{s['phones']} | "
                     f"{_s(s['last_provisioned'])} | {_s(t['p50'])} | {_s(t['p99'])} | "
                     f"{_s(stages.get('dhcp', {}).get('p50'))} | {_s(stages.get('download', {}).get('p50'))} | "
                     f"{fails} | {r['server_cpu']:.1f} s | {r['sim_cpu']:.1f} s{busy} | {rss} | "
                     f"{' '.join(str(x) for x in r['load_before'])} |")
        if s["last_provisioned"] is not None and s["provisioned"] == s["phones"]:
            by[(r["server"], r["scheme"])] = s["last_provisioned"]
    lines.append("")
    for scheme in ("tftp", "http"):
        ours, theirs = by.get(("bootstrapd", scheme)), by.get(("dnsmasq", scheme))
        if ours and theirs:
            anchor = "dnsmasq" if scheme == "tftp" else "dnsmasq + nginx"
            lines.append(f"{scheme.upper()}: bootstrapd provisions the last phone {theirs / ours:.1f}x sooner than "
                         f"{anchor} ({_s(ours)} vs {_s(theirs)})")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--schemes", default="tftp,http")
    parser.add_argument("--servers", default="bootstrapd,dnsmasq")
    parser.add_argument("--no-journal", action="store_true",
                        help="bootstrapd with [journal] enabled = false (what the phone journal costs in the storm)")
    parser.add_argument("--sim-processes", type=int, default=2,
                        help="simulator processes sharing the phones (one uses at most one core)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("make bench-storm needs root: it builds network namespaces")
    for tool in ("dnsmasq", "nginx", "prlimit"):
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: run `make peers`")
    config = "\n[journal]\nenabled = false\n" if args.no_journal else ""
    results = bench(args.phones, args.schemes.split(","), args.servers.split(","), args.sim_processes, config)
    print(json.dumps(results), file=sys.stderr)
    print(report(results, args.phones))


if __name__ == "__main__":
    main()
