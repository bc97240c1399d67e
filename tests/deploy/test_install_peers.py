"""``scripts/install-peers.sh`` leaves the machine's services and processes as it found them.

The script runs for real, in a private mount namespace whose ``/etc`` and ``/usr/sbin`` are overlays (whatever it or
the packages write there vanishes with the namespace), with a stand-in ``apt-get`` that does what a package's
maintainer scripts do: it enables a systemd unit and a System V script. The sandbox is also a PID namespace of its
own, holding processes named like the servers the old script ended by name (``in.tftpd``, ``kea-dhcp4``,
``kea-dhcp6``: ``sleep`` run through symlinks of those names); they must survive. A regression could only reach
those: no process of the machine is visible from inside.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import require_tools
from tests.deploy import sandbox

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install-peers.sh"

UNIT = """[Unit]
Description=a service of a test package
[Service]
ExecStart=/bin/true
[Install]
WantedBy=multi-user.target
"""
INIT_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides: bdt-peer-sysv
# Required-Start:
# Required-Stop:
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
### END INIT INFO
exit 0
"""

# The stand-in apt-get: what deb-systemd-helper and update-rc.d do in a service package's postinst, plus a record of
# what policy-rc.d answered while the "packages" were being installed.
FAKE_APT_GET = """#!/bin/sh
[ "$1" = install ] || exit 0
/usr/sbin/policy-rc.d bdt-peer start; echo "policy-rc.d during install: $?" >> "$REPORT"
cp "$FILES/unit" /etc/systemd/system/bdt-peer.service
systemctl enable --quiet bdt-peer.service
install -m 755 "$FILES/init-script" /etc/init.d/bdt-peer-sysv
update-rc.d bdt-peer-sysv defaults >/dev/null 2>&1
"""

SCRIPT_IN_SANDBOX = """# Before the installation: a unit the user enabled; the policy-rc.d case under test.
cp "$FILES/unit" /etc/systemd/system/bdt-mine.service
systemctl enable --quiet bdt-mine.service
rm -f /usr/sbin/policy-rc.d
if [ -n "$USER_POLICY" ]; then printf '%s' "$USER_POLICY" > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi
# Processes named like the servers (this shell is PID 1 of a fresh PID namespace: they are all it can see).
pids=()
for name in $NAMES; do
  ln -s "$(command -v sleep)" "$FILES/$name"
  "$FILES/$name" 600 &
  pids+=($!)
done
for pid in "${pids[@]}"; do  # until exec has happened, comm is still bash's
  for _ in $(seq 3000); do [ "$(cat /proc/$pid/comm)" = bash ] || break; sleep 0.01; done
  echo "started: $(cat /proc/$pid/comm)" >> "$REPORT"
done
if ! PATH="$FILES:$PATH" bash "$SCRIPT" bdt-no-such-package-0 > "$REPORT.out" 2>&1; then
  echo "script failed: $?" >> "$REPORT"
fi
for unit in bdt-mine.service bdt-peer.service; do
  echo "$unit: $(systemctl is-enabled "$unit" 2>/dev/null || true)" >> "$REPORT"
done
ls /etc/rc2.d | grep -E '^[SK][0-9]+bdt-peer-sysv$' | sed 's/^/rc2.d: /' >> "$REPORT" || true
if [ -e /usr/sbin/policy-rc.d ]; then echo "policy-rc.d after: $(tr '\\n' '|' < /usr/sbin/policy-rc.d)" >> "$REPORT"
else echo "policy-rc.d after: none" >> "$REPORT"; fi
for pid in "${pids[@]}"; do
  if kill -0 "$pid" 2>/dev/null; then echo "alive: $(cat "/proc/$pid/comm")" >> "$REPORT"; kill "$pid"; fi
done
"""

NAMES = ("in.tftpd", "kea-dhcp4", "kea-dhcp6")


def _run(tmp_path: Path, user_policy: str) -> dict[str, str]:
    require_tools("systemctl", "update-rc.d", "dpkg-query", "sleep")
    files = tmp_path / "files"
    files.mkdir()
    (files / "apt-get").write_text(FAKE_APT_GET)
    (files / "apt-get").chmod(0o755)
    (files / "unit").write_text(UNIT)
    (files / "init-script").write_text(INIT_SCRIPT)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    report = tmp_path / "report"
    env = dict(FILES=str(files), SCRIPT=str(SCRIPT), REPORT=str(report), USER_POLICY=user_policy,
               NAMES=" ".join(NAMES))
    result = sandbox.run(SCRIPT_IN_SANDBOX, scratch, ["/etc", "/usr/sbin"], env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = report.read_text().splitlines()
    out = (tmp_path / "report.out").read_text()
    assert not any(line.startswith("script failed") for line in lines), out
    facts: dict[str, str] = {}
    for line in lines:
        key, value = line.split(": ", 1)
        facts[key] = f"{facts[key]} {value}" if key in facts else value
    facts["output"] = out
    return facts


def test_services_it_enabled_are_disabled_others_kept_and_no_process_ended(tmp_path: Path) -> None:
    facts = _run(tmp_path, user_policy="")
    assert facts["policy-rc.d during install"] == "101", facts  # no service could start while installing
    assert facts["bdt-peer.service"] == "disabled", facts       # the installation enabled it: disabled again
    assert facts["rc2.d"].startswith("K"), facts                # the System V script likewise
    assert facts["bdt-mine.service"] == "enabled", facts        # the user's own unit is untouched
    assert facts["policy-rc.d after"] == "none", facts          # the policy it created is gone again
    assert "disabling bdt-peer.service" in facts["output"]
    assert facts["started"] == " ".join(NAMES), facts
    assert facts.get("alive") == " ".join(NAMES), facts         # every namesake survived


def test_a_policy_rc_d_of_the_machine_is_used_and_kept(tmp_path: Path) -> None:
    mine = "#!/bin/sh\n# the machine's own\nexit 101\n"
    facts = _run(tmp_path, user_policy=mine)
    assert facts["policy-rc.d during install"] == "101", facts
    assert facts["policy-rc.d after"] == mine.replace("\n", "|"), facts
    assert facts["bdt-peer.service"] == "disabled", facts
    assert facts.get("alive") == " ".join(NAMES), facts


def test_nothing_in_the_repository_ends_processes_by_name() -> None:
    """No script, test or doc uses the name-matching killers: they reach processes this project never started."""
    pattern = re.compile(r"\b(" + "p" + "kill|kill" + "all)\b")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=60)
    if listed.returncode == 0:
        files = [REPO / name for name in listed.stdout.decode().split("\0") if name]
    else:  # not a git checkout (an unpacked sdist): every file but the virtual environment
        files = [p for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]
    offenders = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except (OSError, IsADirectoryError):
            continue
        offenders += [f"{path.relative_to(REPO)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if pattern.search(line)]
    assert not offenders, offenders
