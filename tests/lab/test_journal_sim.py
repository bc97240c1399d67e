"""The journal with simulated phones (``bootstrapd sim``): "done" is the provisioning model's download list.

The simulated phones say their model in their PnP SUBSCRIBE, so the journal asks the model (``explain``) which files
each one downloads: a phone is done when every one of them was served, and stuck with the reason when one is missing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netns import Lab
from tests.lab.simphones import add_sim_node, lab_macs, run_sim
from tests.lab.test_sim import FAILING_BOOT, TREE, start

# The journal is in the store: these run once per store backend (SQLite, the session's PostgreSQL).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("store_backend")]


def _status(app: Any) -> dict[str, Any]:
    result = app.cli("status", "--config", str(app.config), "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _wait_for(app: Any, count: int) -> dict[str, Any]:
    """Until ``count`` phones are in the journal, each with the model's download list (asked for off the loop)."""
    deadline = time.monotonic() + 90
    while True:
        data = _status(app)
        settled = len(data["phones"]) >= count and all(p["expected"] is not None for p in data["phones"])
        if settled or time.monotonic() > deadline:
            return data
        time.sleep(0.5)


def test_simulated_phones_are_done_by_the_models_download_list(lab: Lab, workdir: Path) -> None:
    phones = lab_macs(12)
    app = start(lab, workdir, phones)
    sim = add_sim_node(lab)
    result, doc = run_sim(sim, workdir, "--count", "12", "--inventory", str(workdir / "phones.csv"),
                          "--timeout", "300")
    try:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        data = _wait_for(app, 12)
        records = {r["mac"]: r for r in doc["boots"][0]["phones"]}
        by_mac = {p["mac"].replace(":", ""): p for p in data["phones"]}
        assert set(by_mac) == set(records)
        for mac, phone in by_mac.items():
            assert phone["stage"] == "done", phone
            assert phone["model"] and phone["expected"], phone
            # The model's list is what the phone fetched and was served (names of the tree, in order).
            fetched = [t["url"].split("://", 1)[1].split("/", 1)[1] for t in records[mac]["transfers"]
                       if t["status"] == "ok"]
            assert phone["expected"] == [name for name in fetched if name in phone["expected"]], (phone, fetched)
            assert set(phone["expected"]) <= set(phone["served"])
        assert data["summary"]["done"] == 12
        journey = json.loads(app.cli("status", "--config", str(app.config), "--json", "--mac",
                                     next(iter(by_mac))).stdout)
        protos = [s["proto"] for s in journey["steps"]]
        assert protos[:2] == ["dhcp4", "dhcp4"] and "pnp" in protos and protos.count("tftp") >= 4, protos
    finally:
        app.stop()


def test_a_simulated_phone_missing_an_include_is_stuck_with_the_reason(lab: Lab, workdir: Path) -> None:
    root = workdir / "tree"
    root.mkdir()
    for name in ("sip.cfg", "y000000000108.cfg", "{mac}.cfg.j2"):
        (root / name).write_bytes((TREE / name).read_bytes())
    (root / "y000000000000.boot").write_text(FAILING_BOOT)
    phones = lab_macs(6, models=("T46U", "T54W"))
    app = start(lab, workdir, phones, root=root)
    sim = add_sim_node(lab)
    result, _ = run_sim(sim, workdir, "--count", "6", "--inventory", str(workdir / "phones.csv"), "--timeout", "120")
    try:
        assert result.returncode == 1, result.stdout[-3000:]
        data = _wait_for(app, 6)
        stages = {p["mac"].replace(":", ""): (p["stage"], p["error"]) for p in data["phones"]}
        for mac, model in phones:
            if model == "T46U":
                assert stages[mac] == ("done", None), stages[mac]
            else:
                assert stages[mac] == ("stuck", "asked for t54w-extra.cfg: not found"), stages[mac]
        text = app.cli("status", "--config", str(app.config), "--stage", "stuck").stdout
        assert "6 phones: 3 done, 3 stuck" in text and text.count("t54w-extra.cfg") == 3
    finally:
        app.stop()
