"""Real DHCP clients run in a phone namespace, reporting what they received.

dhclient and udhcpc normally reconfigure the host (resolv.conf, addresses) through their scripts: the filesystem is
shared with the root namespace, so each run gets its own script that only writes the environment it was given to a
file, and its own lease and pid files under the test's directory.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from tests.lab.netns import Node

_RECORD_SCRIPT = """#!/bin/sh
# Record what the client received; configure the interface so renewals can be unicast from it.
reason="${{reason:-$1}}"
vars='^(new_|old_|ip=|subnet=|router=|dns=|opt|serverid=|lease=|boot_file=|tftp=|domain=|hostname=|interface=|siaddr=|mask=)'
{{ echo "reason=$reason"; env | grep -E "$vars"; echo "---"; }} >> {out}
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    [ -n "$new_ip_address" ] && ip addr replace "$new_ip_address/24" dev "$interface" 2>/dev/null ;;
  BOUND6|RENEW6|REBIND6|REBOOT6)
    [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/64" dev "$interface" nodad 2>/dev/null ;;
  bound|renew)
    [ -n "$ip" ] && ip addr replace "$ip/24" dev "$interface" 2>/dev/null ;;
esac
exit 0
"""


def _script(workdir: Path, name: str) -> tuple[Path, Path]:
    out = workdir / f"{name}.env"
    script = workdir / f"{name}.sh"
    script.write_text(_RECORD_SCRIPT.format(out=shlex.quote(str(out))))
    script.chmod(0o755)
    return script, out


def parse_records(path: Path) -> list[dict[str, str]]:
    """Each script call as a dict of the variables it saw."""
    if not path.exists():
        return []
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line == "---":
            records.append(current)
            current = {}
        elif "=" in line:
            key, value = line.split("=", 1)
            current[key] = value.strip("'")
    return records


class Dhclient:
    """ISC dhclient with its own config, lease file, pid file and recording script."""

    def __init__(self, node: Node, workdir: Path, name: str, conf: str) -> None:
        self.node = node
        self.workdir = workdir
        self.name = name
        self.conf = workdir / f"{name}.conf"
        self.conf.write_text(conf)
        self.leases = workdir / f"{name}.leases"
        self.pid = workdir / f"{name}.pid"
        self.script, self.out = _script(workdir, name)

    def _argv(self, *extra: str) -> list[str]:
        return ["dhclient", "-v", "-cf", str(self.conf), "-lf", str(self.leases), "-pf", str(self.pid),
                "-sf", str(self.script), *extra, self.node.ifname]

    def obtain(self, *extra: str, timeout: float = 30) -> dict[str, str]:
        """Run until bound (``-1``: one attempt, then dhclient daemonises and keeps renewing)."""
        result = self.node.run(self._argv("-1", *extra), timeout=timeout)
        bound = [r for r in parse_records(self.out) if r.get("reason") in ("BOUND", "REBOOT", "RENEW", "BOUND6",
                                                                           "RENEW6", "REBIND6")]
        if result.returncode != 0 or not bound:
            raise AssertionError(f"dhclient failed ({result.returncode}):\n{result.stderr}")
        return bound[-1]

    def records(self) -> list[dict[str, str]]:
        return parse_records(self.out)

    def stop_daemon(self) -> None:
        if self.pid.exists():
            try:
                pid = int(self.pid.read_text().strip())
            except ValueError:
                return
            self.node.run(["kill", "-TERM", str(pid)])
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.node.run(["kill", "-0", str(pid)]).returncode == 0:
                time.sleep(0.05)

    def release(self, *extra: str) -> None:
        self.stop_daemon()
        result = self.node.run(self._argv("-r", *extra), timeout=30)
        assert result.returncode == 0, result.stderr


def udhcpc(node: Node, workdir: Path, name: str, *args: str, timeout: float = 30) -> dict[str, str]:
    """busybox udhcpc: obtain a lease once (``-q``) in the foreground and return what the script saw on bind."""
    script, out = _script(workdir, name)
    argv = ["busybox", "udhcpc", "-i", node.ifname, "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", str(script),
            *args]
    result = node.run(argv, timeout=timeout)
    bound = [r for r in parse_records(out) if r.get("reason") == "bound"]  # udhcpc passes the event as $1
    if result.returncode != 0 or not bound:
        raise AssertionError(f"udhcpc failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return bound[-1]
