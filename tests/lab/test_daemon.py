"""The daemon's contract: READY=1 once bound, clean stop, refusal to start on a bad interface or file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_tools
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.clients import udhcpc
from tests.lab.netns import Lab


def _config(root: Path, state: Path, body: str = "") -> str:
    return BASE_CONFIG.format(root=root, state=state) + body


def test_ready_and_clean_stop(lab: Lab, workdir: Path) -> None:
    node = lab.add_appliance()
    app = Appliance(node, workdir, _config(workdir / "root", workdir / "state"))
    app.start()
    assert app.stop() == 0


def test_missing_interface_is_refused(lab: Lab, workdir: Path) -> None:
    node = lab.add_appliance()
    text = _config(workdir / "root", workdir / "state").replace('interface = "eth1"', 'interface = "eth9"')
    app = Appliance(node, workdir, text)
    app.start(expect_ready=False)
    assert app.proc is not None
    assert app.proc.wait(timeout=20) == 2
    assert "interface 'eth9' does not exist" in app.log()


def test_bad_key_names_file_line_and_key(lab: Lab, workdir: Path) -> None:
    node = lab.add_appliance()
    text = _config(workdir / "root", workdir / "state") + "\n[tftp]\nport = 70000\n"
    app = Appliance(node, workdir, text)
    result = app.cli("check-config", "--config", str(app.config))
    assert result.returncode == 2
    line = text.splitlines().index("port = 70000") + 1
    assert f"{app.config}:{line}: tftp.port: must be at most 65535" in result.stderr


def _dhcp(root: Path, state: Path) -> str:
    return _config(root, state).replace("[dhcp4]\nenabled = false", '[dhcp4]\nrange = "10.77.0.100-10.77.0.110"')


def test_interface_down_is_refused(lab: Lab, workdir: Path) -> None:
    node = lab.add_appliance()
    node.run(["ip", "link", "set", "eth1", "down"], check=True)
    app = Appliance(node, workdir, _dhcp(workdir / "root", workdir / "state"))
    app.start(expect_ready=False)
    assert app.proc is not None and app.proc.wait(timeout=20) == 2
    assert "interface 'eth1' is down" in app.log()


def test_range_outside_the_interface_subnet_is_refused(lab: Lab, workdir: Path) -> None:
    node = lab.add_appliance(ipv4="192.168.5.1/24")
    app = Appliance(node, workdir, _dhcp(workdir / "root", workdir / "state"))
    app.start(expect_ready=False)
    assert app.proc is not None and app.proc.wait(timeout=20) == 2
    assert "dhcp4.range 10.77.0.100-10.77.0.110 is not inside the subnet of interface 'eth1' (192.168.5.0/24)" in (
        app.log())


def test_no_ipv4_address_is_refused(lab: Lab, workdir: Path) -> None:
    node = lab.add_appliance(ipv4=None)
    app = Appliance(node, workdir, _dhcp(workdir / "root", workdir / "state"))
    app.start(expect_ready=False)
    assert app.proc is not None and app.proc.wait(timeout=20) == 2
    assert "has no IPv4 address" in app.log()


def test_never_serves_another_interface(lab: Lab, workdir: Path) -> None:
    """The appliance also sits on a second LAN (eth2, same subnet even): a client there gets no answer."""
    require_tools("busybox")
    node = lab.add_appliance()
    lab.add_interface(node, "eth2", "02:77:00:00:00:02", "10.77.0.2/24", bridge="br1")
    app = Appliance(node, workdir, _dhcp(workdir / "root", workdir / "state"))
    app.start()
    stranger = lab.add_phone(mac="02:99:00:00:00:01", bridge="br1")
    with pytest.raises(AssertionError):
        udhcpc(stranger, workdir, "stranger", "-t", "3")
    served = lab.add_phone(mac="02:99:00:00:00:02")
    assert udhcpc(served, workdir, "served")["ip"].startswith("10.77.0.1")
    assert app.stop() == 0


def test_systemd_watchdog_and_reload_notifications(lab: Lab, workdir: Path) -> None:
    """With WATCHDOG_USEC set (as systemd does for WatchdogSec=), WATCHDOG=1 arrives at half the interval; SIGHUP
    says RELOADING=1, then READY=1 again."""
    node = lab.add_appliance()
    app = Appliance(node, workdir, _config(workdir / "root", workdir / "state"))
    app.start(env={"WATCHDOG_USEC": "400000"})
    app.wait_notify("WATCHDOG=1", timeout=5)
    app.wait_notify("WATCHDOG=1", timeout=5)
    app.reload()
    app.wait_notify("RELOADING=1", timeout=5)
    app.wait_notify("READY=1", timeout=5)
    assert app.stop() == 0

