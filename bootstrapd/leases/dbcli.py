"""``bootstrapd db init | upgrade | status``: the PostgreSQL schema, created and migrated by an administrator.

Exit codes: 0 done, 1 the database refused (unreachable, schema already there / missing / newer), 2 bad usage or
configuration (``[store] backend`` is not postgresql, no ``dsn``). The DSN is only ever shown with its password masked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from bootstrapd.configfile import ConfigError

Register = dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]]


def _fail(message: str) -> None:
    print(f"bootstrapd: {message}", file=sys.stderr)


async def _run(action: str, settings: Any) -> tuple[int, dict[str, Any]]:
    import asyncpg

    from bootstrapd.leases import pgschema
    from bootstrapd.leases.backends import StoreOpenError, password
    from bootstrapd.leases.postgresql import CONNECTION_ERRORS, PERMANENT_ERRORS
    from bootstrapd.leases.settings import redact

    store = settings.store
    where = redact(store.dsn)
    try:
        conn = await asyncpg.connect(store.dsn, password=password(store), timeout=store.connect_timeout)
    except StoreOpenError as exc:
        _fail(str(exc))
        return 2, {}
    except (*PERMANENT_ERRORS, *CONNECTION_ERRORS) as exc:
        _fail(f"store.dsn {where}: cannot connect: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return 1, {}
    try:
        before = await pgschema.version(conn)
        after: int | None
        if action == "init":
            after = await pgschema.init(conn)
        elif action == "upgrade":
            before, after = await pgschema.upgrade(conn)
        else:
            after = before
        counts: dict[str, int] = {}
        if after is not None:
            tables = ("lease4", "lease6", "phone", "upload") + (("journal_phone", "journal_step") if after >= 2 else ())
            for table in tables:
                counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
            rows = await conn.fetch("SELECT appliance, count(*) FROM lease4 GROUP BY appliance UNION ALL "
                                    "SELECT appliance, count(*) FROM lease6 GROUP BY appliance")
            appliances: dict[str, int] = {}
            for name, count in rows:
                appliances[name] = appliances.get(name, 0) + int(count)
        else:
            appliances = {}
    except pgschema.SchemaError as exc:
        _fail(f"store.dsn {where}: {exc}")
        return 1, {}
    finally:
        await conn.close()
    return 0, {"dsn": where, "version_before": before, "version": after, "version_needed": pgschema.VERSION,
               "rows": counts, "lease_rows_by_appliance": appliances}


def cmd_db(args: argparse.Namespace) -> int:
    from bootstrapd import config

    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        _fail(str(exc))
        return 2
    if not settings.store.shared:
        _fail(f"{args.config}: store.backend is {settings.store.backend!r}: `db {args.action}` is for PostgreSQL "
              "(the SQLite store in server.state_dir creates itself)")
        return 2
    code, facts = asyncio.run(_run(args.action, settings))
    if code:
        return code
    if args.json:
        json.dump(facts, sys.stdout, indent=2)
        print()
        return 0
    if args.action == "init":
        print(f"{facts['dsn']}: bootstrapd schema version {facts['version']} created")
    elif args.action == "upgrade":
        if facts["version_before"] == facts["version"]:
            print(f"{facts['dsn']}: schema version {facts['version']}, already current")
        else:
            print(f"{facts['dsn']}: schema upgraded from version {facts['version_before']} to {facts['version']}")
    else:
        version = facts["version"]
        state = "no bootstrapd schema (run `bootstrapd db init`)" if version is None else \
            f"schema version {version}" + ("" if version == facts["version_needed"] else
                                           f", this bootstrapd needs {facts['version_needed']}")
        print(f"{facts['dsn']}: {state}")
        for table, count in facts["rows"].items():
            print(f"  {table:13} {count} rows")
        for name, count in sorted(facts["lease_rows_by_appliance"].items()):
            print(f"  leases last written by {name}: {count}")
        if version != facts["version_needed"]:
            return 1
    return 0


def setup_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["init", "upgrade", "status"],
                        help="init: create the schema in an empty database; upgrade: migrate it to this version; "
                             "status: its version and row counts")
    parser.add_argument("--config", "-c", required=True, help="the TOML configuration file ([store] section)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=cmd_db)


def register(extra: Register) -> None:
    extra["db"] = ("create, migrate or inspect the PostgreSQL store's schema ([store] backend = \"postgresql\")",
                   setup_db)
