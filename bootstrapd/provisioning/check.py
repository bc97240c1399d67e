"""``bootstrapd check``: the tree, the inventory and the templates read as every phone would read them.

Two passes, both with the phone model's own parsers and algorithm (no second copy of the rules):

1. every file of the tree, static and rendered, on its own: headers, syntax, model names, AES keys, names the phone
   would never ask for, boot files beside each other, include URLs this server does not serve;
2. the download algorithm for every model of the model table (with a MAC no file is named after) and for every
   inventory phone and MAC-named boot file, so an include is checked for every model that would download it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from bootstrapd.config import Settings
from bootstrapd.net.interfaces import Interface
from bootstrapd.provisioning import yealink_aes
from bootstrapd.provisioning.bootfile import parse_boot
from bootstrapd.provisioning.cfgfile import parse_cfg
from bootstrapd.provisioning.discovery import chosen, url_sources
from bootstrapd.provisioning.fetcher import TreeFetcher, served_hosts, served_schemes
from bootstrapd.provisioning.files import build_resolver
from bootstrapd.provisioning.findings import Finding, Severity, error, warning
from bootstrapd.provisioning.inventory import InventoryError
from bootstrapd.provisioning.models import COMMON_BOOT, Model, table
from bootstrapd.provisioning.names import is_common_cfg_name, mac_of, upper_case_mac
from bootstrapd.provisioning.phone import AES_COMMON, AES_MAC, Phone, join, run, server_base
from bootstrapd.provisioning.resolver import Refused
from bootstrapd.provisioning.templates import TemplateError
from bootstrapd.provisioning.tree import Provisioning, ServedTree, static_names

NO_SUCH_MAC = "000000000000"  # a MAC no file is named after: the model's common files only


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    phones: int = 0
    models: int = 0

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity is Severity.WARNING)


class _Collector:
    """Findings merged by (file, line, code, message); the models each applies to are united."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, int | None, str, str], tuple[Finding, set[str]]] = {}

    def add(self, finding: Finding, model: str | None = None) -> None:
        key = (finding.file, finding.line, finding.code, finding.message)
        entry = self.found.setdefault(key, (finding, set()))
        if model:
            entry[1].add(model)

    def result(self, all_models: int) -> list[Finding]:
        out = []
        for finding, models in self.found.values():
            shown = tuple(sorted(models)) if models and len(models) < all_models else ()
            out.append(Finding(finding.severity, finding.file, finding.line, finding.code, finding.message, shown))
        return sorted(out, key=lambda f: (f.file, f.line or 0, f.severity != Severity.ERROR, f.code))


def _problem(problem: InventoryError | TemplateError) -> Finding:
    if isinstance(problem, InventoryError):
        return error(problem.file, problem.row, "inventory", (f"{problem.column}: " if problem.column else "")
                     + problem.message)
    phone = f" (phone {problem.phone})" if problem.phone else ""
    return error(problem.template, problem.line, "template", problem.message + phone)


def _lint_file(name: str, data: bytes, encrypted_by_us: bool, out: _Collector, label: str) -> None:
    if yealink_aes.looks_encrypted(data):
        if name.endswith(".cfg"):
            out.add(warning(name, None, "already-encrypted", "already encrypted: not checked"
                            + ("; bootstrapd encrypts it once more on the way out" if encrypted_by_us else "")))
        return
    if name.endswith(".boot"):
        for finding in parse_boot(data, label).findings:
            out.add(finding)
    elif name.endswith(".cfg"):
        cfg = parse_cfg(data, label)
        for finding in cfg.findings:
            out.add(finding)
        for entry in cfg.entries:
            if entry.key in (AES_COMMON, AES_MAC) and entry.value:
                problem = yealink_aes.key_problem(entry.value)
                if problem:
                    out.add(error(label, entry.line, "bad-aes-key", f"{entry.key}: the key {problem}"))


def _lint_names(names: Iterable[str], provisioning: Provisioning, out: _Collector) -> None:
    common_cfgs = table().common_cfgs
    by_folder: dict[str, set[str]] = defaultdict(set)
    for name in names:
        folder, _, base = name.rpartition("/")
        by_folder[folder].add(base)
        if upper_case_mac(name):
            out.add(error(name, None, "upper-case-mac", f"the phone asks for {base.lower()} (lower case): it never "
                                                        f"reads {base}"))
        if is_common_cfg_name(name) and base not in common_cfgs:
            out.add(warning(name, None, "unknown-common-cfg", "no model of the model table has this common CFG"))
        if base.endswith(".boot") and base != COMMON_BOOT and mac_of(name) is None and not upper_case_mac(name):
            hint = " (the common boot file is y000000000000.boot, twelve zeros)" if base.startswith("y0") else ""
            out.add(warning(name, None, "unknown-boot", f"no phone requests {base}{hint}"))
        if base.endswith(yealink_aes.SECURITY_SUFFIX) and provisioning.security is not None:
            source = provisioning.security.source_of(name)
            if source and provisioning.keys and provisioning.keys.key_for(source):
                out.add(warning(name, None, "static-key-file", "bootstrapd serves its own key file for this name "
                                                              "(provisioning.encrypt): this one is never served"))
    for folder, bases in by_folder.items():
        if COMMON_BOOT in bases:
            for base in sorted(b for b in bases if b.endswith(".boot") and mac_of(b)):
                shown = f"{folder}/{base}" if folder else base
                out.add(warning(shown, None, "mac-boot-beside-common",
                                f"phone {base[:12]} reads only this boot file, never the common {COMMON_BOOT} "
                                f"beside it (guide: Troubleshooting)"))


