"""The daemon's contract: READY=1 once bound, clean stop, refusal to start on a bad interface or file."""

from __future__ import annotations

from pathlib import Path

from tests.lab.appliance import BASE_CONFIG, Appliance
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
