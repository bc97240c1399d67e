"""The journal, ``status``, the capture recorder and ``trace`` with real clients in the namespace lab.

One appliance (DHCPv4, TFTP, PnP; started with ``--pcap``) and four phones, each left at a known stage:

- ph1, dhclient, then atftp: its MAC boot file (not found), the common boot file, the common CFG, its MAC CFG: done;
- ph2, udhcpc, then curl: the common boot file, then ``sip.cfg`` which is missing: stuck, "asked for sip.cfg: not
  found";
- ph3, udhcpc only: told where to provision (option 66 in its ACK);
- ph4, a fixed address, sipp: a PnP SUBSCRIBE whose NOTIFY it never confirms: stuck, "NOTIFY never acknowledged".

Meanwhile tcpdump records the appliance's interface; the recorder's file and tcpdump's are both read by tshark.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_root, require_tools
from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient, udhcpc
from tests.lab.netns import Lab, Node
from tests.lab.sipphone import run_phone

pytestmark = pytest.mark.lab

CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
url = "tftp://{ipv4}/"

[dhcp4]
range = "10.77.0.100-10.77.0.199"
lease_time = 3600

[dhcp4.options]
66 = "tftp://10.77.0.1/"

[tftp]
enabled = true

[pnp]
enabled = true

[journal]
flush_interval = 0.1
"""

MACS = ["00:15:65:77:00:01", "00:15:65:77:00:02", "00:15:65:77:00:03", "00:15:65:77:00:04"]
PNP_MAC = "00:15:65:77:00:09"  # the MAC in tests/lab/sipp/no-ack.xml
FILES = {"y000000000000.boot": b"#!version:1.0.0.1\ninclude:config <y000000000028.cfg>\n",
         "y000000000028.cfg": b"#!version:1.0.0.1\nstatic.auto_provision.server.url = tftp://10.77.0.1/\n",
         "001565770001.cfg": b"#!version:1.0.0.1\naccount.1.label = ph1\n"}


