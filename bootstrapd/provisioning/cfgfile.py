"""CFG files as the phone reads them, with a finding (file, line) for everything it would trip over.

The rules (guide: "Editing Common CFG File", "Editing MAC-Oriented CFG File", "Creating a New CFG File"):

- line 1 is the header ``#!version:1.0.0.1`` (the guide also prints ``#!/version:1.0.0.1``: accepted, with a
  warning); a file without it is ignored by the phone;
- a line starting with ``#`` is a comment;
- every other line is ``key = value``, one parameter per line, the value possibly blank, optionally prefixed with
  ``[MODEL,MODEL]`` to restrict it to those models (valid names: the model table).

Parsing never raises: arbitrary bytes give entries and findings. Boot files share the line handling
(:mod:`bootstrapd.provisioning.bootfile`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bootstrapd.provisioning.findings import Finding, error, warning
from bootstrapd.provisioning.models import table

HEADER = "#!version:1.0.0.1"
HEADER_SLASH = "#!/version:1.0.0.1"

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_PREFIX = re.compile(r"^\s*\[([^\]]*)\]\s*")


@dataclass(frozen=True)
class Line:
    number: int
    text: str  # without the line ending
    models: tuple[str, ...]  # the [MODEL,...] prefix, () when none
    body: str  # the text after the prefix, stripped


@dataclass
class Text:
    """A file split into lines, its header checked."""

    name: str
    lines: list[Line] = field(default_factory=list)
    header_ok: bool = False
    findings: list[Finding] = field(default_factory=list)


def decode(data: bytes | str, name: str, findings: list[Finding]) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        findings.append(warning(name, data[:exc.start].count(b"\n") + 1, "not-utf8",
                                "not UTF-8 text: read as Latin-1 (non-ASCII values may not reach the phone as meant)"))
        return data.decode("latin-1")


def model_names(text: str, name: str, number: int, findings: list[Finding]) -> tuple[str, ...]:
    """The names of a ``[T46S, T23G]`` prefix; unknown names are findings (such a line is for no phone)."""
    names = tuple(part.strip() for part in text.split(","))
    known = table().prefix_names
    for part in names:
        if not part:
            findings.append(error(name, number, "empty-model-name", f"empty model name in [{text}]"))
        elif part not in known:
            hint = table().suggest(part)
            findings.append(error(name, number, "unknown-model", f"unknown model name {part!r} in [{text}]"
                                  + (f" (valid names include {', '.join(hint)})" if hint else "")
                                  + ": the line is for no phone"))
    return tuple(n for n in names if n)


def split(data: bytes | str, name: str, kind: str = "CFG") -> Text:
    """The lines of a CFG or boot file, with header findings; comments and blank lines left out."""
    out = Text(name)
    text = decode(data, name, out.findings)
    if text.startswith("\ufeff"):
        out.findings.append(warning(name, 1, "bom", "starts with a byte-order mark before the header"))
        text = text[1:]
    raw = text.split("\n")
    first = raw[0].rstrip("\r").rstrip() if raw else ""
    if first == HEADER:
        out.header_ok = True
    elif first == HEADER_SLASH:
        out.header_ok = True
        out.findings.append(warning(name, 1, "header-slash", f"header {HEADER_SLASH!r}: the guide prints it, but "
                                    f"{HEADER!r} is the form every firmware reads"))
    else:
        hint = " (it must be the very first line)" if any(r.strip() in (HEADER, HEADER_SLASH) for r in raw) else ""
        out.findings.append(error(name, 1, "missing-header",
                                  f"first line is {first[:40]!r}, not {HEADER!r}{hint}: the phone ignores this "
                                  f"{kind} file"))
    for number, line in enumerate(raw, start=1):
        line = line.rstrip("\r")
        stripped = line.strip()
        if number == 1 and out.header_ok:
            continue
        if not stripped or stripped.startswith("#"):
            continue
        models: tuple[str, ...] = ()
        body = stripped
        prefix = _PREFIX.match(line)
        if prefix:
            models = model_names(prefix.group(1), name, number, out.findings)
            body = line[prefix.end():].strip()
            if not models:
                models = ("",)  # an empty prefix: a line for no phone, not an unprefixed one
        out.lines.append(Line(number, line, models, body))
    return out


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int
    models: tuple[str, ...]  # () = every model


@dataclass
class CfgFile:
    name: str
    entries: list[Entry]
    header_ok: bool
    findings: list[Finding]


def parse_assignment(line: Line, name: str, findings: list[Finding]) -> Entry | None:
    key, sep, value = line.body.partition("=")
    key = key.strip()
    if not sep or not key:
        findings.append(error(name, line.number, "not-key-value",
                              f"not 'key = value': {line.text.strip()[:60]!r}"))
        return None
    if not _KEY.match(key):
        findings.append(error(name, line.number, "bad-key", f"{key[:60]!r} is not a parameter name"))
        return None
    return Entry(key, value.strip(), line.number, line.models)


def parse_cfg(data: bytes | str, name: str) -> CfgFile:
    text = split(data, name)
    findings = text.findings
    entries: list[Entry] = []
    seen: dict[tuple[str, tuple[str, ...]], Entry] = {}
    for line in text.lines:
        if line.body.startswith("include:config"):
            findings.append(warning(name, line.number, "include-in-cfg",
                                    "include:config only works in boot files: the phone ignores it here"))
            continue
        entry = parse_assignment(line, name, findings)
        if entry is None:
            continue
        if entry.key in ("overwrite_mode", "specific_model.excluded_mode"):
            findings.append(warning(name, line.number, "boot-setting-in-cfg",
                                    f"{entry.key} only works in boot files"))
        scope = (entry.key, tuple(sorted(entry.models)))
        before = seen.get(scope)
        if before is not None and before.value != entry.value:
            findings.append(warning(name, line.number, "duplicate-key",
                                    f"{entry.key} is set twice with different values (line {before.line} and "
                                    f"here): the later one wins"))
        seen[scope] = entry
        entries.append(entry)
    return CfgFile(name, entries, text.header_ok, findings)


def format_cfg(entries: list[Entry]) -> str:
    """A CFG file with these entries (the inverse of :func:`parse_cfg` for well-formed entries)."""
    lines = [HEADER]
    for entry in entries:
        prefix = f"[{','.join(entry.models)}]" if entry.models else ""
        lines.append(f"{prefix}{entry.key} = {entry.value}")
    return "\n".join(lines) + "\n"
