"""TFTP benchmark (``make bench-tftp``; not a test): bootstrapd vs tftpd-hpa vs dnsmasq, and the lab's TFTP clients.

``python -m tests.bench.tftp`` builds a lab (network namespaces, nothing on the real network). The clients sit one
router hop from the appliance, each phone with its own source address in 10.88.0.0/16 (a local route in the phone
namespace: see ``Lab.route_clients``), and use a phone's retransmission timer (5 s, 5 tries: tftpclient.py). For each
round, and in each round for each server in turn (the order rotates, tests/bench/rounds.py), a fresh server per phase:

- boot storm: 1,000 phones each fetching three small files (400 B, 4 KB, 20 KB) at once, blksize 1428 (asyncio
  client); time to the last file, failures and their reasons, every byte checked;
- the same behind one address: 100 phones x 3 files at once, all from one source address (a branch office's NAT
  router), with bootstrapd's defaults (``max_per_client`` 8: the rest wait in the address's queue);
- firmware storm: 100 phones each downloading a 10 MB file at once, lock-step at blksize 1428 (curl, one per
  address, piped into sha256sum); aggregate MB/s and time to the last byte;
- one 50 MB file with atftp, lock-step (blksize 1428);
- the same windowed (windowsize 64, where the server supports it; the others answer lock-step);
- ``lockstep-same`` / ``lockstep-split`` (and ``windowed-same`` / ``windowed-split``): the same download with the
  server (every thread and child) and atftp pinned to one CPU, or to two different CPUs. On this two-core VM a
  lock-step block is a round trip between two processes, and where the scheduler puts them decides its speed three
  times over whatever the server does (same CPU: 35-47 MB/s for tftpd-hpa, different CPUs: 11-14, for every
  server alike: waking an idle virtual CPU costs about 100 us); an unpinned run is a draw between the two, which is
  why ``lockstep`` alone moved between 0.65x and 1.40x. The pinned phases compare servers placement for placement.

It prints every round, min/median/max, bootstrapd's ratio of medians, the server's CPU time per DATA block (a
forking server's children sampled while they live: ``_TreeCpu``), how long bootstrapd's event loop waited for a CPU
in the firmware storm, and bootstrapd's peak RSS. bootstrapd runs its ``[tftp]`` defaults except the settings in
``OVERRIDES`` (printed, and named in the README with the reason).

Sub-commands ``storm``, ``firmware``, ``probe``, ``stranger`` and ``client-error`` are the clients
(tests/bench/tftpclient.py) run inside the phone namespace by this benchmark and by ``tests/lab/test_tftp.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tests.bench import rounds
from tests.bench.tftpclient import PHONE_TIMEOUT, PHONE_TRIES, client_error, firmware, probe, rrq, storm, stranger_error

__all__ = ["rrq"]  # the lab tests build raw requests with it

SMALL = {"s400.cfg": 400, "s4k.cfg": 4096, "s20k.cfg": 20480}
BIG = 50 * 1000 * 1000
FIRMWARE = 10 * 1000 * 1000
BLKSIZE = 1428
STORM_CLIENTS, FIRMWARE_CLIENTS, NAT_CLIENTS = 1000, 100, 100
NAT_ADDRESS = "10.88.250.1"  # the one source address of the phones behind a NAT router
SERVER = "10.77.0.1"
CLIENTS = "10.88.0.0/16"
REPEAT = 3
PHASES = ("storm", "nat", "firmware", "lockstep", "lockstep-same", "lockstep-split", "windowed")
SINGLE = ("lockstep", "windowed")  # the 50 MB phases; a -same / -split suffix pins server and client (above)
PLACEMENTS = {"same": ("0", "0"), "split": ("0", "1")}  # (server CPU, client CPU)

# What the benchmark changes in bootstrapd's [tftp] defaults, per phase, and why (the README repeats it).
OVERRIDES: dict[str, dict[str, int | float]] = {
    # 1,000 phones x 3 files at once are 3,000 transfers: over the default cap of 2,000 concurrent transfers.
    "storm": {"max_transfers": 3 * STORM_CLIENTS},
}


def client_address(i: int) -> str:
    """The source address of simulated phone ``i`` (10.88.0.1, 10.88.0.2, ...)."""
    return str(IPv4Address("10.88.0.1") + i)


def make_files(root: Path, seed: int = 77) -> dict[str, str]:
    rng = random.Random(seed)
    sizes = {**SMALL, "big.bin": BIG, "fw.bin": FIRMWARE}
    digests = {}
    for name, size in sizes.items():
        data = rng.randbytes(size)
        (root / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def _single(phase: str) -> tuple[str, str | None]:
    """``lockstep-split`` -> ("lockstep", "split"); ``lockstep`` -> ("lockstep", None) (unpinned)."""
    base, _, placement = phase.partition("-")
    if base not in SINGLE or (placement and placement not in PLACEMENTS):
        raise SystemExit(f"unknown phase {phase!r}")
    return base, placement or None


def _pin(pid: int, cpu: str) -> None:
    """Pin every thread of ``pid`` and of its children (bootstrapd's transfer workers) to ``cpu``; children forked
    later inherit it (tftpd-hpa's transfers)."""
    for each in rounds.process_tree(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(each)], check=True, stdout=subprocess.DEVNULL)


def _atftp(phone: Any, host: str, name: str, dest: Path, options: dict[str, str], cpu: str | None = None) -> float:
    argv = ["atftp", "--get", "-r", name, "-l", str(dest)]
    for key, value in options.items():
        argv += ["--option", f"{key} {value}"]
    if cpu is not None:
        argv = ["taskset", "-c", cpu, *argv]
    start = time.monotonic()
    result = phone.run([*argv, host], timeout=300)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"atftp failed: {result.stderr}")
    return elapsed


