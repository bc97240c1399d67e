"""Running the real ``bootstrapd run`` inside the lab's appliance namespace.

The test waits for ``READY=1`` on its own NOTIFY_SOCKET (a path socket: the filesystem is shared across network
namespaces), exactly as systemd would, so every lab test also exercises the sd_notify contract.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.lab.netns import Node

BASE_CONFIG = """
[server]
interface = "eth1"
root = "{root}"
state_dir = "{state}"
url = "tftp://{{ipv4}}/"

[dhcp4]
enabled = false
"""


# A [store] section every appliance's configuration gets: the DHCP lab suites run once per store backend (the
# ``store_backend`` fixture sets it to a PostgreSQL database of the session's server); "" = SQLite in state_dir.
STORE_SECTION = ""


class Appliance:
    def __init__(self, node: Node, workdir: Path, config_text: str) -> None:
        self.node = node
        self.workdir = workdir
        self.config = workdir / "bootstrapd.toml"
        self.root = workdir / "root"
        self.state = workdir / "state"
        self.root.mkdir(exist_ok=True)
        self.write_config(config_text)
        self.proc: subprocess.Popen[Any] | None = None
        self.notify_path = workdir / "notify.sock"
        self.stderr_path = workdir / "bootstrapd.log"
        self._notify: socket.socket | None = None

    def write_config(self, config_text: str) -> None:
        text = config_text.replace("@ROOT@", str(self.root)).replace("@STATE@", str(self.state))
        self.config.write_text(text + STORE_SECTION if "\n[store]" not in text else text)

    def start(self, *extra: str, timeout: float = 20.0, expect_ready: bool = True,
              env: dict[str, str] | None = None, command: Sequence[str] | None = None) -> None:
        """Run ``bootstrapd run`` (``command``: another way to start it, e.g. as another user with setpriv, or
        ``python -m tests.lab.slowdisk`` on a slow disk)."""
        with contextlib.suppress(FileNotFoundError):
            self.notify_path.unlink()
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self.notify_path))
        self.notify_path.chmod(0o666)  # a daemon run as an unprivileged user must be able to notify too
        self._notify.settimeout(0.2)
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify_path), PYTHONUNBUFFERED="1", **(env or {}))
        stderr = open(self.stderr_path, "ab")
        program = list(command) if command is not None else [sys.executable, "-m", "bootstrapd"]
        self.proc = self.node.popen(
            [*program, "run", "--config", str(self.config), *extra],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env,
        )
        stderr.close()
        if expect_ready:
            self.wait_notify("READY=1", timeout)

    def wait_notify(self, word: str, timeout: float = 20.0) -> str:
        assert self._notify and self.proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self._notify.recv(4096).decode()
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"bootstrapd exited with {self.proc.returncode}:\n{self.log()}") from None
                continue
            if word in message.split("\n"):
                return message
        raise TimeoutError(f"bootstrapd did not send {word} within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def reload(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        if self._notify:
            self._notify.close()
            self._notify = None
        return code

    def kill(self) -> None:
        assert self.proc
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self._notify:
            self._notify.close()
            self._notify = None

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run another ``bootstrapd`` command (leases, resync …) in the appliance namespace."""
        return self.node.run([sys.executable, "-m", "bootstrapd", *args], timeout=timeout)
