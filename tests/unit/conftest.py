"""Fixtures shared by the unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from bootstrapd.config import Settings, loads
from bootstrapd.journal.backends import open_journal, open_reader
from bootstrapd.journal.store import JournalStore

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


@dataclass
class JournalBackend:
    """One journal backend: the [store] section naming it, and its stores (a writer per appliance, a reader)."""

    name: str
    section: str
    state: Path

    def settings(self) -> Settings:
        return loads(f'[server]\ninterface = "eth1"\nstate_dir = "{self.state}"\n[dhcp4]\nenabled = false\n'
                     f'{self.section}')

    def writer(self, appliance: str = "ap-a") -> JournalStore:
        return open_journal(self.settings(), appliance)

    def reader(self) -> JournalStore:
        store = open_reader(self.settings())
        assert store is not None
        return store


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_backend(request: pytest.FixtureRequest, tmp_path: Path) -> JournalBackend:
    """The journal's tests run once per backend: SQLite in state_dir, a fresh database of the session's server."""
    if request.param == "sqlite":
        return JournalBackend("sqlite", "", tmp_path / "state")
    dsn = request.getfixturevalue("pg_dsn")
    return JournalBackend("postgresql", f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n', tmp_path / "state")
