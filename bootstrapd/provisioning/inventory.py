"""The inventory: one phone per row, ``mac`` and ``model`` plus any columns the templates use.

CSV (a header row naming the columns) or TOML (``[[phone]]`` tables). Every problem is an :class:`InventoryError`
naming the file, the row (its line) and the column. Values are refused when they hold a line break or a control
character: a template copies them into a phone's configuration, where a line break would add ``key = value``
lines of the value's choosing. Values are never shown in messages (they include SIP passwords).
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bootstrapd.configfile import KeyLocator
from bootstrapd.provisioning.models import Model, table
from bootstrapd.provisioning.names import parse_mac

_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Line breaks and control characters as any line-splitting reader sees them: C0, DEL, C1, and Unicode's separators.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class InventoryError(Exception):
    def __init__(self, file: str, row: int | None, column: str | None, message: str) -> None:
        self.file, self.row, self.column, self.message = file, row, column, message
        where = f"{file}:{row}" if row else file
        super().__init__(f"{where}: {column}: {message}" if column else f"{where}: {message}")


@dataclass(frozen=True)
class InventoryPhone:
    mac: str  # 12 lower-case hex digits
    model: Model
    row: int  # the line of its row
    values: dict[str, str] = field(default_factory=dict)  # every column, mac and model normalised

    def context(self) -> dict[str, str]:
        """What a template sees as ``phone``."""
        return {**self.values, "mac": self.mac, "model": self.model.id, "product": self.model.product,
                "common_cfg": self.model.common_cfg, "pn": self.model.pn}


@dataclass(frozen=True)
class Inventory:
    file: str
    phones: tuple[InventoryPhone, ...] = ()
    errors: tuple[InventoryError, ...] = ()

    def __iter__(self) -> Iterator[InventoryPhone]:
        return iter(self.phones)

    def find(self, mac: str) -> InventoryPhone | None:
        for phone in self.phones:
            if phone.mac == mac:
                return phone
        return None


def forbidden_character(value: str) -> str | None:
    match = _FORBIDDEN.search(value)
    return f"U+{ord(match.group()):04X}" if match else None


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[InventoryError] = []
        self.phones: list[InventoryPhone] = []
        self.seen: dict[str, int] = {}

    def fail(self, row: int | None, column: str | None, message: str) -> None:
        self.errors.append(InventoryError(self.file, row, column, message))

    def column_name(self, name: str, row: int) -> bool:
        if not _COLUMN.match(name):
            self.fail(row, name or "(empty)", "a column name must be letters, digits and '_' (a template variable)")
            return False
        return True

    def add(self, row: int, values: dict[str, str], lines: dict[str, int] | None = None) -> None:
        lines = lines or {}
        ok = True
        for column, value in values.items():
            bad = forbidden_character(value)
            if bad:
                self.fail(lines.get(column, row), column,
                          f"the value holds a line break or control character ({bad}): refused, it would inject "
                          f"lines into the phone's configuration")
                ok = False
        for column in ("mac", "model"):
            if not values.get(column):
                self.fail(row, column, "is required")
                ok = False
        if not ok:
            return
        mac = parse_mac(values["mac"])
        if mac is None:
            self.fail(lines.get("mac", row), "mac", f"{values['mac'][:40]!r} is not a MAC address "
                                                    f"(such as 00:15:65:aa:bb:cc)")
            return
        model = table().find(values["model"])
        if model is None:
            hint = table().suggest(values["model"])
            self.fail(lines.get("model", row), "model", f"unknown model {values['model'][:40]!r}"
                      + (f" (known names include {', '.join(hint)})" if hint else " (see bootstrapd/data/models.toml)"))
            return
        if mac in self.seen:
            self.fail(lines.get("mac", row), "mac", f"{mac} is listed twice (also row {self.seen[mac]})")
            return
        self.seen[mac] = row
        self.phones.append(InventoryPhone(mac, model, row, {**values, "mac": mac, "model": model.id}))

    def result(self) -> Inventory:
        return Inventory(self.file, tuple(self.phones), tuple(self.errors))


def parse_csv(text: str, file: str) -> Inventory:
    reader = _Reader(file)
    text = text.removeprefix("\ufeff")
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    try:
        for record in rows:
            line = rows.line_num
            if not record or all(not f.strip() for f in record) or record[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [name.strip() for name in record]
                good = all([reader.column_name(name, line) for name in header])
                if len(set(header)) != len(header):
                    reader.fail(line, None, "a column is named twice")
                    good = False
                for required in ("mac", "model"):
                    if required not in header:
                        reader.fail(line, required, "the header row has no such column")
                        good = False
                if not good:
                    return reader.result()
                continue
            if len(record) != len(header):
                reader.fail(line, None, f"{len(record)} fields, the header has {len(header)}")
                continue
            reader.add(line, {name: value.strip() for name, value in zip(header, record, strict=True)})
    except csv.Error as exc:
        reader.fail(rows.line_num, None, f"not valid CSV: {exc}")
    if header is None:
        reader.fail(None, None, "no header row (mac,model,...)")
    return reader.result()


def parse_toml(text: str, file: str) -> Inventory:
    reader = _Reader(file)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        reader.fail(int(match.group(1)) if match else None, None, f"not valid TOML: {exc}")
        return reader.result()
    locator = KeyLocator(text)
    extra = [k for k in data if k != "phone"]
    for key in extra:
        reader.fail(locator.line(key), key, "unknown key (phones are [[phone]] tables)")
    phones = data.get("phone", [])
    if not isinstance(phones, list) or not all(isinstance(p, dict) for p in phones):
        reader.fail(locator.line("phone"), "phone", "must be [[phone]] tables")
        return reader.result()
    for index, entry in enumerate(phones):
        row = locator.line(f"phone[{index}]") or 0
        values: dict[str, str] = {}
        lines: dict[str, int] = {}
        for column, value in entry.items():
            line = locator.line(f"phone[{index}].{column}") or row
            lines[column] = line
            if not reader.column_name(column, line):
                continue
            if isinstance(value, bool) or not isinstance(value, str | int):
                reader.fail(line, column, "must be a string or a whole number")
                continue
            values[column] = str(value).strip()
        reader.add(row, values, lines)
    return reader.result()


def read_inventory(path: Path) -> Inventory:
    """The inventory at ``path`` (``.toml``: TOML, anything else: CSV); problems are in ``errors``."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return Inventory(file, errors=(InventoryError(file, None, None, f"cannot read: {exc.strerror}"),))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return Inventory(file, errors=(InventoryError(file, line, None, "not UTF-8 text"),))
    return parse_toml(text, file) if path.suffix.lower() == ".toml" else parse_csv(text, file)
