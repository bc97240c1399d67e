"""Fixtures of the deployment tests: bootstrapd installed by scripts/install.sh into a staging folder."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tools
from tests.deploy.unitfile import REPO

INSTALL = REPO / "scripts" / "install.sh"
DEBIAN_PYTHON = "/usr/bin/python3"  # what install.sh builds the venv with, as on a real box


def require_debian_python() -> None:
    ok = subprocess.run([DEBIAN_PYTHON, "-c", "import ensurepip, venv"], capture_output=True).returncode == 0 \
        if Path(DEBIAN_PYTHON).exists() else False
    if not ok:
        message = f"{DEBIAN_PYTHON} with venv (Debian's python3-venv, one of the Makefile's PEERS) is missing"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def staged() -> Iterator[Path]:
    """``scripts/install.sh --destdir DIR``: the files of a real install under DIR, the venv runnable from there.

    Made under /tmp, world-traversable, so that an unprivileged user can run the installed daemon (pytest's own
    temporary folders are private to root)."""
    require_tools("bash", "tar")
    require_debian_python()
    root = Path(tempfile.mkdtemp(prefix="bootstrapd-staged-"))
    try:
        root.chmod(0o755)
        result = subprocess.run(["bash", str(INSTALL), "--destdir", str(root),
                                 "--inventory", str(REPO / "configs" / "phones.csv")], capture_output=True, text=True,
                                timeout=900, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stdout + result.stderr
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
