"""The ``[dhcp4]`` section: pool, reservations, options and client classes."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from ipaddress import IPv4Address
from typing import Any

from bootstrapd.configfile import Table

OptionMap = dict[int, bytes]


@dataclass(frozen=True)
class Host4:
    mac: bytes
    address: IPv4Address
    hostname: str | None = None
    options: OptionMap = field(default_factory=dict)


@dataclass(frozen=True)
class ClientClass:
    """Matches a client; its options are added to (or override) the global ones."""

    name: str
    vendor_class: tuple[bytes, ...] = ()  # option 60 prefixes, compared case-insensitively
    vendor_class_contains: tuple[bytes, ...] = ()  # option 60 substrings
    user_class: tuple[bytes, ...] = ()  # option 77 substrings
    mac_prefix: tuple[bytes, ...] = ()  # OUI (or longer) prefixes of chaddr
    options: OptionMap = field(default_factory=dict)


@dataclass(frozen=True)
class Dhcp4Settings:
    enabled: bool
    range_start: IPv4Address
    range_end: IPv4Address
    lease_time: int
    offer_time: int
    decline_time: int
    router: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    domain: str | None
    options: OptionMap
    hosts: tuple[Host4, ...]
    classes: tuple[ClientClass, ...]
    rate_limit: float  # packets per second per client (token bucket refill)
    rate_burst: int
    authoritative: bool
    commit_window_ms: float


def parse_mac(text: str) -> bytes:
    cleaned = text.replace(":", "").replace("-", "").replace(".", "").strip()
    if len(cleaned) % 2 or not cleaned:
        raise ValueError(f"{text!r} is not a MAC address or prefix")
    try:
        value = bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a MAC address or prefix") from None
    return value


def format_mac(mac: bytes) -> str:
    return mac.hex(":")


def option_value(value: Any) -> bytes:
    """An option's configured value as wire bytes.

    A string is sent as text; ``hex:0104...`` as raw bytes; a table of sub-option codes (``{1 = "http://..."}``)
    as encapsulated sub-options (code, length, value), the TR-069 form of option 43.
    """
    if isinstance(value, str):
        if value.lower().startswith("hex:"):
            digits = value[4:].replace(":", "").replace(" ", "")
            try:
                return bytes.fromhex(digits)
            except ValueError:
                raise ValueError(f"{value!r} is not valid hex") from None
        return value.encode("utf-8")
    if isinstance(value, dict):
        out = bytearray()
        for sub, subvalue in value.items():
            code = _code(sub, 1, 254)
            data = option_value(subvalue)
            if len(data) > 255:
                raise ValueError(f"sub-option {code} is longer than 255 bytes")
            out += bytes((code, len(data))) + data
        return bytes(out)
    raise ValueError(f"an option value must be text, 'hex:...' or a table of sub-options, not {value!r}")


def _code(key: str, low: int, high: int) -> int:
    try:
        code = int(key)
    except ValueError:
        raise ValueError(f"{key!r} is not an option code") from None
    if not low <= code <= high:
        raise ValueError(f"option code {code} is outside {low}-{high}")
    return code


# Options the server computes itself; configuring them under [dhcp4.options] would break the protocol.
_RESERVED = {0, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61, 82, 255}


def load_options(table: Table) -> OptionMap:
    options: OptionMap = {}
    for key, value in table.items():
        try:
            code = _code(key, 1, 254)
            if code in _RESERVED:
                raise ValueError(f"option {code} is set by the server itself")
            options[code] = option_value(value)
        except ValueError as exc:
            raise table.error(key, str(exc)) from None
    return options


def _bytes_list(table: Table, key: str) -> tuple[bytes, ...]:
    return tuple(v.encode() for v in table.text_list(key, []))


def _load_class(name: str, table: Table, base: ClientClass | None) -> ClientClass:
    def pick(key: str, value: tuple[bytes, ...], inherited: tuple[bytes, ...]) -> tuple[bytes, ...]:
        return value if table.has(key) else inherited

    macs = tuple(table.parse("mac_prefix", lambda v: [parse_mac(m) for m in ([v] if isinstance(v, str) else v)], []))
    options = load_options(table.table("options"))
    result = ClientClass(
        name=name,
        vendor_class=pick("vendor_class", _bytes_list(table, "vendor_class"), base.vendor_class if base else ()),
        vendor_class_contains=pick(
            "vendor_class_contains",
            _bytes_list(table, "vendor_class_contains"),
            base.vendor_class_contains if base else (),
        ),
        user_class=pick("user_class", _bytes_list(table, "user_class"), base.user_class if base else ()),
        mac_prefix=pick("mac_prefix", macs, base.mac_prefix if base else ()),
        options={**(base.options if base else {}), **options},
    )
    table.finish()
    return result


def builtin_classes() -> dict[str, ClientClass]:
    """Classes shipped as data (``bootstrapd/data/classes.toml``): vendor class strings and MAC OUIs."""
    text = resources.files("bootstrapd.data").joinpath("classes.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    out: dict[str, ClientClass] = {}
    for name, spec in data.get("class", {}).items():
        out[name] = ClientClass(
            name=name,
            vendor_class=tuple(v.encode() for v in spec.get("vendor_class", [])),
            vendor_class_contains=tuple(v.encode() for v in spec.get("vendor_class_contains", [])),
            mac_prefix=tuple(parse_mac(m) for m in spec.get("mac_prefix", [])),
        )
    return out


def _parse_range(text: Any) -> tuple[IPv4Address, IPv4Address]:
    if not isinstance(text, str) or "-" not in text:
        raise ValueError("must be 'first-last', e.g. '10.77.0.100-10.77.0.199'")
    first, last = (ipaddress.IPv4Address(p.strip()) for p in text.split("-", 1))
    if int(last) < int(first):
        raise ValueError(f"{last} comes before {first}")
    if int(last) - int(first) > 1 << 20:
        raise ValueError("more than 1,048,576 addresses")
    return first, last


def load_dhcp4(table: Table, server_url: str) -> Dhcp4Settings:
    enabled = table.flag("enabled", True)
    if enabled or table.has("range"):
        start, end = table.parse("range", _parse_range)
    else:
        start = end = IPv4Address("0.0.0.0")
    options = load_options(table.table("options"))
    options.setdefault(66, server_url.encode())

    hosts: list[Host4] = []
    seen_macs: dict[bytes, int] = {}
    for i, host in enumerate(table.tables("host")):
        mac = host.parse("mac", parse_mac, what="a MAC address")
        if len(mac) != 6:
            raise host.error("mac", "must be a 6-byte MAC address")
        if mac in seen_macs:
            raise host.error("mac", f"is reserved twice (also host {seen_macs[mac]})")
        seen_macs[mac] = i
        hosts.append(
            Host4(
                mac=mac,
                address=host.parse("address", ipaddress.IPv4Address, what="an IPv4 address"),
                hostname=host.text("hostname", None),
                options=load_options(host.table("options")),
            )
        )
        host.finish()
    addresses = [h.address for h in hosts]
    if len(set(addresses)) != len(addresses):
        raise table.error("host", "two reservations share one address")

    classes = builtin_classes()
    user_classes = table.table("class")
    for name, _ in list(user_classes.items()):
        classes[name] = _load_class(name, user_classes.table(name), classes.get(name))

    settings = Dhcp4Settings(
        enabled=enabled,
        range_start=start,
        range_end=end,
        lease_time=table.integer("lease_time", 3600, min=60, max=2**31),
        offer_time=table.integer("offer_time", 30, min=1, max=600),
        decline_time=table.integer("decline_time", 600, min=1),
        router=table.parse("router", ipaddress.IPv4Address, None, "an IPv4 address"),
        dns=tuple(ipaddress.IPv4Address(a) for a in table.parse("dns", _ip_list, [], "a list of IPv4 addresses")),
        domain=table.text("domain", None),
        options=options,
        hosts=tuple(hosts),
        classes=tuple(classes.values()),
        rate_limit=table.number("rate_limit", 20.0, min=0.1),
        rate_burst=table.integer("rate_burst", 40, min=1),
        authoritative=table.flag("authoritative", True),
        commit_window_ms=table.number("commit_window_ms", 2.0, min=0.0),
    )
    table.finish()
    return settings


def _ip_list(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("not a list")
    return [str(ipaddress.IPv4Address(v)) for v in items]
