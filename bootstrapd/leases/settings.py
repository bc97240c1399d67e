"""The ``[store]`` section: where leases and the state appliances share live.

``backend = "sqlite"`` (the default) keeps everything in ``state_dir/leases.sqlite3``, for one appliance.
``backend = "postgresql"`` puts it in the PostgreSQL database that ``dsn`` names, which several appliances share
(:mod:`bootstrapd.leases.postgresql`). The password never sits in this file's text as shown back to anyone: it may be
given in ``password_file`` (a path, or ``"credential:NAME"`` for systemd's ``LoadCredential=``), in the environment
(``PGPASSWORD``) or in a ``~/.pgpass``/``PGPASSFILE`` file, as libpq's own tools read them; a password written inside
the DSN is accepted but every message shows the DSN with it masked (:func:`redact`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from bootstrapd.configfile import Table
from bootstrapd.credentials import SecretFile, secret_file

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class StoreSettings:
    backend: str = "sqlite"
    dsn: str = field(default="", repr=False)  # postgresql://user@host:port/database (password masked when shown)
    password_file: SecretFile | None = None
    pool_size: int = 2  # connections that commit and read; one more listens for the other appliances' changes
    connect_timeout: float = 5.0  # seconds to open one connection
    command_timeout: float = 5.0  # seconds one commit or query may take before it counts as failed
    appliance: str = ""  # this appliance's name in the shared database; "" = the interface's MAC address

    @property
    def shared(self) -> bool:
        return self.backend == "postgresql"


_USERINFO = re.compile(r"^(?P<user>[^:@]*)(?::(?P<password>[^@]*))?@")


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``: the only form of it that is ever printed or logged."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparsable dsn>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _dsn(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value.startswith(("postgresql://", "postgres://")):
        # Never echo the value: it may hold a password.
        raise ValueError("must be a URI, postgresql://USER@HOST[:PORT]/DATABASE (a unix socket: "
                         "postgresql://USER@/DATABASE?host=/run/postgresql)")
    try:
        urlsplit(value).port  # noqa: B018 - a bad port raises here, at load time
    except ValueError:
        raise ValueError(f"{redact(value)}: the port is not a number") from None
    return value


def _appliance(value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", value):
        raise ValueError("must be 1-64 letters, digits, '.', '_', ':' or '-'")
    return value


def load_store(table: Table) -> StoreSettings:
    backend = table.text("backend", "sqlite")
    if backend not in BACKENDS:
        raise table.error("backend", f"must be one of {', '.join(repr(b) for b in BACKENDS)}, not {backend!r}")
    dsn = table.parse("dsn", _dsn, "", "a PostgreSQL URI") if table.has("dsn") else ""
    if backend == "postgresql" and not dsn:
        raise table.error("backend", "\"postgresql\" needs store.dsn (postgresql://USER@HOST/DATABASE)")
    settings = StoreSettings(
        backend=backend,
        dsn=dsn,
        password_file=secret_file(table, "password_file"),
        pool_size=table.integer("pool_size", 2, min=1, max=64),
        connect_timeout=table.number("connect_timeout", 5.0, min=0.1),
        command_timeout=table.number("command_timeout", 5.0, min=0.1),
        appliance=table.parse("appliance", _appliance, "", "a name") if table.has("appliance") else "",
    )
    table.finish()
    return settings
