"""The status page, the API and /metrics of the real daemon, after real clients ran; the page in headless Chromium.

Three phones take addresses with udhcpc and fetch over HTTP with curl, with a Yealink User-Agent (so the journal
knows their model and asks the provisioning model what "done" is for them):
- ph1 fetches everything the model says a T46U downloads from this tree: done;
- ph2 fetches the boot file, then a file that is not there: stuck, "asked for features.cfg: not found";
- ph3 asks for a file in an [[auth]] folder without credentials: stuck, "401 on /T46U_1/".
Then: the API (curl), a resync through the API answered by sipp, /metrics read by prometheus-client's parser and
``promtool check metrics``, and Chromium loading the page: phones and stages read from the rendered DOM, a
screenshot saved beside the test's files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_tools
from tests.lab.appliance import Appliance
from tests.lab.clients import udhcpc
from tests.lab.netns import Lab, Node
from tests.lab.sipphone import SIPP

# The journal is in the store: these run once per store backend (SQLite, the session's PostgreSQL).
pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("store_backend")]

PASSWORD = "lab-status-pw"
CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
url = "http://10.77.0.1/"

[dhcp4]
range = "10.77.0.100-10.77.0.199"
[dhcp4.options]
66 = "http://10.77.0.1/"

[http]
enabled = true

[pnp]
enabled = true

[[auth]]
path = "/T46U_1/"
user = "floor3"
password = "@AUTH@"

[status]
enabled = true
password = "@STATUS@"
refresh = 1

[journal]
flush_interval = 0.1
"""
H = "#!version:1.0.0.1\n"
TREE = {"y000000000000.boot": H + 'include:config "sip.cfg"\ninclude:config "$MAC.cfg"\n',
        "sip.cfg": H + "account.1.sip_server.1.address = 10.77.0.1\n",
        "001565770001.cfg": H + "account.1.label = ph1\n",
        "T46U_1/y000000000000.boot": H}
MACS = ["00:15:65:77:00:01", "00:15:65:77:00:02", "00:15:65:77:00:03"]


def _agent(mac: str) -> str:
    return f"Yealink SIP-T46U 108.86.0.20 {mac}"


def _curl(phone: Node, mac: str, path: str, *extra: str) -> int:
    result = phone.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                        "-A", _agent(mac), *extra, f"http://10.77.0.1{path}"], timeout=30)
    return int(result.stdout or 0)


def _api(phone: Node, path: str, *extra: str) -> tuple[int, Any]:
    result = phone.run(["curl", "-s", "-u", f"admin:{PASSWORD}", "-w", "\n%{http_code}", "--max-time", "30",
                        *extra, f"http://10.77.0.1{path}"], timeout=60)
    body, _, code = result.stdout.rpartition("\n")
    try:
        return int(code), json.loads(body) if body.startswith(("{", "[")) else body
    except ValueError:
        return int(code), body


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _chromium(phone: Node, workdir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = workdir / f"chromium-{time.monotonic_ns()}"
    return phone.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync",
                      f"--user-data-dir={profile}", "--virtual-time-budget=8000", *args, url], timeout=120)


