"""The shipped systemd unit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tools


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze accepts the shipped unit (pointed at this checkout's bootstrapd)."""
    require_tools("systemd-analyze")
    unit = (Path(__file__).resolve().parents[2] / "systemd" / "bootstrapd.service").read_text()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit and "WatchdogSec=" in unit
    binary = shutil.which("bootstrapd") or str(Path(sys.executable).with_name("bootstrapd"))
    (tmp_path / "bootstrapd.service").write_text(unit.replace("/usr/local/bin/bootstrapd", binary))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "bootstrapd.service")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bootstrapd.service" not in result.stderr, result.stderr
