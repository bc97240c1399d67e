"""Many phones behind one address (a branch office's NAT router), with the default configuration (issue #11).

100 phones x 3 files at once, all from one source address: every file is served and no phone waits a
retransmission timeout (the phones' own count of retransmissions; their timer is a phone's, 5 s). Requests over the
address's ``max_per_client`` wait in its queue and start when a slot frees (the daemon's ``tftp.waited`` counter).
A flood from one address still holds at most ``max_per_client`` transfers while another phone is served at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bench.tftpclient import PHONE_TIMEOUT, PHONE_TRIES
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import Lab, Node

SERVER = "10.77.0.1"
FILES = {"y000000000000.boot": 600, "y000000000000.cfg": 9000, "001565aabbcc.cfg": 2500}


@dataclass
class Env:
    app: Appliance
    ap: Node
    phone: Node
    digests: dict[str, str]


@pytest.fixture
def env(lab: Lab, workdir: Path) -> Iterator[Env]:
    ap = lab.add_appliance()
    phone = lab.add_phone(ipv4="10.77.0.10/24")
    lab.route_clients(phone, "10.88.0.0/16", ap)  # another site's phones, each with its own address
    app = Appliance(ap, workdir, BASE_CONFIG.format(root=workdir / "root", state=workdir / "state") +
                    "\n[tftp]\nenabled = true\n")  # the defaults
    digests = {}
    for i, (name, size) in enumerate(FILES.items()):
        data = bytes((i + n) % 251 for n in range(size))
        (app.root / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    app.start()
    yield Env(app, ap, phone, digests)
    if app.proc and app.proc.poll() is None:
        app.stop()


def _storm(clients: int, files: dict[str, str], timeout: float, tries: int, sources: list[str] | None = None) -> \
        list[str]:
    argv = [sys.executable, "-m", "tests.bench.tftp", "storm", "--host", SERVER, "--clients", str(clients),
            "--files", json.dumps(files), "--options", json.dumps({"blksize": "1428"}), "--limit", "120",
            "--timeout", str(timeout), "--tries", str(tries)]
    return argv + (["--sources", json.dumps(sources)] if sources else [])


def _counters(app: Appliance) -> dict[str, int]:
    """The counters the daemon logs when it stops."""
    assert app.stop() == 0
    match = re.search(r"stopping counters=(\{.*\})", app.log())
    assert match, app.log()[-2000:]
    counters: dict[str, int] = json.loads(match.group(1).replace("'", '"'))
    return counters


def test_hundred_phones_behind_one_address_are_all_served_without_a_retransmission(env: Env) -> None:
    out = env.phone.run(_storm(100, env.digests, PHONE_TIMEOUT, PHONE_TRIES), timeout=180)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] == 300 and result["failed"] == 0, result
    assert result["transfers_retransmitted"] == 0, result  # no phone waited out its 5 s timer
    counters = _counters(env.app)
    assert counters.get("tftp.waited", 0) > 0, counters  # over max_per_client (8): they waited for a slot
    assert counters.get("tftp.transfer", 0) == 300, counters


def _transfer_sockets(ap: Node) -> int:
    """UDP sockets of the appliance on its address other than port 69: one per transfer."""
    lines = ap.run(["ss", "-Huan", "src", SERVER]).stdout.splitlines()
    return sum(1 for line in lines if line.split() and not line.split()[3].endswith(":69"))


def test_a_flood_from_one_address_holds_its_share_while_another_phone_is_served(env: Env) -> None:
    flood: subprocess.Popen[Any] = env.phone.popen(_storm(400, env.digests, 1.0, 1))  # 1,200 requests at once
    other: subprocess.Popen[Any] = env.phone.popen(_storm(1, env.digests, PHONE_TIMEOUT, PHONE_TRIES, ["10.88.0.1"]))
    most = 0
    deadline = time.monotonic() + 60
    while (flood.poll() is None or other.poll() is None) and time.monotonic() < deadline:
        most = max(most, _transfer_sockets(env.ap))
    out, _ = flood.communicate(timeout=120)
    other_out, _ = other.communicate(timeout=120)
    flooded = json.loads(out)
    assert other.returncode == 0
    served = json.loads(other_out)
    assert served["ok"] == 3 and served["transfers_retransmitted"] == 0, served
    # The flooding address never held more than max_per_client transfers (8), plus the other phone's 3.
    assert 0 < most <= 8 + 3, most
    assert flooded["failed"] > 0, flooded  # what was over its rate and queue was not served
