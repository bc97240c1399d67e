"""``scripts/install.sh``: what a user runs on a Debian box, run for real.

Staged (``--destdir``) it lays out every file and the installed program works; as root on "this machine", inside a
sandbox whose /etc, /opt, /srv, /usr/local, /usr/share and /var are overlays, it installs the unit, config, tree and
TLS credential for real, systemd accepts the installed unit, and ``--uninstall --purge`` leaves nothing behind but
the provisioning tree (the user's files, kept by design).
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

from bootstrapd import __version__
from tests.conftest import require_tools
from tests.deploy import sandbox
from tests.deploy.conftest import INSTALL, require_debian_python
from tests.deploy.unitfile import REPO, UNIT

OVERLAYS = ["/etc", "/opt", "/srv", "/usr/local", "/usr/share", "/var"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_staged_install_has_every_file_and_a_working_program(staged: Path) -> None:
    assert (staged / "etc/systemd/system/bootstrapd.service").read_text() == UNIT.read_text()
    config = staged / "etc/bootstrapd/bootstrapd.toml"
    assert config.read_text() == (REPO / "configs/bootstrapd.toml").read_text() and _mode(config) == 0o644
    inventory = staged / "etc/bootstrapd/phones.csv"  # beside the config, where provisioning.inventory looks
    assert inventory.read_bytes() == (REPO / "configs/phones.csv").read_bytes() and _mode(inventory) == 0o644
    tree = sorted(p.name for p in (REPO / "configs/tree").iterdir())
    assert sorted(p.name for p in (staged / "srv/bootstrapd").iterdir()) == tree
    assert all(_mode(p) == (0o755 if p.is_dir() else 0o644) for p in (staged / "srv/bootstrapd").rglob("*"))
    link = staged / "usr/local/bin/bootstrapd"
    assert link.is_symlink() and str(link.readlink()) == "/opt/bootstrapd/bin/bootstrapd"
    assert (staged / "usr/share/doc/bootstrapd/README.md").read_text() == (REPO / "README.md").read_text()
    program = staged / "opt/bootstrapd/bin/bootstrapd"
    version = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"bootstrapd {__version__}"
    check = subprocess.run([str(program), "check-config", "--config", str(config)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0 and check.stdout.splitlines()[0] == f"{config}: OK", check.stderr
    assert "server.url" in check.stdout  # ... then the URLs it hands out
    # The program comes from Debian's python3, not from the test's interpreter.
    assert "home = /usr/bin" in (staged / "opt/bootstrapd/pyvenv.cfg").read_text()


def test_dry_run_prints_the_steps_and_changes_nothing(tmp_path: Path) -> None:
    result = sandbox.run(f'bash {INSTALL} --dry-run\nfind "$SANDBOX_SCRATCH" -path "*.up/*" ! -type d',
                         tmp_path, OVERLAYS)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert "+ /usr/bin/python3 -m venv /opt/bootstrapd" in steps
    assert "+ install -D -m 644 " + str(REPO / "systemd/bootstrapd.service") + \
        " /etc/systemd/system/bootstrapd.service" in steps
    assert "+ systemctl enable bootstrapd.service" in steps
    assert not [line for line in result.stdout.splitlines() if str(tmp_path) in line], result.stdout  # no file


def test_wheels_makes_pip_use_that_folder_only(tmp_path: Path) -> None:
    """--wheels DIR (a box without PyPI, the Vagrant lab): pip installs from the wheels in DIR and asks no index."""
    result = sandbox.run(f'mkdir "$SANDBOX_SCRATCH/wheels"\n'
                         f'bash {INSTALL} --dry-run --program-only --wheels "$SANDBOX_SCRATCH/wheels"',
                         tmp_path, OVERLAYS)
    assert result.returncode == 0, result.stdout + result.stderr
    pip = [line for line in result.stdout.splitlines() if line.startswith("+ ") and " -m pip install " in line]
    assert len(pip) == 1 and re.search(r" --no-index --find-links \S+/wheels --upgrade ", pip[0]), result.stdout
    missing = sandbox.run(f"bash {INSTALL} --dry-run --wheels /nonexistent/wheels", tmp_path, OVERLAYS)
    assert missing.returncode == 2 and "no such folder: /nonexistent/wheels" in missing.stderr


INSTALL_AND_INSPECT = """
printf 'the certificate\\n' > "$WORK/tls.crt"
printf 'the private key\\n' > "$WORK/tls.key"
bash "$INSTALL" --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" > "$WORK/install.out" 2>&1
echo "enabled: $(systemctl is-enabled bootstrapd.service)"
echo "version: $(bootstrapd --version)"
echo "check-config: $(bootstrapd check-config --config /etc/bootstrapd/bootstrapd.toml | head -1)"
if systemd-analyze verify /etc/systemd/system/bootstrapd.service > "$WORK/verify.out" 2>&1; then
  echo "verify: ok"; else echo "verify: failed"; fi