class _TreeCpu:
    """The CPU time of a server and every process it forks, sampled while they live: tftpd-hpa ignores SIGCHLD, so
    the kernel keeps no CPU time of its reaped children. A child that lives less than one interval (0.25 s) is
    missed, so the figure is for the long transfers (firmware, 50 MB); it runs for every server alike."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, float] = {}
        self.base = {p: rounds.cpu_seconds(p) for p in rounds.process_tree(pid)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for p in rounds.process_tree(self.pid):
            self.seen[p] = max(self.seen.get(p, 0.0), rounds.cpu_seconds(p))

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def total(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(cpu - self.base.get(p, 0.0) for p, cpu in self.seen.items())


class _Server:
    """One server under test, started fresh for each phase (a storm's leftovers must not slow the next phase)."""

    def __init__(self, kind: str, ap: Any, work: Path, phase: str) -> None:
        from tests.lab.appliance import BASE_CONFIG, Appliance

        root = work / "root"
        self.app: Any = None
        self.log_tail = ""
        if kind in ("bootstrapd", "bootstrapd-nojournal", "bootstrapd-nice", "bootstrapd-loop"):
            state = work / f"state-{phase}"
            extra = "".join(f"{key} = {value}\n" for key, value in OVERRIDES.get(phase, {}).items())
            if kind == "bootstrapd-loop":  # every transfer on the daemon's loop: no transfer workers
                extra += "workers = 0\n"
            config = BASE_CONFIG.format(root=root, state=state) + "\n[tftp]\nenabled = true\n" + extra
            if kind == "bootstrapd-nojournal":  # the journal's cost: the same server with [journal] off
                config += "\n[journal]\nenabled = false\n"
            self.app = Appliance(ap, work, config)
            self.app.start()
            self.proc = self.app.proc
            if kind == "bootstrapd-nice":
                # The same server with its event loop at nice -10 (about nine times the CPU share of a nice-0
                # process): how much of a storm's time is the run queue's, with 200 client processes on the cores.
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, -10)
        elif kind == "tftpd-hpa":
            self.proc = ap.popen(["in.tftpd", "-L", "-s", str(root)])
            ap.wait_udp_port(69)
        else:
            # dnsmasq's --tftp-max defaults to 50 concurrent transfers and is capped by its descriptor limit: raise
            # both (bootstrapd raises its own descriptor limit).
            self.proc = ap.popen(["prlimit", "--nofile=16384", "dnsmasq", "-d", "--port=0", "--enable-tftp",
                                  f"--tftp-root={root}", "--interface=eth1", "--tftp-max=5000",
                                  "--conf-file=/dev/null", f"--pid-file={work / 'dnsmasq.pid'}"])
            ap.wait_udp_port(69)
        self.sched0 = rounds.schedstat(self.proc.pid)
        self.children0 = {p: rounds.schedstat(p)[1] for p in rounds.process_tree(self.proc.pid)[1:]}
        self.tree = _TreeCpu(self.proc.pid)

    def waited(self) -> float:
        """Seconds the server's main thread (bootstrapd's event loop) was runnable but waiting for a CPU."""
        return rounds.schedstat(self.proc.pid)[1] - self.sched0[1]

    def children_waited(self) -> float:
        """The same for the server's child processes (bootstrapd's transfer workers: their main threads), summed."""
        return sum(rounds.schedstat(p)[1] - self.children0.get(p, 0.0) for p in rounds.process_tree(self.proc.pid)[1:])

    def vmhwm_kb(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))

    def stop(self) -> None:
        self.tree.total()  # (ends its sampling thread)
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


