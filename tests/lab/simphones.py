"""``bootstrapd sim`` in the lab: a namespace for the simulated phones, running the command, reading its JSON; and what
the tests compare it with (``explain`` for each phone, the daemon's own events and leases)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.lab.netns import Lab, Node

SIM_MAC = "02:00:00:00:5e:01"  # the simulator's own interface; every phone brings its own MAC


def add_sim_node(lab: Lab) -> Node:
    return lab.add_phone(mac=SIM_MAC)


def run_sim(node: Node, workdir: Path, *args: str, name: str = "sim", timeout: float = 600
            ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``bootstrapd sim`` on the node's interface; returns the process and its ``--json`` document."""
    out = workdir / f"{name}.json"
    out.unlink(missing_ok=True)
    result = node.run([sys.executable, "-m", "bootstrapd", "sim", "--interface", node.ifname, "--plain",
                       "--json", str(out), *args], timeout=timeout)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    return result, doc


def run_sims(node: Node, workdir: Path, processes: int, *args: str, name: str = "sim", timeout: float = 600
             ) -> tuple[list[subprocess.CompletedProcess[str]], dict[str, Any]]:
    """``bootstrapd sim`` as ``processes`` processes at once (``--slice i/K``), powering on together
    (``--start-at``), their records merged into one document with one summary per boot (``sim.report.summary``).
    One process cannot use more than one core: several keep the simulator from being the storm's bottleneck."""
    if processes == 1:
        result, doc = run_sim(node, workdir, *args, name=name, timeout=timeout)
        return [result], doc
    from bootstrapd.sim.report import summary

    start = time.monotonic() + 3.0  # every process is up by then (imports, sockets), or starts late: see below
    procs = []
    for index in range(processes):
        out = workdir / f"{name}-{index}.json"
        out.unlink(missing_ok=True)
        procs.append((out, node.popen(
            [sys.executable, "-m", "bootstrapd", "sim", "--interface", node.ifname, "--plain", "--json", str(out),
             "--slice", f"{index}/{processes}", "--start-at", f"{start:.6f}", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    results = []
    docs = []
    for out, proc in procs:
        stdout, stderr = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
        docs.append(json.loads(out.read_text()) if out.exists() else {})
    if not all(docs):
        return results, {}
    merged: dict[str, Any] = {"boots": [], "processes": processes,
                              "simulator_cpu_seconds_per_process": [d["simulator_cpu_seconds_per_boot"] for d in docs]}
    for boot in range(len(docs[0]["boots"])):
        first = min(d["started"][boot] for d in docs)
        records = []
        for doc in docs:  # a process that powered on late: its times shifted onto the earliest power-on
            late = doc["started"][boot] - first
            for record in doc["boots"][boot]["phones"]:
                record["timeline"] = {k: round(v + late, 6) for k, v in record["timeline"].items()}
                records.append(record)
        merged["boots"].append({"summary": summary(records), "phones": records})
    merged["simulator_cpu_seconds_per_boot"] = [round(sum(d["simulator_cpu_seconds_per_boot"][b] for d in docs), 3)
                                                for b in range(len(docs[0]["boots"]))]
    return results, merged


def inventory(path: Path, macs_models: list[tuple[str, str]]) -> Path:
    """An inventory the example tree's {mac}.cfg.j2 renders from (extension, label, password, site)."""
    lines = ["mac,model,extension,label,password,site"]
    for index, (mac, model) in enumerate(macs_models):
        lines.append(f"{mac},{model},{2000 + index},Desk {index},pw-Secret-{index},{'floor3' if index % 2 else 'hq'}")
    path.write_text("\n".join(lines) + "\n")
    return path


def lab_macs(count: int, models: tuple[str, ...] = ("T46U", "T54W", "T48U")) -> list[tuple[str, str]]:
    ouis = ("001565", "805ec0", "249ad8", "44dbd2")
    return [(f"{ouis[i % len(ouis)]}{0x500000 + i:06x}", models[i % len(models)]) for i in range(count)]


def explained(config: Path, phones: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """MAC -> every final parameter value as ``bootstrapd explain --show-secrets`` computes it."""
    from bootstrapd import config as configuration
    from bootstrapd.provisioning.explain import explain
    from bootstrapd.provisioning.models import table
    from bootstrapd.provisioning.tree import Provisioning

    settings = configuration.load(str(config))
    provisioning = Provisioning(settings, create_keys=False)
    provisioning.rendered.refresh(force=True)
    out: dict[str, dict[str, str]] = {}
    for phone in phones:
        model = table().find(phone["model"])
        assert model is not None
        listed = provisioning.rendered.inventory.find(phone["mac"])
        result = explain(settings, phone["mac"], model, inventory=listed, show_secrets=True,
                         provisioning=provisioning)
        out[phone["mac"]] = {k: v["value"] for k, v in result.as_json()["parameters"].items()}
    return out


def events(log: str, kind: str) -> list[dict[str, Any]]:
    """The daemon's events of one kind from its JSON log (``run --log-format json --debug``)."""
    out = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == kind:
            out.append(record)
    return out


def _ok(kind: str, event: dict[str, Any]) -> bool:
    if kind == "tftp.transfer":
        return bool(event["outcome"] == "ok")
    if kind == "http.request":
        return bool(200 <= int(event["status"]) < 300)
    return bool(event["outcome"] in ("served", "stored"))


def served(log: str) -> Counter[tuple[str, str, str, bool]]:
    """What the daemon says it served or stored, per protocol: (scheme, client address, file, succeeded)."""
    out: Counter[tuple[str, str, str, bool]] = Counter()
    for kind, scheme, name in (("tftp.transfer", "tftp", "file"), ("http.request", "http", "path"),
                               ("ftp.transfer", "ftp", "file")):
        for event in events(log, kind):
            shown = "https" if kind == "http.request" and event["tls"] else scheme
            out[(shown, event["client"], unquote(event[name]).lstrip("/"), _ok(kind, event))] += 1
    return out


def fetched(*boots: list[dict[str, Any]]) -> Counter[tuple[str, str, str, bool]]:
    """What the phones say they fetched or uploaded, in the same form as :func:`served` (IPv4 URLs)."""
    out: Counter[tuple[str, str, str, bool]] = Counter()
    for records in boots:
        for record in records:
            for transfer in record["transfers"]:
                parts = urlsplit(transfer["url"])
                out[(parts.scheme, record["address"], unquote(parts.path).lstrip("/"), transfer["status"] == "ok")] += 1
    return out


def retried(*boots: list[dict[str, Any]]) -> bool:
    """Whether any phone sent a request again (a retransmitted request may start a second transfer on the server)."""
    return any(t["retries"] for records in boots for r in records for t in r["transfers"])


def counters(log: str) -> tuple[dict[str, int], str]:
    """The daemon's event counters as it logged them when it stopped, and the log up to that line (events emitted
    while stopping come after it: a TFTP upload's event waits for the end of its 10 s dally for a lost final ACK)."""
    lines = log.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line.startswith("{") and '"counters"' in line:
            record = json.loads(line)
            if record.get("message") == "stopping":
                return dict(record["counters"]), "\n".join(lines[:index]) + "\n"
    raise AssertionError("no 'stopping' record with counters in the daemon's log")