echo "security: $(systemd-analyze security --offline=true --no-pager /etc/systemd/system/bootstrapd.service |
  grep -o 'Overall exposure level for bootstrapd.service: [0-9.]*')"
for path in /etc/bootstrapd/tls.crt /etc/credstore /etc/credstore/bootstrapd.tls.key /etc/bootstrapd/bootstrapd.toml \\
            /srv/bootstrapd /srv/bootstrapd/sip.cfg; do
  echo "mode: $(stat -c '%a %U %n' "$path")"
done
echo "key: $(cat /etc/credstore/bootstrapd.tls.key)"
bash "$INSTALL" --uninstall --purge > "$WORK/uninstall.out" 2>&1
echo "after uninstall: $(systemctl is-enabled bootstrapd.service 2>&1 | tail -1)"
# Every file or link the installation left in the overlays' upper layers: nothing but the kept tree.
# (whiteouts, character devices 0/0, only say that a file the machine already had was removed)
find "$SANDBOX_SCRATCH" -path "*.up/*" ! -type d ! -type c ! -path "*/_srv.up/bootstrapd/*" | sed 's/^/left: /'
"""


def test_a_real_install_verifies_and_uninstall_leaves_nothing(tmp_path: Path) -> None:
    require_tools("systemctl", "systemd-analyze", "tar")
    require_debian_python()
    work = tmp_path / "work"
    work.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = sandbox.run(INSTALL_AND_INSPECT, scratch, OVERLAYS, {"INSTALL": str(INSTALL), "WORK": str(work)})
    logs = "".join(f"\n--- {p.name}\n{p.read_text()}" for p in sorted(work.glob("*.out")))
    assert result.returncode == 0, result.stdout + result.stderr + logs
    lines = result.stdout.splitlines()
    facts: dict[str, list[str]] = {}
    for line in lines:
        key, _, value = line.partition(": ")
        facts.setdefault(key, []).append(value)
    assert facts["enabled"] == ["enabled"], logs
    assert facts["version"] == [f"bootstrapd {__version__}"], logs
    assert facts["check-config"] == ["/etc/bootstrapd/bootstrapd.toml: OK"], logs
    assert facts["verify"] == ["ok"], logs
    score = re.search(r"(\d+\.\d+)$", facts["security"][0])
    assert score and float(score.group(1)) <= 2.0, facts["security"]
    assert facts["mode"] == ["644 root /etc/bootstrapd/tls.crt", "700 root /etc/credstore",
                             "600 root /etc/credstore/bootstrapd.tls.key", "644 root /etc/bootstrapd/bootstrapd.toml",
                             "755 root /srv/bootstrapd", "644 root /srv/bootstrapd/sip.cfg"]
    assert facts["key"] == ["the private key"]
    assert facts["after uninstall"] != ["enabled"], logs
    assert "left" not in facts, facts.get("left")