def _lint_includes(name: str, data: bytes, base_url: str, fetcher: TreeFetcher, out: _Collector) -> None:
    boot = parse_boot(data, name)
    boot_url = join(base_url, name)
    for inc in boot.includes:
        url = join(boot_url, inc.url)
        if fetcher.name_of(url) is None:
            out.add(warning(name, inc.line, "include-external", f"include:config {inc.url!r}: "
                                                               f"{fetcher.why_external(url)}; not checked"))


def check(settings: Settings, iface: Interface | None = None) -> Report:
    report = Report()
    out = _Collector()
    provisioning = Provisioning(settings, create_keys=False)
    provisioning.rendered.refresh(force=True)
    for problem in provisioning.rendered.problems:
        out.add(_problem(problem))
    inventory = provisioning.rendered.inventory
    if not os.path.isdir(settings.server.root):
        out.add(error(str(settings.server.root), None, "no-root", "server.root is not a folder"))
        report.findings = out.result(1)
        return report
    tree = ServedTree(build_resolver(settings, None, admin=True), provisioning)
    statics = list(static_names(settings.server.root))
    rendered = dict(provisioning.rendered.current.files)
    names = sorted({*statics, *rendered})
    report.files = len(names)
    _lint_names(names, provisioning, out)

    models = list(table())
    sources_urls: set[str] = set()
    run_urls: dict[str, str] = {}
    for model in models:
        source = chosen(url_sources(settings, NO_SUCH_MAC, model, iface))
        url = source.url if source and source.url else settings.server.url
        sources_urls.add(url)
        run_urls[model.id] = url
    hosts = served_hosts(settings, iface, sorted(sources_urls))
    fetcher = TreeFetcher(tree, served_schemes(settings), hosts)
    base_url = server_base(settings.server.url if not sources_urls else sorted(sources_urls)[0])[0]

    for name in names:
        try:
            data = rendered[name].data if name in rendered else (settings.server.root / name).read_bytes()
        except OSError as exc:
            out.add(error(name, None, "unreadable", f"cannot read: {exc.strerror}"))
            continue
        label = name
        _lint_file(name, data, bool(provisioning.transform and provisioning.transform.applies(name)), out, label)
        if name.endswith(".boot") and not yealink_aes.looks_encrypted(data):
            _lint_includes(name, data, base_url, fetcher, out)

    runs: list[tuple[Phone, str]] = [(Phone(NO_SUCH_MAC, m), run_urls[m.id]) for m in models]
    listed = {p.mac for p in inventory}
    for phone in inventory:
        source = chosen(url_sources(settings, phone.mac, phone.model, iface))
        runs.append((Phone(phone.mac, phone.model), source.url if source and source.url else settings.server.url))
    for name in names:
        mac = mac_of(name)
        if mac and name.endswith(".boot") and mac not in listed:
            runs += [(Phone(mac, m), run_urls[m.id]) for m in models]
    for one, url in runs:
        _run_one(one, url, fetcher, out)
    report.phones = len(inventory.phones)
    report.models = len(models)
    report.findings = out.result(len(models))
    return report


def _run_one(phone: Phone, url: str, fetcher: TreeFetcher, out: _Collector) -> None:
    fetcher.records.clear()
    outcome = run(phone, url, fetcher)
    for finding in outcome.findings:
        name = fetcher.name_of(finding.file)
        if finding.target and fetcher.name_of(finding.target) is None:
            continue  # an external URL: reported once by the file pass
        if phone.mac == NO_SUCH_MAC and finding.target and NO_SUCH_MAC in finding.target:
            continue  # the files of a phone that is not in the inventory are missing as they should be
        label = name if name is not None else finding.file
        message = finding.message
        if finding.target:
            target = fetcher.name_of(finding.target)
            message = message.replace(f"{finding.target} is not on the server", f"{target} is not in the tree")
        out.add(Finding(finding.severity, label, finding.line, finding.code, message), phone.model.id)


def format_text(report: Report) -> str:
    lines = [str(f) for f in report.findings]
    summary = (f"{report.errors} error(s), {report.warnings} warning(s) in {report.files} file(s), "
               f"{report.phones} inventory phone(s), {report.models} model(s)")
    return "\n".join([*lines, summary]) + "\n"


def as_json(report: Report) -> dict[str, object]:
    return {"errors": report.errors, "warnings": report.warnings, "files": report.files, "phones": report.phones,
            "models": report.models, "findings": [f.as_json() for f in report.findings]}


__all__ = ["Model", "Refused", "Report", "as_json", "check", "format_text"]
