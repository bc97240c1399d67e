"""Shared fixtures: the network-namespace lab and the appliance running in it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import netns
from tests.lab.netns import Lab

# In CI nothing may skip: a missing tool or privilege there is a failure, not a skip.
IN_CI = os.environ.get("CI") == "true"


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        message = f"missing peer tools: {', '.join(missing)} (make test installs them)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def require_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("lab tests need root")
        pytest.skip("lab tests need root (network namespaces)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_root()
    with netns.lab() as the_lab:
        yield the_lab


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # Lab processes run as root in other namespaces; they share the filesystem.
    tmp_path.chmod(0o755)
    return tmp_path