def _client(phone: Any, *args: str, timeout: float) -> dict[str, Any]:
    out = phone.run([sys.executable, "-m", "tests.bench.tftp", *args], timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _phase(kind: str, phase: str, ap: Any, phone: Any, work: Path, digests: dict[str, str],
           clients: int) -> dict[str, Any]:
    server = _Server(kind, ap, work, phase)
    result: dict[str, Any] = {}
    try:
        if phase in ("storm", "nat"):
            small = {n: digests[n] for n in SMALL}
            sources = [client_address(i) for i in range(clients)] if phase == "storm" else [NAT_ADDRESS] * NAT_CLIENTS
            result = _client(phone, "storm", "--host", SERVER, "--clients", str(len(sources)),
                             "--files", json.dumps(small), "--options", json.dumps({"blksize": str(BLKSIZE)}),
                             "--limit", "240", "--timeout", str(PHONE_TIMEOUT), "--tries", str(PHONE_TRIES),
                             "--sources", json.dumps(sources), timeout=300)
        elif phase == "firmware":
            sources = [client_address(STORM_CLIENTS + i) for i in range(FIRMWARE_CLIENTS)]
            result = _client(phone, "firmware", "--host", SERVER, "--file", "fw.bin", "--sha256", digests["fw.bin"],
                             "--blksize", str(BLKSIZE), "--sources", json.dumps(sources), "--limit", "400",
                             timeout=450)
            result["blocks"] = result["ok"] * (FIRMWARE // BLKSIZE + 1)
        else:
            base, placement = _single(phase)
            options = {"blksize": str(BLKSIZE)} | ({"windowsize": "64"} if base == "windowed" else {})
            client_cpu = None
            if placement is not None:
                server_cpu, client_cpu = PLACEMENTS[placement]
                _pin(server.proc.pid, server_cpu)
            dest = work / "big.out"
            try:
                seconds = _atftp(phone, SERVER, "big.bin", dest, options, client_cpu)
                ok = hashlib.sha256(dest.read_bytes()).hexdigest() == digests["big.bin"]
                result = {"seconds": seconds, "ok": ok, "blocks": BIG // BLKSIZE + 1}
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                result = {"seconds": float("nan"), "ok": False, "error": str(exc)[-300:], "blocks": 0}
            finally:
                dest.unlink(missing_ok=True)
        # tftpd-hpa ignores SIGCHLD, so the kernel keeps no CPU time of its forked children, and bootstrapd's
        # transfer workers are reaped only when it stops: every server's process tree is sampled while it lives.
        result["cpu_s"] = server.tree.total()
        if kind.startswith("bootstrapd"):
            result["vmhwm_kb"] = server.vmhwm_kb()
            result["runq_s"] = server.waited()
            result["workers_runq_s"] = server.children_waited()
    finally:
        server.stop()
        result["log"] = server.log_tail
    return result


def bench(clients: int, servers: list[str], phases: list[str], repeat: int) -> dict[str, dict[str, list[Any]]]:
    from tests.lab.netns import lab

    for tool in ("atftp", "curl", "in.tftpd", "dnsmasq"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (make peers)")
    results: dict[str, dict[str, list[Any]]] = {phase: {} for phase in phases}
    with tempfile.TemporaryDirectory(prefix="bench-tftp-") as tmp, lab() as the_lab:
        work = Path(tmp)
        work.chmod(0o755)
        (work / "root").mkdir()
        digests = make_files(work / "root")
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.10/24")
        the_lab.route_clients(phone, CLIENTS, ap)
        for round_, kind in rounds.interleaved(servers, repeat):
            for phase in phases:
                print(f"-- round {round_ + 1}/{repeat}: {kind} {phase}", file=sys.stderr, flush=True)
                results[phase].setdefault(kind, []).append(_phase(kind, phase, ap, phone, work, digests, clients))
    return results


def _per_block_us(r: dict[str, Any]) -> float:
    return 1e6 * r["cpu_s"] / r["blocks"] if r.get("blocks") and r["cpu_s"] > 0 else float("nan")


def report(results: dict[str, dict[str, list[Any]]], clients: int, repeat: int) -> str:
    lines = [f"TFTP, {repeat} rounds, servers interleaved; clients with a phone's timer ({PHONE_TIMEOUT:.0f} s, "
             f"{PHONE_TRIES} tries), each from its own address; bootstrapd [tftp] defaults except "
             f"{json.dumps(OVERRIDES)}", ""]
    nan = float("nan")
    failures: list[str] = []
    for phase, title in (("storm", f"Boot storm, {clients} phones x 3 files (400 B, 4 KB, 20 KB) at once"),
                         ("nat", f"Behind one address, {NAT_CLIENTS} phones x 3 files at once from one source address "
                          "(bootstrapd: defaults)")):
        if phase not in results:
            continue
        runs = results[phase]
        total = 3 * (clients if phase == "storm" else NAT_CLIENTS)
        lines += rounds.table(f"{title}: time to the last file (s, lower is better)", "s",
                              {k: [r["last_ok_s"] for r in v] for k, v in runs.items()},
                              digits=2, higher_is_better=False)
        lines += rounds.table("  failed transfers", "", {k: [float(r["failed"]) for r in v] for k, v in runs.items()},
                              digits=0, higher_is_better=False)
        lines += rounds.table("  files/s (files served / time to the last file)", "files/s",
                              {k: [r["ok"] / r["last_ok_s"] if r["last_ok_s"] else nan for r in v]
                               for k, v in runs.items()}, digits=0)
        lines += rounds.table("  transfers that waited a retransmission timeout", "",
                              {k: [float(r["transfers_retransmitted"]) for r in v] for k, v in runs.items()},
                              digits=0, higher_is_better=False)
        for kind, v in runs.items():
            failures += [f"  {phase} {kind} round {i + 1}: {r['failed']} of {total} failed: {r['errors']}"
                         for i, r in enumerate(v) if r["failed"]]
        lines.append("")
    if "firmware" in results:
        runs = results["firmware"]
        size = FIRMWARE * FIRMWARE_CLIENTS / 1e6
        lines += rounds.table(f"Firmware storm, {FIRMWARE_CLIENTS} phones x 10 MB lock-step (blksize {BLKSIZE}) at "
                              "once: aggregate MB/s to the last byte", "MB/s",
                              {k: [size * r["ok"] / FIRMWARE_CLIENTS / r["last_ok_s"] if r["ok"] else nan
                                   for r in v] for k, v in runs.items()})
        lines += rounds.table("  time to the last byte (s)", "s",
                              {k: [r["last_ok_s"] if r["ok"] else nan for r in v] for k, v in runs.items()},
                              digits=1, higher_is_better=False)
        lines += rounds.table("  failed downloads", "", {k: [float(r["failed"]) for r in v] for k, v in runs.items()},
                              digits=0, higher_is_better=False)
        lines += rounds.table("  server CPU per DATA block (us)", "us",
                              {k: [_per_block_us(r) for r in v] for k, v in runs.items()}, digits=1,
                              higher_is_better=False)
        lines += rounds.table("  bootstrapd's event loop: seconds runnable but waiting for a CPU (runqueue)", "s",
                              {k: [r["runq_s"] for r in v] for k, v in runs.items() if k.startswith("bootstrapd")},
                              digits=1, higher_is_better=False)
        lines += rounds.table("  bootstrapd's transfer workers: the same, summed over the workers", "s",
                              {k: [r.get("workers_runq_s", 0.0) for r in v] for k, v in runs.items()
                               if k.startswith("bootstrapd")}, digits=1, higher_is_better=False)
        for kind, v in runs.items():
            failures += [f"  firmware {kind} round {i + 1}: {r['failed']} of {FIRMWARE_CLIENTS} failed: {r['errors']}"
                         for i, r in enumerate(v) if r["failed"]]
        lines.append("")
    where = {"": "", "-same": ", server and client pinned to one CPU",
             "-split": ", server and client pinned to different CPUs"}
    singles = [(base + suffix, title + placed) for base, title in (
        ("lockstep", f"50 MB lock-step (atftp, blksize {BLKSIZE}"),
        ("windowed", f"50 MB windowsize 64 (atftp, blksize {BLKSIZE}; tftpd-hpa and dnsmasq answer lock-step"))
        for suffix, placed in where.items()]
    for phase, title in ((phase, f"{title})") for phase, title in singles):
        if phase not in results:
            continue
        runs = results[phase]
        lines += rounds.table(f"{title}: MB/s", "MB/s",
                              {k: [BIG / r["seconds"] / 1e6 if r["ok"] else nan for r in v] for k, v in runs.items()})
        lines += rounds.table("  server CPU per DATA block (us)", "us",
                              {k: [_per_block_us(r) for r in v] for k, v in runs.items()}, digits=1,
                              higher_is_better=False)
        for kind, v in runs.items():
            failures += [f"  {phase} {kind} round {i + 1}: {r.get('error', 'bad content')}"
                         for i, r in enumerate(v) if not r["ok"]]
        lines.append("")
    rss = [r["vmhwm_kb"] / 1024 for phase in results.values() for r in phase.get("bootstrapd", [])]
    if rss:
        lines.append(f"bootstrapd peak RSS (VmHWM), largest of every phase: {max(rss):.1f} MiB")
    lines.append("Failures (a figure with failures counts only what was served):" if failures else "No failures.")
    lines += failures
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
    s.add_argument("--timeout", type=float, default=1.0, help="seconds before a client retransmits")
    s.add_argument("--tries", type=int, default=6, help="sends of the same packet before a client gives up")
    s.add_argument("--sources", default="", help="JSON list: one source address per client")
    f = sub.add_parser("firmware")
    f.add_argument("--host", required=True)
    f.add_argument("--file", required=True)
    f.add_argument("--sha256", required=True)
    f.add_argument("--blksize", type=int, default=BLKSIZE)
    f.add_argument("--sources", required=True, help="JSON list: one client (curl) per source address")
    f.add_argument("--limit", type=float, default=400.0)
    p = sub.add_parser("probe")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=69)
    p.add_argument("--cases", required=True, help="JSON list of {name, hex, wait}")
    st = sub.add_parser("stranger")
    st.add_argument("--host", required=True)
    st.add_argument("--port", type=int, default=69)
    st.add_argument("--file", required=True)
    ce = sub.add_parser("client-error")
    ce.add_argument("--host", required=True)
    ce.add_argument("--port", type=int, default=69)
    ce.add_argument("--file", required=True)
    ce.add_argument("--length", type=int, required=True, help="bytes of the ERROR's message")
    b = sub.add_parser("bench")
    b.add_argument("--clients", type=int, default=STORM_CLIENTS)
    b.add_argument("--servers", default="bootstrapd,tftpd-hpa,dnsmasq",
                   help="bootstrapd-nojournal is bootstrapd with [journal] off (the journal's cost), bootstrapd-nice "
                        "its event loop at nice -10 (the run queue's share), bootstrapd-loop with [tftp] workers = 0 "
                        "(every transfer on its one event loop)")
    b.add_argument("--phases", default=",".join(PHASES))
    b.add_argument("--repeat", type=int, default=REPEAT)
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a bootstrapd [tftp] setting for every phase (to measure one: printed in the title)")
    args = parser.parse_args()
    if args.command == "storm":
        sources = json.loads(args.sources) if args.sources else None
        result = asyncio.run(storm(args.host, args.port, json.loads(args.files), args.clients,
                                   json.loads(args.options), args.limit, args.timeout, args.tries, sources))
        print(json.dumps(result))
    elif args.command == "firmware":
        print(json.dumps(firmware(args.host, args.file, args.sha256, json.loads(args.sources), args.blksize,
                                  args.limit)))
    elif args.command == "probe":
        print(json.dumps(probe(args.host, args.port, json.loads(args.cases))))
    elif args.command == "stranger":
        print(json.dumps(stranger_error(args.host, args.port, args.file)))
    elif args.command == "client-error":
        print(json.dumps(client_error(args.host, args.port, args.file, args.length)))
    else:
        if os.geteuid() != 0:
            raise SystemExit("the benchmark needs root (network namespaces)")
        clients = getattr(args, "clients", STORM_CLIENTS)
        repeat = getattr(args, "repeat", REPEAT)
        servers = getattr(args, "servers", "bootstrapd,tftpd-hpa,dnsmasq").split(",")
        phases = getattr(args, "phases", ",".join(PHASES)).split(",")
        for phase in phases:
            if phase not in ("storm", "nat", "firmware"):
                _single(phase)  # (exits on an unknown phase before any lab is built)
        for setting in getattr(args, "set", []):
            key, _, value = setting.partition("=")
            for phase in PHASES:
                OVERRIDES.setdefault(phase, {})[key.strip()] = float(value) if "." in value else int(value)
        print(f"started with {rounds.load_average()}", flush=True)
        results = bench(clients, servers, phases, repeat)
        print(json.dumps(results), file=sys.stderr)
        print(report(results, clients, repeat))
        print(f"finished with {rounds.load_average()}")


if __name__ == "__main__":
    main()
