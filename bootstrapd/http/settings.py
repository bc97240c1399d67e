"""The ``[http]`` section: HTTP and HTTPS on the provisioning interface, and the limits that keep clients honest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootstrapd.configfile import Table
from bootstrapd.credentials import SecretFile, secret_file


@dataclass(frozen=True)
class HttpSettings:
    enabled: bool = False
    port: int = 80  # 0: no plain HTTP
    tls_port: int = 443
    tls_cert: str = ""  # PEM certificate chain; HTTPS is served when both are set
    tls_key: SecretFile | None = None  # a path, or "credential:NAME" (systemd LoadCredential=), read at start
    head_timeout: float = 10.0  # seconds to receive a request head, from its first byte
    keepalive_timeout: float = 15.0  # idle seconds between requests on a connection
    body_timeout: float = 30.0  # seconds to receive an upload's body
    send_timeout: float = 30.0  # seconds a client may take no byte of a download before it is closed
    max_header_size: int = 8190  # bytes of one header line
    max_connections: int = 4000
    max_connections_per_client: int = 32
    rate_limit: float = 100.0  # requests per second per client address; 0: no limit
    rate_burst: int = 200

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def load_http(table: Table) -> HttpSettings:
    settings = HttpSettings(
        enabled=table.flag("enabled", False),
        port=table.integer("port", 80, min=0, max=65535),
        tls_port=table.integer("tls_port", 443, min=1, max=65535),
        tls_cert=table.text("tls_cert", ""),
        tls_key=secret_file(table, "tls_key"),
        head_timeout=table.number("head_timeout", 10.0, min=0.1),
        keepalive_timeout=table.number("keepalive_timeout", 15.0, min=0.1),
        body_timeout=table.number("body_timeout", 30.0, min=0.1),
        send_timeout=table.number("send_timeout", 30.0, min=0.1),
        max_header_size=table.integer("max_header_size", 8190, min=256, max=1 << 20),
        max_connections=table.integer("max_connections", 4000, min=1, max=1_000_000),
        max_connections_per_client=table.integer("max_connections_per_client", 32, min=1),
        rate_limit=table.number("rate_limit", 100.0, min=0),
        rate_burst=table.integer("rate_burst", 200, min=1),
    )
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise table.error("tls_key" if settings.tls_cert else "tls_cert", "tls_cert and tls_key go together")
    if settings.tls_cert and not Path(settings.tls_cert).is_file():
        raise table.error("tls_cert", f"{settings.tls_cert}: no such file")
    if settings.tls_key is not None and settings.tls_key.path is not None and not settings.tls_key.path.is_file():
        raise table.error("tls_key", f"{settings.tls_key.path}: no such file")
    if settings.enabled and not settings.port and not settings.tls:
        raise table.error("port", "0 turns plain HTTP off, and HTTPS needs tls_cert and tls_key: nothing to serve")
    table.finish()
    return settings
