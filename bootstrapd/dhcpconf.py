"""Configuration pieces both DHCP servers read the same way: option values, option tables, address ranges, MACs and
the criteria of client classes (with the built-in classes shipped as data).

An option value is wire bytes, or, when its text uses a placeholder of :mod:`bootstrapd.urltemplates`, a
:class:`Text` (or :class:`SubOptions` holding one) that the server renders (:func:`render`) from the interface's
addresses when it starts or reloads.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from importlib import resources
from ipaddress import IPv4Address, IPv6Address
from typing import Any, TypedDict, TypeVar

from bootstrapd.configfile import Table
from bootstrapd.urltemplates import LONGEST, expand, has_placeholder


def parse_mac(text: str) -> bytes:
    cleaned = text.replace(":", "").replace("-", "").replace(".", "").strip()
    if len(cleaned) % 2 or not cleaned:
        raise ValueError(f"{text!r} is not a MAC address or prefix")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a MAC address or prefix") from None


def format_mac(mac: bytes) -> str:
    return mac.hex(":")


def option_code(key: str, low: int, high: int) -> int:
    try:
        code = int(key)
    except ValueError:
        raise ValueError(f"{key!r} is not an option code") from None
    if not low <= code <= high:
        raise ValueError(f"option code {code} is outside {low}-{high}")
    return code


@dataclass(frozen=True, slots=True)
class Text:
    """Option text with placeholders ({ipv4} …), sent as UTF-8 once they are filled in."""

    template: str


@dataclass(frozen=True, slots=True)
class SubOptions:
    """Encapsulated sub-options (1-byte code and length, the form of DHCPv4 option 43) of which one is a template."""

    items: tuple[tuple[int, OptionValue], ...]


OptionValue = bytes | Text | SubOptions


def render(value: OptionValue, variables: Mapping[str, str]) -> bytes:
    """An option value as wire bytes, its placeholders filled in from ``variables``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, Text):
        return expand(value.template, variables).encode("utf-8")
    return b"".join(_tlv(code, render(sub, variables)) for code, sub in value.items)


def render_map(options: Mapping[int, OptionValue], variables: Mapping[str, str]) -> dict[int, bytes]:
    return {code: render(value, variables) for code, value in options.items()}


def longest(value: OptionValue) -> int:
    """The length of ``value`` on the wire with the longest values its placeholders can take."""
    return len(render(value, LONGEST))


def _tlv(code: int, data: bytes) -> bytes:
    return bytes((code, len(data))) + data


def text_value(text: str) -> OptionValue:
    """A text option (a template when it has placeholders), e.g. ``server.url`` as the default of option 66."""
    return Text(text) if has_placeholder(text) else text.encode("utf-8")


def option_value(value: Any, *, sub_code_max: int = 254, sub_length_max: int = 255) -> OptionValue:
    """An option's configured value.

    A string is sent as text (a :class:`Text` template when it uses {ipv4}, {ipv6} or {interface}); ``hex:0104...``
    as raw bytes; a table of sub-option codes (``{1 = "http://..."}``) as encapsulated sub-options (code, length,
    value: the TR-069 form of DHCPv4 option 43).
    """
    if isinstance(value, str):
        if value.lower().startswith("hex:"):
            digits = value[4:].replace(":", "").replace(" ", "")
            try:
                return bytes.fromhex(digits)
            except ValueError:
                raise ValueError(f"{value!r} is not valid hex") from None
        return text_value(value)
    if isinstance(value, dict):
        items: list[tuple[int, OptionValue]] = []
        for sub, subvalue in value.items():
            code = option_code(sub, 1, sub_code_max)
            data = option_value(subvalue)
            if longest(data) > sub_length_max:
                raise ValueError(f"sub-option {code} is longer than {sub_length_max} bytes")
            items.append((code, data))
        if any(not isinstance(data, bytes) for _, data in items):
            return SubOptions(tuple(items))
        return b"".join(_tlv(code, data) for code, data in items if isinstance(data, bytes))
    raise ValueError(f"an option value must be text, 'hex:...' or a table of sub-options, not {value!r}")


