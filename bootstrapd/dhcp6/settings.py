"""The ``[dhcp6]`` section: address range, lifetimes, option 59, DNS, vendor options and client classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any

from bootstrapd.configfile import Table
from bootstrapd.dhcp6.codec import encode_domains
from bootstrapd.dhcpconf import (
    OptionValue,
    address_list,
    builtin_criteria,
    load_classes,
    load_criteria,
    load_option_table,
    longest,
    option_code,
    option_value,
    parse_range,
)

OptionMap6 = dict[int, OptionValue]  # templates until the server renders them (see dhcpconf.render)
VendorOptions = dict[int, list[tuple[int, OptionValue]]]  # enterprise number -> sub-options (code, value)


@dataclass(frozen=True)
class Class6:
    """Matches a client by vendor class (option 16) or by the MAC inside its DUID; adds options."""

    name: str
    vendor_class: tuple[bytes, ...] = ()  # prefixes of a vendor-class-data entry, case-insensitive
    vendor_class_contains: tuple[bytes, ...] = ()
    enterprise: int | None = None  # when set, option 16 must carry this enterprise number too
    mac_prefix: tuple[bytes, ...] = ()  # OUI (or longer) prefixes of the DUID-LL/LLT MAC
    options: OptionMap6 = field(default_factory=dict)
    vendor_options: VendorOptions = field(default_factory=dict)
    bootfile_url: str | None = None


_FIRST, _LAST = IPv6Address("fd77::100"), IPv6Address("fd77::1ff")


@dataclass(frozen=True)
class Dhcp6Settings:
    enabled: bool
    range_start: IPv6Address = _FIRST
    range_end: IPv6Address = _LAST
    bootfile_url: str = "tftp://[{ipv6}]/"
    force_bootfile_url: bool = False
    preferred_lifetime: int = 3600
    valid_lifetime: int = 7200
    renew_time: int = 1800  # T1, the same in every IA
    rebind_time: int = 2880  # T2
    information_refresh_time: int = 3600  # option 32 in replies to Information-Request
    offer_time: int = 30
    decline_time: int = 600
    rapid_commit: bool = False
    dns: tuple[IPv6Address, ...] = ()
    domain: tuple[str, ...] = ()
    options: OptionMap6 = field(default_factory=dict)
    vendor_options: VendorOptions = field(default_factory=dict)
    classes: tuple[Class6, ...] = ()
    rate_limit: float = 20.0
    rate_burst: int = 40


# Options the server computes itself: configuring them under [dhcp6.options] would break the protocol.
_RESERVED = {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 23, 24, 25, 26, 32, 59, 79}


def load_options6(table: Table) -> OptionMap6:
    return load_option_table(table, high=65535, reserved=_RESERVED, max_length=65535)


def _sub_options(value: Any) -> list[tuple[int, OptionValue]]:
    if not isinstance(value, dict):
        raise ValueError("must be a table of sub-option codes, e.g. {1 = \"http://...\"}")
    out: list[tuple[int, OptionValue]] = []
    for sub, subvalue in value.items():
        code = option_code(sub, 1, 65535)
        data = option_value(subvalue)
        if longest(data) > 65535:
            raise ValueError(f"sub-option {code} is longer than 65535 bytes")
        out.append((code, data))
    return out


def load_vendor_options(table: Table) -> VendorOptions:
    out: VendorOptions = {}
    for key, value in table.items():
        try:
            enterprise = option_code(key, 0, 0xFFFFFFFF)
            out[enterprise] = _sub_options(value)
        except ValueError as exc:
            raise table.error(key, str(exc)) from None
    return out


def parse_range6(text: Any) -> tuple[IPv6Address, IPv6Address]:
    first, last = parse_range(text, 6)
    if first.is_link_local or first.is_multicast:
        raise ValueError("must be global or unique-local addresses")
    return first, last


def _load_class(name: str, table: Table, base: Class6 | None) -> Class6:
    result = Class6(
        name=name,
        **load_criteria(table, base),
        enterprise=table.integer("enterprise", base.enterprise if base else None, min=0, max=0xFFFFFFFF),
        options={**(base.options if base else {}), **load_options6(table.table("options"))},
        vendor_options={**(base.vendor_options if base else {}), **load_vendor_options(table.table("vendor_options"))},
        bootfile_url=table.text("bootfile_url", base.bootfile_url if base else None),
    )
    table.finish()
    return result


def builtin_classes6() -> dict[str, Class6]:
    """The shipped classes (``bootstrapd/data/classes.toml``, shared with DHCPv4): vendor class strings and OUIs."""
    return {name: Class6(name=name, **criteria) for name, criteria in builtin_criteria().items()}


def load_dhcp6(table: Table) -> Dhcp6Settings:
    enabled = table.flag("enabled", False)
    start, end = table.parse("range", parse_range6, (_FIRST, _LAST))
    preferred = table.integer("preferred_lifetime", 3600, min=4, max=2**31)
    valid = table.integer("valid_lifetime", max(7200, preferred), min=4, max=2**31)
    if valid < preferred:
        raise table.error("valid_lifetime", f"must be at least preferred_lifetime ({preferred})")
    # RFC 8415 21.4: T1 <= T2, recommended 0.5 and 0.8 times the preferred lifetime.
    renew = table.integer("renew_time", preferred // 2, min=1, max=valid)
    rebind = table.integer("rebind_time", max(preferred * 4 // 5, renew), min=1, max=valid)
    if rebind < renew:
        raise table.error("rebind_time", f"must be at least renew_time ({renew})")
    domain = tuple(table.text_list("domain", []))
    try:
        encode_domains(list(domain))
    except ValueError as exc:
        raise table.error("domain", str(exc)) from None

    classes = load_classes(table.table("class"), builtin_classes6(), _load_class)

    settings = Dhcp6Settings(
        enabled=enabled,
        range_start=start,
        range_end=end,
        bootfile_url=table.text("bootfile_url", "tftp://[{ipv6}]/"),
        force_bootfile_url=table.flag("force_bootfile_url", False),
        preferred_lifetime=preferred,
        valid_lifetime=valid,
        renew_time=renew,
        rebind_time=rebind,
        # RFC 8415 21.23: at least IRT_MINIMUM (600 s); 0xFFFFFFFF means infinity.
        information_refresh_time=table.integer("information_refresh_time", 3600, min=600, max=0xFFFFFFFF),
        offer_time=table.integer("offer_time", 30, min=1, max=600),
        decline_time=table.integer("decline_time", 600, min=1),
        rapid_commit=table.flag("rapid_commit", False),
        dns=tuple(table.parse("dns", lambda v: address_list(v, 6), [], "a list of IPv6 addresses")),
        domain=domain,
        options=load_options6(table.table("options")),
        vendor_options=load_vendor_options(table.table("vendor_options")),
        classes=classes,
        rate_limit=table.number("rate_limit", 20.0, min=0.1),
        rate_burst=table.integer("rate_burst", 40, min=1),
    )
    table.finish()
    return settings
