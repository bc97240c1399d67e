"""Shared fixtures: the network-namespace lab and the appliance running in it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.lab import netns
from tests.lab.netns import Lab

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

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


# -- a real PostgreSQL for the shared store (issue #15): one server per session, a fresh database per test ----------

@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    from tests.pgserver import PostgresServer, bindir

    if bindir() is None:
        message = "PostgreSQL is not installed (Debian package postgresql; make test installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer()
    try:
        yield server
    finally:
        server.close()


def init_schema(dsn: str, password: str | None = None) -> None:
    """``bootstrapd db init``'s work, straight through the module (the CLI itself has its own test)."""
    import asyncio

    import asyncpg

    from bootstrapd.leases import pgschema

    async def run() -> None:
        conn = await asyncpg.connect(dsn, password=password)
        try:
            await pgschema.init(conn)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """The DSN of a new database holding the current schema, dropped after the test."""
    name = postgres.create_database()
    dsn = postgres.dsn(name)
    init_schema(dsn)
    try:
        yield dsn
    finally:
        postgres.drop_database(name)


@contextlib.contextmanager
def _appliances_store(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every Appliance started meanwhile gets the store ``request.param`` names (tests.lab.appliance): SQLite in its
    state_dir, or a new database of the session's PostgreSQL server holding the current schema, dropped after."""
    from tests.lab import appliance

    if request.param == "sqlite":
        yield "sqlite"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = server.create_database()
    dsn = server.dsn(name)
    init_schema(dsn)
    appliance.STORE_SECTION = f'\n[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
    try:
        yield "postgresql"
    finally:
        appliance.STORE_SECTION = ""
        server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a lab test once per store backend: every Appliance it starts gets this store (tests.lab.appliance)."""
    with _appliances_store(request) as name:
        yield name


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_store_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The same for a module whose tests share one appliance (a module-scoped fixture): the module runs once per
    backend."""
    with _appliances_store(request) as name:
        yield name
