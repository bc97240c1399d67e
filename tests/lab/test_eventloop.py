"""The daemon serves on uvloop (its default when installed) and on asyncio's own loop (``run --event-loop asyncio``).

Every other lab test runs on the default loop; this one runs DHCPv4, DHCPv6, TFTP and HTTP (a small file from memory
and a streamed one by sendfile) with real clients on both.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.conftest import require_tools
from tests.lab import perfdhcp
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.clients import udhcpc
from tests.lab.netns import Lab

CONFIG = """
[dhcp4]
range = "10.77.0.100-10.77.0.200"
[dhcp6]
enabled = true
[tftp]
enabled = true
[http]
enabled = true
"""


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_every_service_on_both_loops(lab: Lab, workdir: Path, loop: str) -> None:
    require_tools("busybox", "perfdhcp", "curl")
    ap = lab.add_appliance()
    phone = lab.add_phone()
    for node in (ap, phone):
        lab.wait_link_local(node)
    text = BASE_CONFIG.format(root=workdir / "root", state=workdir / "state").replace(
        "[dhcp4]\nenabled = false\n", "") + CONFIG
    app = Appliance(ap, workdir, text)
    data = bytes(range(256)) * 400
    (app.root / "y000000000000.boot").write_bytes(data)
    firmware = bytes(range(251)) * 12000  # 3 MB, above the size files are held in memory: streamed by sendfile
    (app.root / "fw.rom").write_bytes(firmware)
    app.start("--event-loop", loop)
    try:
        # The "ready" line is logged just after READY=1 is sent.
        deadline = time.monotonic() + 30
        while "event_loop=" not in app.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"event_loop={loop}" in app.log()
        lease = udhcpc(phone, workdir, "v4")
        assert lease.get("ip", "").startswith("10.77.0.")
        result = perfdhcp.run(phone, 6, "-r", "50", "-n", "100", "-R", "1000", "-W", "1000000", timeout=60)
        assert result.completed == perfdhcp.sent_for(result.stats["REQUEST-REPLY"], 100), result.output
        out = workdir / "got.boot"
        fetched = phone.run(["curl", "-sS", "--tftp-blksize", "1428", "-o", str(out),
                             "tftp://10.77.0.1/y000000000000.boot"], timeout=60)
        assert fetched.returncode == 0, fetched.stderr
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
        for name, expected in (("y000000000000.boot", data), ("fw.rom", firmware)):
            fetched = phone.run(["curl", "-sS", "-o", str(out), f"http://10.77.0.1/{name}"], timeout=60)
            assert fetched.returncode == 0, fetched.stderr
            assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(expected).digest(), name
    finally:
        assert app.stop() == 0