def load_option_table(table: Table, *, high: int, reserved: Collection[int],
                      max_length: int) -> dict[int, OptionValue]:
    """``[dhcpN.options]``: option code -> value; codes the server sets itself are refused."""
    options: dict[int, OptionValue] = {}
    for key, value in table.items():
        try:
            code = option_code(key, 1, high)
            if code in reserved:
                raise ValueError(f"option {code} is set by the server itself")
            data = option_value(value)
            if longest(data) > max_length:
                raise ValueError(f"longer than {max_length} bytes")
            options[code] = data
        except ValueError as exc:
            raise table.error(key, str(exc)) from None
    return options


def parse_range(text: Any, version: int) -> tuple[Any, Any]:
    """``"first-last"`` as two addresses of the given IP version, at most 2^20 apart."""
    example = "10.77.0.100-10.77.0.199" if version == 4 else "fd77::100-fd77::1ff"
    if not isinstance(text, str) or "-" not in text:
        raise ValueError(f"must be 'first-last', e.g. '{example}'")
    kind = IPv4Address if version == 4 else IPv6Address
    first, last = (kind(p.strip()) for p in text.split("-", 1))
    if int(last) < int(first):
        raise ValueError(f"{last} comes before {first}")
    if int(last) - int(first) >= 1 << 20:
        raise ValueError("more than 1,048,576 addresses")
    return first, last


def address_list(value: Any, version: int) -> list[Any]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("not a list")
    return [ipaddress.ip_address(v) if version == 0 else (IPv4Address if version == 4 else IPv6Address)(v)
            for v in items]


# -- client classes -----------------------------------------------------------------------------------------------

class Criteria(TypedDict):
    vendor_class: tuple[bytes, ...]  # option 60 / 16 prefixes, case-insensitive
    vendor_class_contains: tuple[bytes, ...]  # substrings of the same
    mac_prefix: tuple[bytes, ...]  # OUIs (or longer prefixes) of the client's MAC


def _texts(values: Any) -> tuple[bytes, ...]:
    return tuple(v.encode() for v in values)


def _macs(value: Any) -> list[bytes]:
    return [parse_mac(m) for m in ([value] if isinstance(value, str) else value)]


def load_criteria(table: Table, base: Any | None) -> Criteria:
    """The matching keys every class has; a key left out keeps the base (built-in) class's value."""

    def pick(key: str, read: Any) -> tuple[bytes, ...]:
        if table.has(key):
            return tuple(read(key))
        return tuple(getattr(base, key)) if base is not None else ()

    return Criteria(
        vendor_class=pick("vendor_class", lambda k: _texts(table.text_list(k))),
        vendor_class_contains=pick("vendor_class_contains", lambda k: _texts(table.text_list(k))),
        mac_prefix=pick("mac_prefix", lambda k: table.parse(k, _macs, what="MAC prefixes")),
    )


C = TypeVar("C")


def load_classes(table: Table, builtin: dict[str, C], load: Callable[[str, Table, C | None], C]) -> tuple[C, ...]:
    """``[dhcpN.class.NAME]`` sections on top of the built-in classes: a section named like a built-in class
    overrides the keys it sets (``load`` gets the built-in one as its base)."""
    classes = dict(builtin)
    for name, _ in list(table.items()):
        classes[name] = load(name, table.table(name), classes.get(name))
    return tuple(classes.values())


def builtin_criteria() -> dict[str, Criteria]:
    """Classes shipped as data (``bootstrapd/data/classes.toml``): vendor class strings and MAC OUIs, by name."""
    text = resources.files("bootstrapd.data").joinpath("classes.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return {
        name: Criteria(
            vendor_class=_texts(spec.get("vendor_class", [])),
            vendor_class_contains=_texts(spec.get("vendor_class_contains", [])),
            mac_prefix=tuple(parse_mac(m) for m in spec.get("mac_prefix", [])),
        )
        for name, spec in data.get("class", {}).items()
    }