def test_the_page_the_api_and_metrics_after_real_clients(lab: Lab, workdir: Path) -> None:
    require_tools("busybox", "curl", "sipp", "chromium", "promtool")
    from bootstrapd.provisioning.auth import hash_password

    node = lab.add_appliance()
    phones = [lab.add_phone(mac=m) for m in MACS]
    # The person on call: a fixed address, no lease, so the page's own requests are nobody's journey.
    admin = lab.add_phone(mac="02:77:00:00:00:aa", ipv4="10.77.0.40/24")
    config = CONFIG.replace("@AUTH@", hash_password("floor3-pw")).replace("@STATUS@", hash_password(PASSWORD))
    app = Appliance(node, workdir, config)
    for name, text in TREE.items():
        (app.root / name).parent.mkdir(parents=True, exist_ok=True)
        (app.root / name).write_text(text)
    app.start()
    try:
        leased = [udhcpc(phone, workdir, f"ph{i + 1}")["ip"] for i, phone in enumerate(phones)]
        for path in ("/001565770001.boot", "/y000000000000.boot", "/sip.cfg", "/001565770001.cfg"):
            assert _curl(phones[0], MACS[0], path) == (404 if path.endswith(".boot") and "0001" in path else 200)
        assert _curl(phones[1], MACS[1], "/y000000000000.boot") == 200
        assert _curl(phones[1], MACS[1], "/features.cfg") == 404
        assert _curl(phones[2], MACS[2], "/T46U_1/y000000000000.boot") == 401

        def stages() -> dict[str, str]:
            code, data = _api(admin, "/api/phones")
            return {p["mac"]: p["stage"] for p in data["phones"]} if code == 200 else {}

        _wait(lambda: stages().get(MACS[2]) == "stuck", 30, "the journal to record the phones")
        code, data = _api(admin, "/api/phones")
        by_mac = {p["mac"]: p for p in data["phones"]}
        assert by_mac[MACS[0]]["stage"] == "done", by_mac[MACS[0]]
        assert by_mac[MACS[0]]["expected"] == ["y000000000000.boot", "sip.cfg", "001565770001.cfg"]
        assert by_mac[MACS[0]]["model"] == "T46U" and by_mac[MACS[0]]["firmware"] == "108.86.0.20"
        assert by_mac[MACS[1]]["error"] == "asked for features.cfg: not found"
        assert by_mac[MACS[2]]["error"] == "401 on /T46U_1/"
        assert data["summary"]["done"] == 1 and data["summary"]["stuck"] == 2

        code, journey = _api(admin, f"/api/phones/{MACS[0]}")
        assert code == 200
        assert [(s["proto"], s["kind"]) for s in journey["steps"]][:2] == [("dhcp4", "offer"), ("dhcp4", "ack")]
        assert [s.get("file") for s in journey["steps"] if s["proto"] == "http"] == [
            "001565770001.boot", "y000000000000.boot", "sip.cfg", "001565770001.cfg"]
        assert _api(admin, "/api/phones/00:15:65:00:00:99")[0] == 404
        assert _api(admin, "/api/phones/nonsense")[0] == 400
        code, leases = _api(admin, "/api/leases")
        assert code == 200 and {lease["mac"] for lease in leases["dhcp4"]} == set(MACS)
        no_auth = admin.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 "http://10.77.0.1/api/phones"]).stdout
        assert no_auth == "401"

        # A resync through the API: sipp is ph2's SIP stack and answers 200; the step lands in the journal.
        sipp = phones[1].popen(["sipp", "-sf", str(SIPP / "checksync-200.xml"), "-i", leased[1], "-p", "5060",
                                "-m", "1", "-nostdin", "-timeout", "30s"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        phones[1].wait_udp_port(5060, 5.0)
        code, answer = _api(admin, f"/api/phones/{MACS[1]}/resync", "-X", "POST")
        assert code == 200 and answer["status"] == 200, answer
        sipp.wait(timeout=30)
        code, journey = _api(admin, f"/api/phones/{MACS[1]}")
        assert journey["steps"][-1]["proto"] == "resync" and journey["steps"][-1]["acknowledged"] is True
        code, answer = _api(admin, f"/api/phones/{MACS[2]}/resync", "-X", "POST")
        assert code == 504, answer  # nobody answers SIP on ph3

        # /metrics: parsed by prometheus-client and accepted by promtool.
        metrics = admin.run(["curl", "-s", "-u", f"admin:{PASSWORD}", "http://10.77.0.1/metrics"]).stdout
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(metrics) for s in f.samples}
        assert samples[("bootstrapd_dhcp4_addresses_assigned", ())] == 3
        assert samples[("bootstrapd_dhcp4_pool_size", ())] == 100
        assert samples[("bootstrapd_phones", (("stage", "done"),))] == 1
        assert samples[("bootstrapd_requests_total", (("outcome", "ack"), ("protocol", "dhcp4")))] == 3
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr

        # A real browser: the page's DOM after its scripts ran, and a screenshot.
        url = f"http://admin:{PASSWORD}@10.77.0.1/status/#{MACS[1]}"
        dom = _chromium(admin, workdir, url, "--dump-dom").stdout
        (workdir / "status-page.html").write_text(dom)
        from html.parser import HTMLParser

        rows: dict[str, str] = {}
        journey_rows: list[str] = []

        class Reader(HTMLParser):
            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                attributes = dict(attrs)
                if tag == "tr" and attributes.get("data-mac"):
                    rows[str(attributes["data-mac"])] = str(attributes.get("data-stage"))
                if tag == "tr" and attributes.get("data-proto"):
                    journey_rows.append(str(attributes["data-proto"]))

        Reader().feed(dom)
        assert rows == {MACS[0]: "done", MACS[1]: "stuck", MACS[2]: "stuck"}, dom[-3000:]
        assert journey_rows[:2] == ["dhcp4", "dhcp4"] and "resync" in journey_rows, journey_rows
        assert "asked for features.cfg: not found" in dom
        shot = workdir / "status-page.png"
        _chromium(admin, workdir, url, "--window-size=1280,800", f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 10_000
        keep = Path(__file__).resolve().parents[2] / ".screenshots"
        keep.mkdir(exist_ok=True)
        shutil.copy(shot, keep / "status-page.png")
    finally:
        app.stop()
