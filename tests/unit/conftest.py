"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# Tests share a loaded machine (CI runs them beside other work): a slow example is not a failure, so no deadline.
settings.register_profile("shared-machine", deadline=None)
settings.load_profile("shared-machine")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A provisioning root with a file, a sub-folder, and secrets beside it (outside the root) to escape towards."""
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "a.cfg").write_bytes(b"alpha")
    (root / "dir" / "b.cfg").write_bytes(b"beta")
    (tmp_path / "secret").write_bytes(b"secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "b.cfg").write_bytes(b"secret")
    return root