@dataclass
class Env:
    lab: Lab
    app: Appliance
    phones: list[Node]
    work: Path
    pcap: Path
    tcpdump: Path
    ph1_address: str

    def status(self, *args: str) -> Any:
        result = self.app.cli("status", "--config", str(self.app.config), *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if "--json" in args else result.stdout

    def phone(self, mac: str) -> dict[str, Any]:
        phones: dict[str, dict[str, Any]] = {p["mac"]: p for p in self.status("--json")["phones"]}
        assert mac in phones, sorted(phones)
        return phones[mac]


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, module_store_backend: str) -> Iterator[Env]:
    """The journal is in the store: the module runs once per store backend (SQLite, the session's PostgreSQL)."""
    require_root()
    require_tools("dhclient", "busybox", "atftp", "curl", "sipp", "tcpdump", "tshark")
    from tests.lab.netns import lab

    work = tmp_path_factory.mktemp("journal")
    work.chmod(0o755)
    with lab() as the_lab:
        node = the_lab.add_appliance()
        phones = [the_lab.add_phone(mac=m) for m in MACS[:3]]
        phones.append(the_lab.add_phone(mac=MACS[3], ipv4="10.77.0.30/24"))
        app = Appliance(node, work, CONFIG)
        for name, data in FILES.items():
            (app.root / name).write_bytes(data)
        pcap = work / "recorder.pcap"
        dump = work / "tcpdump.pcap"
        tcpdump = node.popen(["tcpdump", "-i", "eth1", "-U", "-s", "0", "-w", str(dump), "udp or tcp or icmp"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(lambda: dump.exists() and dump.stat().st_size >= 24, 20, "tcpdump to start")
        app.start("--pcap", str(pcap))
        try:
            lease = Dhclient(phones[0], work, "ph1", "request subnet-mask, tftp-server-name;\n").obtain()
            out = work / "out"
            out.mkdir()
            for name in ("001565770001.boot", "y000000000000.boot", "y000000000028.cfg", "001565770001.cfg"):
                phones[0].run(["atftp", "-g", "-r", name, "-l", str(out / name), "10.77.0.1"], timeout=30)
            udhcpc(phones[1], work, "ph2")
            for name in ("y000000000000.boot", "sip.cfg"):
                phones[1].run(["curl", "-sS", "--max-time", "10", "-o", str(out / f"ph2-{name}"),
                               f"tftp://10.77.0.1/{name}"], timeout=30)
            udhcpc(phones[2], work, "ph3")
            code, _, output = run_phone(phones[3], "no-ack", work, timeout=60)
            assert code == 0, output
            env = Env(the_lab, app, phones, work, pcap, dump, lease["new_ip_address"])
            # The NOTIFY is given up on after Timer F (64 x T1 = 32 s).
            _wait(lambda: any(p["mac"] == PNP_MAC for p in env.status("--json")["phones"]), 90, "the PnP phone")
            time.sleep(1.0)  # the last frames reach both captures
            yield env
        finally:
            app.stop()
            tcpdump.terminate()
            tcpdump.wait(timeout=10)


def test_each_phone_is_at_its_stage_with_its_reason(env: Env) -> None:
    ph1 = env.phone(MACS[0])
    assert ph1["stage"] == "done", ph1
    assert ph1["address"] == env.ph1_address and ph1["error"] is None
    ph2 = env.phone(MACS[1])
    assert ph2["stage"] == "stuck" and ph2["error"] == "asked for sip.cfg: not found", ph2
    ph3 = env.phone(MACS[2])
    assert ph3["stage"] == "told" and ph3["address"], ph3
    ph4 = env.phone(PNP_MAC)
    assert ph4["stage"] == "stuck" and ph4["error"] == "NOTIFY never acknowledged", ph4
    assert ph4["model"] == "SIP-T46U" and ph4["firmware"] == "108.86.0.20"
    summary = env.status("--json")["summary"]
    assert summary["done"] == 1 and summary["stuck"] == 2 and summary["told"] == 1


def test_a_phones_journey_has_every_step(env: Env) -> None:
    journey = env.status("--json", "--mac", MACS[0])
    steps = [(s["proto"], s["kind"], s.get("file"), s.get("outcome")) for s in journey["steps"]]
    assert steps[:2] == [("dhcp4", "offer", None, None), ("dhcp4", "ack", None, None)], steps
    assert steps[2:] == [("tftp", "get", "001565770001.boot", "not_found"), ("tftp", "get", "y000000000000.boot", "ok"),
                         ("tftp", "get", "y000000000028.cfg", "ok"), ("tftp", "get", "001565770001.cfg", "ok")]
    assert journey["steps"][4]["bytes"] == len(FILES["y000000000028.cfg"])
    text = env.status("--mac", MACS[1])
    assert "asked for sip.cfg: not found" in text and "DISCOVER → OFFER" in text


def test_the_table_and_the_stage_filter(env: Env) -> None:
    text = env.status()
    assert "4 phones: 1 told where to provision, 1 done, 2 stuck" in text, text
    stuck = env.status("--stage", "stuck", "--json")["phones"]
    assert sorted(p["mac"] for p in stuck) == sorted([MACS[1], PNP_MAC])
    bad = env.app.cli("status", "--config", str(env.app.config), "--stage", "nonsense")
    assert bad.returncode == 2 and "--stage" in bad.stderr


def _tshark(path: Path, display: str) -> list[str]:
    result = subprocess.run(["tshark", "-r", str(path), "-Y", display, "-T", "fields", "-e", "frame.number",
                             "-e", "_ws.col.Info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "malformed" not in (result.stdout + result.stderr).lower(), result.stdout
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_the_recorders_capture_reads_clean_and_matches_tcpdump(env: Env) -> None:
    assert env.pcap.exists()
    assert not _tshark(env.pcap, "_ws.malformed or _ws.expert.severity >= 0x00800000")  # PI_ERROR
    for display in ("dhcp", "tftp", "sip", "udp.port == 69", "tftp.opcode == 3", "tftp.opcode == 5"):
        ours, theirs = _tshark(env.pcap, display), _tshark(env.tcpdump, display)
        assert len(ours) == len(theirs) > 0, (display, len(ours), len(theirs))
    # Nothing that is not one of our services' frames: ARP and IPv6 neighbour discovery stay out.
    everything = _tshark(env.pcap, "frame")
    ours = _tshark(env.pcap, "dhcp or tftp or sip or icmp")
    assert len(everything) == len(ours)
    rrqs = [line for line in _tshark(env.pcap, "tftp.opcode == 1")]
    assert len(rrqs) == 6 and any("sip.cfg" in line for line in rrqs)


def test_trace_reads_tcpdumps_capture(env: Env) -> None:
    result = subprocess.run([sys.executable, "-m", "bootstrapd", "trace", str(env.tcpdump), "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    phones = {p["mac"]: p for p in json.loads(result.stdout)["phones"]}
    kinds = {mac: {d["kind"] for d in p["diagnosis"]} for mac, p in phones.items()}
    assert "mac_boot_then_common" in kinds[MACS[0]], kinds
    assert "include_missing" in kinds[MACS[1]], kinds
    assert "notify_unacknowledged" in kinds[PNP_MAC], kinds
    assert "idle_after_lease" in kinds[MACS[2]], kinds
    text = subprocess.run([sys.executable, "-m", "bootstrapd", "trace", str(env.pcap), "--mac", MACS[1]],
                          capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "sip.cfg" in text.stdout and "File not found" in text.stdout


def test_status_watch_redraws_in_place_until_interrupted(env: Env) -> None:
    import signal

    # Its output goes to a file that the test reads while it runs: it is stopped once it has drawn three frames
    # (or after 60 s), so a slow start on a busy machine is not a failure.
    screen = env.work / "watch.out"
    with open(screen, "w") as sink:
        proc = env.app.node.popen([sys.executable, "-m", "bootstrapd", "status", "--config", str(env.app.config),
                                   "--watch", "--interval", "0.2"], text=True, stdout=sink)
        try:
            deadline = time.monotonic() + 60
            while screen.read_text().count("\x1b[H\x1b[2J") < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
    out = screen.read_text()
    assert proc.returncode == 0, err
    frames = out.split("\x1b[H\x1b[2J")
    assert len(frames) >= 3, out  # redrawn, not appended
    assert all("4 phones:" in frame for frame in frames[1:-1])
    bad = env.app.cli("status", "--config", str(env.app.config), "--watch", "--json")
    assert bad.returncode == 2
