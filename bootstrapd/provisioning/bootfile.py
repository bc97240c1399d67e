"""Boot files (``<mac>.boot``, ``y000000000000.boot``) as the phone reads them.

Guide, "Editing Common Boot File": the header line, ``#`` comments, ``include:config <URL>`` or
``include:config "URL"`` (relative to the boot file or absolute; top to bottom; repeatable; optionally prefixed with
``[MODEL,MODEL]``), ``overwrite_mode`` (default 1) and ``specific_model.excluded_mode`` (default 0). Parsing never
raises; everything odd is a finding with its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bootstrapd.provisioning.cfgfile import parse_assignment, split
from bootstrapd.provisioning.findings import Finding, error, warning

_INCLUDE = re.compile(r"^include:config(?:\s*<([^>]*)>|\s*\"([^\"]*)\"|\s+(\S.*))?\s*$")
_SETTINGS = ("overwrite_mode", "specific_model.excluded_mode")


@dataclass(frozen=True)
class Include:
    url: str
    line: int
    models: tuple[str, ...]  # () = not model-specific


@dataclass(frozen=True)
class Setting:
    value: int
    line: int
    models: tuple[str, ...]


@dataclass
class BootFile:
    name: str
    header_ok: bool
    includes: list[Include] = field(default_factory=list)
    settings: dict[str, list[Setting]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


def parse_boot(data: bytes | str, name: str) -> BootFile:
    text = split(data, name, "boot")
    boot = BootFile(name, text.header_ok, findings=text.findings)
    for line in text.lines:
        if line.body.startswith("include:config"):
            match = _INCLUDE.match(line.body)
            if match is None or not any(match.groups()):
                boot.findings.append(error(name, line.number, "bad-include",
                                           "include:config needs a URL in <...> or \"...\""))
                continue
            url = next(g for g in match.groups() if g is not None).strip()
            if match.group(3) is not None:
                boot.findings.append(warning(name, line.number, "include-unquoted",
                                             "the URL is not in <...> or \"...\" (the guide's only forms)"))
            if not url:
                boot.findings.append(error(name, line.number, "bad-include", "include:config with an empty URL"))
                continue
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
                boot.findings.append(error(name, line.number, "bad-include", "control character in the URL"))
                continue
            if not url.split("?")[0].lower().endswith(".cfg"):
                boot.findings.append(warning(name, line.number, "include-not-cfg",
                                             f"{url!r} does not name a .cfg file (the guide: the format must be "
                                             f"*.cfg)"))
            boot.includes.append(Include(url, line.number, line.models))
            continue
        entry = parse_assignment(line, name, boot.findings)
        if entry is None:
            continue
        if entry.key not in _SETTINGS:
            boot.findings.append(warning(name, line.number, "not-boot-setting",
                                         f"{entry.key} is not a boot-file setting (only {' and '.join(_SETTINGS)}):"
                                         f" put parameters in a CFG file"))
            continue
        if entry.value not in ("0", "1"):
            boot.findings.append(error(name, line.number, "bad-boot-value",
                                       f"{entry.key} must be 0 or 1, not {entry.value[:20]!r}"))
            continue
        boot.settings.setdefault(entry.key, []).append(Setting(int(entry.value), entry.line, entry.models))
    for key, values in boot.settings.items():
        plain = [s for s in values if not s.models]
        if len({s.value for s in plain}) > 1:
            boot.findings.append(warning(name, plain[-1].line, "duplicate-key",
                                         f"{key} is set twice with different values (line {plain[0].line} and "
                                         f"here): the later one wins"))
    return boot


def format_boot(includes: list[Include], settings: dict[str, int]) -> str:
    lines = ["#!version:1.0.0.1"]
    for inc in includes:
        prefix = f"[{','.join(inc.models)}]" if inc.models else ""
        lines.append(f"{prefix}include:config \"{inc.url}\"")
    lines += [f"{key} = {value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"
