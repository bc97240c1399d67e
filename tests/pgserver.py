"""A real PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` in a temporary directory, unprivileged.

Debian's ``postgresql`` package (the Makefile's PEERS) installs the server under ``/usr/lib/postgresql/<version>/bin``;
we never touch the system's own cluster. Run as root (CI, the lab), the server runs as the ``postgres`` user the
package creates (PostgreSQL refuses to run as root); run as anyone else, as that user. It listens on a unix socket
in its directory only (``listen_addresses = ''``): network namespaces share the filesystem, so every lab namespace
reaches it through the same path and no TCP port is opened anywhere.

``fsync`` stays on: the tests that kill appliances and the server check that what was acknowledged is on disk.
:meth:`PostgresServer.close` stops the server (immediate mode) and deletes the directory; the session fixture calls
it even when tests fail, and an ``atexit`` hook covers an interrupted run.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PASSWORD_USER = "bootstrapd_pw"  # a role that must log in with a password (scram), for the password tests
PASSWORD = "s3cret-Pässword"


def bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    def __init__(self, base: Path | None = None, port: int = 5432) -> None:
        found = bindir()
        if found is None:
            raise FileNotFoundError("PostgreSQL's initdb is not installed (Debian package postgresql)")
        self.bin = found
        self.base = Path(base or tempfile.mkdtemp(prefix="bootstrapd-pg-"))
        self.base.chmod(0o755)
        self.data = self.base / "data"
        self.socket_dir = self.base
        self.port = port
        self.log = self.base / "server.log"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._demote: Callable[[], None] | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)

            def demote() -> None:
                os.setgid(entry.pw_gid)
                os.setgroups([])
                os.setuid(entry.pw_uid)

            self._demote = demote
        self._databases = 0
        atexit.register(self.close)
        self._initdb()
        self.start()
        self.psql(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, preexec_fn=self._demote,
                              cwd=self.base, check=False)

    def _initdb(self) -> None:
        result = self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", self.user, "-E", "UTF8",
                            "--locale=C", "--no-sync", "--auth-local=trust", "--auth-host=reject"])
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr}")
        # The password role must authenticate; everyone else is trusted on the socket (the directory is ours).
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_USER} scram-sha-256\nlocal all all trust\n")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"listen_addresses = ''\nunix_socket_directories = '{self.socket_dir}'\nport = {self.port}\n"
                       "max_connections = 200\nfsync = on\nsynchronous_commit = on\n")

    def start(self, timeout: float = 60) -> None:
        result = self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                            "-t", str(int(timeout)), "start"], timeout=timeout + 30)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stdout}{result.stderr}\n{self.server_log()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: no shutdown checkpoint, as a crash)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def running(self) -> bool:
        return self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]).returncode == 0

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-4000:]
        return ""

    def dsn(self, database: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.user}@/{database}?host={self.socket_dir}&port={self.port}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = self._run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.user, "-d", database,
                            "-c", sql])
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {result.stderr}")
        return result.stdout

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database (owned by the password role too, so either role can use it); returns its name."""
        self._databases += 1
        name = f"{prefix}{os.getpid()}_{self._databases}"
        self.psql(f"CREATE DATABASE {name} OWNER {PASSWORD_USER}")
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(RuntimeError):
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        if self.data.exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")
            deadline = time.monotonic() + 10
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.1)
        shutil.rmtree(self.base, ignore_errors=True)
