"""The PostgreSQL schema: its versions, ``db init``, ``db upgrade``, and the check every appliance makes at start-up.

The schema is created and migrated only by ``bootstrapd db init`` / ``bootstrapd db upgrade`` (an administrator's
step, like ``kea-admin db-init``): an appliance never changes the schema of a database other appliances use. At
start-up it reads ``bootstrapd_schema.version`` and refuses to start on anything but :data:`VERSION`, saying which
command fixes it.

Rules the tables encode (the database, not any appliance, has the last word):
- ``lease4.address`` and ``lease6.address`` are primary keys: an address has one row, so it can never be committed to
  two clients; who may overwrite that row is decided by the conditional upsert in :mod:`.postgresql`;
- ``state`` is one of the four the pool knows;
- ``meta`` holds per-appliance values (``appliance`` = its name: the DHCPv6 server DUID) and shared ones
  (``appliance`` = '': the AES secret every appliance derives the same keys from);
- the phone journal (version 2, :mod:`bootstrapd.journal.pgjournal`): each appliance writes only rows of its own
  name (its summary of each phone it saw, the steps it recorded), so two appliances never write one row; readers
  combine them. Documents are ``json`` (kept as written: the appliance that reads parses them, the server does
  not).
"""

from __future__ import annotations

from typing import Any

VERSION = 2
TABLE = "bootstrapd_schema"

# MIGRATIONS[n] takes a database at version n-1 (0: empty) to version n, in one transaction.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE lease4 (
    address inet PRIMARY KEY,
    mac bytea NOT NULL,
    client_id bytea,
    expires double precision NOT NULL,
    state text NOT NULL CHECK (state IN ('active', 'released', 'declined', 'offered')),
    hostname text,
    vendor_class text,
    appliance text NOT NULL,
    updated double precision NOT NULL,
    CHECK (family(address) = 4)
);
CREATE INDEX lease4_mac ON lease4 (mac);
CREATE TABLE lease6 (
    address inet PRIMARY KEY,
    duid bytea NOT NULL,
    iaid bigint NOT NULL,
    expires double precision NOT NULL,
    state text NOT NULL CHECK (state IN ('active', 'released', 'declined', 'offered')),
    mac bytea,
    hostname text,
    appliance text NOT NULL,
    updated double precision NOT NULL,
    CHECK (family(address) = 6)
);
CREATE INDEX lease6_duid ON lease6 (duid, iaid);
CREATE TABLE phone (
    mac text PRIMARY KEY,
    address text NOT NULL,
    seen double precision NOT NULL,
    source text NOT NULL,
    vendor text,
    model text,
    version text,
    url text
);
CREATE TABLE meta (
    appliance text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    updated double precision NOT NULL,
    PRIMARY KEY (appliance, key)
);
CREATE TABLE upload (
    appliance text NOT NULL,
    mac text NOT NULL,
    name text NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    mtime double precision NOT NULL,
    PRIMARY KEY (mac, name, appliance)
);
""",
    2: """
CREATE TABLE journal_phone (
    mac text NOT NULL,
    appliance text NOT NULL,
    stage text NOT NULL,
    updated double precision NOT NULL,
    doc json NOT NULL,
    PRIMARY KEY (mac, appliance)
);
CREATE INDEX journal_phone_age ON journal_phone (appliance, updated);
CREATE TABLE journal_step (
    id bigserial PRIMARY KEY,
    mac text NOT NULL,
    appliance text NOT NULL,
    time double precision NOT NULL,
    doc json NOT NULL
);
CREATE INDEX journal_step_journey ON journal_step (mac, time);
CREATE INDEX journal_step_own ON journal_step (appliance, mac, id);
CREATE INDEX journal_step_age ON journal_step (appliance, id);
""",
}

assert max(MIGRATIONS) == VERSION


class SchemaError(Exception):
    """The database's schema is missing or at another version (the message says which command fixes it)."""


async def version(conn: Any) -> int | None:
    """The schema version of the database ``conn`` is connected to; None: no bootstrapd schema at all."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE)
    if not exists:
        return None
    found = await conn.fetchval(f"SELECT max(version) FROM {TABLE}")
    return int(found) if found is not None else None


async def check(conn: Any) -> None:
    """Raise :class:`SchemaError` unless the schema is exactly the one this bootstrapd was written for."""
    found = await version(conn)
    if found is None:
        raise SchemaError("the database has no bootstrapd schema: create it with `bootstrapd db init --config FILE`")
    if found < VERSION:
        raise SchemaError(f"the database schema is version {found}, this bootstrapd needs {VERSION}: run "
                          "`bootstrapd db upgrade --config FILE` (after every appliance using it is updated)")
    if found > VERSION:
        raise SchemaError(f"the database schema is version {found}, newer than this bootstrapd's {VERSION}: "
                          "update bootstrapd on this appliance")


async def _migrate(conn: Any, start: int, stop: int = VERSION) -> int:
    """Apply the migrations after ``start`` up to ``stop`` (tests build an older schema with ``stop``)."""
    current = start
    for target in range(start + 1, stop + 1):
        async with conn.transaction():
            # One migration at a time even when two administrators run it at once.
            await conn.execute("SELECT pg_advisory_xact_lock(7715)")
            again = await version(conn) or 0
            if again >= target:
                current = again
                continue
            await conn.execute(MIGRATIONS[target])
            if target == 1:
                await conn.execute(f"CREATE TABLE {TABLE} (version integer NOT NULL, applied double precision "
                                   "NOT NULL DEFAULT extract(epoch FROM now()))")
            await conn.execute(f"INSERT INTO {TABLE} (version) VALUES ($1)", target)
            current = target
    return current


async def init(conn: Any) -> int:
    """Create the schema in an empty database; raises SchemaError when there is one already."""
    found = await version(conn)
    if found is not None:
        raise SchemaError(f"the database already has the bootstrapd schema (version {found})"
                          + ("" if found == VERSION else ": use `bootstrapd db upgrade`"))
    return await _migrate(conn, 0)


async def upgrade(conn: Any) -> tuple[int, int]:
    """Apply the migrations from the database's version to :data:`VERSION`; returns (before, after)."""
    found = await version(conn)
    if found is None:
        raise SchemaError("the database has no bootstrapd schema: create it with `bootstrapd db init`")
    if found > VERSION:
        raise SchemaError(f"the database schema is version {found}, newer than this bootstrapd's {VERSION}")
    return found, await _migrate(conn, found)
