"""The phone model's fetcher for ``check`` and ``explain``: a URL on this server is answered from the served tree
(uploads, rendered files, key files, static files, encryption: what a phone would get); any other URL is recorded
as external and not followed."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from bootstrapd.config import Settings
from bootstrapd.net.interfaces import Interface
from bootstrapd.provisioning.resolver import Refused
from bootstrapd.provisioning.tree import ServedTree

PLACEHOLDER_HOSTS = ("{ipv4}", "{ipv6}")


def served_schemes(settings: Settings) -> set[str]:
    schemes = set()
    if settings.tftp.enabled:
        schemes.add("tftp")
    if settings.http.enabled:
        schemes.add("http")
        if getattr(settings.http, "tls_cert", ""):
            schemes.add("https")
    ftp = getattr(settings, "ftp", None)
    if ftp is not None and getattr(ftp, "enabled", False):
        schemes.add("ftp")
    return schemes


def _host(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower() if host else None


def served_hosts(settings: Settings, iface: Interface | None, urls: list[str]) -> set[str]:
    """This server's names: the interface's addresses, ``provisioning.server_names`` and the hosts of the URLs
    this configuration hands out (server.url, PnP, DHCP options): phones are sent there, so they are this server."""
    hosts = {h.lower() for h in settings.provisioning.server_names} | set(PLACEHOLDER_HOSTS)
    if iface is not None:
        hosts |= {str(a.ip) for a in iface.ipv4} | {str(a.ip) for a in iface.ipv6}
    for url in [settings.server.url, *urls]:
        host = _host(url if "://" in url else "tftp://" + url)
        if host:
            hosts.add(host)
    return hosts


@dataclass
class Record:
    url: str
    name: str | None  # the tree name, None for an external URL
    status: str  # "found", "missing", "external", "refused"
    origin: str = ""  # "static", "rendered:<template>", "security-key:<file>", "upload"
    encrypted: bool = False
    detail: str = ""


class TreeFetcher:
    def __init__(self, tree: ServedTree, schemes: set[str], hosts: set[str]) -> None:
        self.tree = tree
        self.schemes = schemes
        self.hosts = hosts
        self.records: dict[str, Record] = {}

    def name_of(self, url: str) -> str | None:
        """The tree name ``url`` stands for on this server, or None when it is not served here."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        host = (parts.hostname or "").lower()
        if parts.scheme.lower() not in self.schemes or host not in self.hosts:
            return None
        return unquote(parts.path).lstrip("/") or None

    def why_external(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme.lower() not in self.schemes:
            served = ", ".join(sorted(self.schemes)) or "nothing"
            return f"bootstrapd does not serve {parts.scheme or '(no scheme)'}:// here (it serves {served})"
        return f"{parts.hostname} is not this server (provisioning.server_names lists other names for it)"

    def __call__(self, url: str) -> bytes | None:
        name = self.name_of(url)
        if name is None:
            self.records[url] = Record(url, None, "external", detail=self.why_external(url))
            return None
        try:  # uploads (<mac>-local.cfg) come through the resolver's upload store, origin "upload"
            served = self.tree.lookup(name)
        except Refused as exc:
            status = "missing" if exc.reason.value == "not_found" else "refused"
            self.records[url] = Record(url, name, status, detail=str(exc))
            return None
        self.records[url] = Record(url, name, "found", served.origin, served.encrypted)
        return served.data
