"""``bootstrapd sim`` in the lab: a namespace for the simulated phones, running the command, reading its JSON; and what
the tests compare it with (``explain`` for each phone, the daemon's own events and leases)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
