"""``bootstrapd explain``: what one phone will do with this configuration and what it ends up with.

It runs the phone model (:mod:`bootstrapd.provisioning.phone`) with the served tree as the fetcher, so it sees what
a phone would get: rendered files, key files, encryption, the upload store's ``<mac>-local.cfg``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.net.interfaces import Interface
from bootstrapd.provisioning.discovery import UrlSource, chosen, url_sources, url_variables
from bootstrapd.provisioning.fetcher import Record, TreeFetcher, served_hosts, served_schemes
from bootstrapd.provisioning.files import build_resolver
from bootstrapd.provisioning.inventory import InventoryPhone
from bootstrapd.provisioning.models import Model
from bootstrapd.provisioning.phone import Outcome, Phone, run
from bootstrapd.provisioning.tree import Provisioning, ServedTree
from bootstrapd.redact import MASK, is_secret
from bootstrapd.urltemplates import expand


def try_interface(settings: Settings) -> Interface | None:
    """The provisioning interface when it exists here (then {ipv4}/{ipv6} become its addresses)."""
    try:
        from bootstrapd.net.interfaces import lookup

        return lookup(settings.server.interface)
    except Exception:  # no such interface here, no netlink: explain still works with the placeholders
        return None


@dataclass
class Explanation:
    phone: Phone
    inventory: InventoryPhone | None
    sources: list[UrlSource]
    source: UrlSource | None  # the one followed
    outcome: Outcome
    records: dict[str, Record]
    show_secrets: bool = False
    problems: list[str] = field(default_factory=list)  # inventory/template problems (the files in force stay)

    def shown(self, key: str, value: str) -> str:
        return MASK if value and is_secret(key) and not self.show_secrets else value

    def as_json(self) -> dict[str, Any]:
        out = self.outcome.as_json()
        for download in out["downloads"]:
            record = self.records.get(download["url"])
            if record is not None:
                download.update(name=record.name, status=record.status, origin=record.origin,
                                served_encrypted=record.encrypted, detail=record.detail)
        for key, param in out["parameters"].items():
            param["value"] = self.shown(key, param["value"])
            for entry in param["overridden"] + param["ignored"]:
                entry["value"] = self.shown(key, entry["value"])
        out["sources"] = [{"name": s.name, "url": s.url, "note": s.note, "used": s is self.source}
                          for s in self.sources]
        out["inventory_row"] = self.inventory.row if self.inventory else None
        out["problems"] = self.problems
        return out


def explain(settings: Settings, mac: str, model: Model, *, inventory: InventoryPhone | None = None,
            firmware: int | None = None, preset: dict[str, str] | None = None, url: str | None = None,
            show_secrets: bool = False, iface: Interface | None = None,
            provisioning: Provisioning | None = None) -> Explanation:
    if provisioning is None:
        provisioning = Provisioning(settings, create_keys=False)
        provisioning.rendered.refresh(force=True)
    problems = [str(p) for p in provisioning.rendered.problems]
    sources = url_sources(settings, mac, model, iface)
    source = chosen(sources)
    server_url = url or (source.url if source and source.url else
                         expand(settings.server.url, url_variables(settings, iface)))
    tree = ServedTree(build_resolver(settings, None, admin=True), provisioning)
    hosts = served_hosts(settings, iface, [s.url for s in sources if s.url] + ([url] if url else []))
    fetcher = TreeFetcher(tree, served_schemes(settings), hosts)
    phone = Phone(mac, model, firmware, preset or {})
    outcome = run(phone, server_url, fetcher)
    return Explanation(phone, inventory, sources, None if url else source, outcome, fetcher.records,
                       show_secrets, problems)


def _status(record: Record | None, found: bool) -> str:
    if record is None:
        return "found" if found else "missing"
    if record.status == "found":
        if record.origin.startswith("rendered:"):
            return f"found, rendered from {record.origin[9:]}"
        if record.origin.startswith("security-key:"):
            return "found, generated key file"
        return f"found ({record.origin})" if record.origin != "static" else "found"
    if record.status == "external":
        return f"external: {record.detail}"
    return record.status


def format_text(ex: Explanation) -> str:
    out = ex.outcome
    phone = ex.phone
    lines = [f"phone {phone.mac}: {phone.model.product} (model {phone.model.id}"
             + (f", firmware {phone.firmware})" if phone.firmware else ")")
             + (f", inventory row {ex.inventory.row}" if ex.inventory else "")]
    lines.append("")
    lines.append("Where it learns the server (guide: Zero Touch > PnP > DHCPv4 custom option > 66 > 43; "
                 "DHCPv6 custom option > 59):")
    for source in ex.sources:
        mark = "  <- followed" if source is ex.source else ""
        value = source.url if source.url else "-"
        note = f"  ({source.note})" if source.note else ""
        lines.append(f"  {source.name:28} {value}{note}{mark}")
    lines.append(f"Server URL: {out.server_url}" + ("" if ex.source else " (given)"))
    if "{ipv4}" in out.server_url or "{ipv6}" in out.server_url:
        lines.append("  ({ipv4}/{ipv6}: the addresses of server.interface, which is not on this machine)")
    lines.append("")
    if out.mechanism == "boot":
        mode = {0: "append mode", 1: "exclude mode"}.get(out.excluded_mode or 0, "")
        head = (f"Downloads (boot file {out.boot}; overwrite_mode = {out.overwrite_mode}; "
                f"specific_model.excluded_mode = {out.excluded_mode}, {mode}"
                + ("" if out.exclude_supported or not out.excluded_mode else ", unsupported here: append mode")
                + "):") if out.boot else "Downloads:"
    else:
        head = "Downloads (no boot file: the old mechanism, common CFG then MAC CFG):"
    lines.append(head)
    for number, download in enumerate(out.downloads, start=1):
        record = ex.records.get(download.url)
        status = _status(record, download.found)
        extra = []
        if download.encrypted:
            extra.append("encrypted")
        if download.note:
            extra.append(download.note)
        if download.found and not download.applied and download.kind.value in ("cfg", "local", "boot") \
                and not download.note:
            extra.append("not applied")
        tail = f"; {'; '.join(extra)}" if extra else ""
        lines.append(f"  {number:2}. {download.url}")
        lines.append(f"      {download.kind.value}: {download.why} -> {status}{tail}")
    for note in out.notes:
        lines.append(f"  note: {note}")
    lines.append("")
    applied = {k: p for k, p in out.params.items() if any(a.applied for a in p.history)}
    lines.append(f"Parameters ({len(applied)}; final value, where from, what it overrode):")
    for key, param in applied.items():
        final = param.final
        value = ex.shown(key, final.value) if final.value else "(factory default)"
        lines.append(f"  {key} = {value}    [{_short(final.file)}:{final.line}]"
                     + (f" {final.note}" if final.note else ""))
        for old in param.overridden:
            shown = ex.shown(key, old.value) if old.value else "(factory default)"
            lines.append(f"      overrode {shown} [{_short(old.file)}:{old.line}]")
        for kept in (a for a in param.history if not a.applied):
            lines.append(f"      {kept.note} [{_short(kept.file)}:{kept.line}]")
    if out.findings or ex.problems:
        lines.append("")
        lines.append("Findings:")
        lines += [f"  {p}" for p in ex.problems]
        lines += [f"  {f}" for f in out.findings]
    return "\n".join(lines) + "\n"


def _short(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[-1] if "://" in url else url
