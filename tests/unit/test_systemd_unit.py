"""The shipped systemd unit: systemd accepts it, scores it 2.0 or lower, and grants exactly what the services need."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from bootstrapd import config, privileges
from tests.conftest import require_tools
from tests.deploy.unitfile import REPO, UNIT, capabilities, directives


def _checkable(tmp_path: Path) -> Path:
    """The unit pointed at this checkout's bootstrapd (the installed path does not exist here)."""
    binary = shutil.which("bootstrapd") or str(Path(sys.executable).with_name("bootstrapd"))
    path = tmp_path / "bootstrapd.service"
    path.write_text(UNIT.read_text().replace("/usr/local/bin/bootstrapd", binary))
    return path


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze accepts the shipped unit (pointed at this checkout's bootstrapd)."""
    require_tools("systemd-analyze")
    unit = UNIT.read_text()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit and "WatchdogSec=" in unit
    path = _checkable(tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bootstrapd.service" not in result.stderr, result.stderr


def test_the_exposure_score_is_at_most_2(tmp_path: Path) -> None:
    require_tools("systemd-analyze")
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(_checkable(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    score = re.search(r"Overall exposure level for bootstrapd\.service: (\d+\.\d+)", result.stdout)
    assert score, result.stdout
    assert float(score.group(1)) <= 2.0, result.stdout


def test_the_unit_grants_exactly_what_the_services_need() -> None:
    """The capabilities of the unit equal those bootstrapd's start-up check asks for with every service enabled
    (configs/lab.toml), so neither can grow or shrink without the other."""
    unit = UNIT.read_text()
    every_service = config.load(REPO / "configs" / "lab.toml")
    assert all(s.enabled for s in (every_service.dhcp4, every_service.dhcp6, every_service.tftp, every_service.pnp))
    needed = sorted({need.capability for need in privileges.needs(every_service)})
    assert capabilities(unit) == needed
    assert capabilities(unit, "CapabilityBoundingSet") == needed


def test_the_sandbox_covers_every_service() -> None:
    found = directives(UNIT.read_text())
    families = found["RestrictAddressFamilies"][0].split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK", "AF_PACKET"} <= set(families)
    assert found["DynamicUser"] == ["yes"] and found["StateDirectory"] == ["bootstrapd"]
    assert found["ProtectSystem"] == ["strict"] and found["ReadOnlyPaths"] == ["-/srv/bootstrapd"]
    assert found["LoadCredential"] == ["tls.key:bootstrapd.tls.key"]
    assert found["NoNewPrivileges"] == ["yes"]
