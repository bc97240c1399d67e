"""The ``[dhcp4]`` section: pool, reservations, options and client classes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from bootstrapd.configfile import Table
from bootstrapd.dhcpconf import (
    OptionValue,
    address_list,
    builtin_criteria,
    format_mac,
    load_classes,
    load_criteria,
    load_option_table,
    option_value,
    parse_mac,
    parse_range,
    text_value,
)

__all__ = ["ClientClass", "Dhcp4Settings", "Host4", "format_mac", "load_dhcp4", "option_value", "parse_mac"]

OptionMap = dict[int, OptionValue]  # templates until the server renders them (see dhcpconf.render)


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
    renew_time: int  # T1, option 58
    rebind_time: int  # T2, option 59
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
    next_server: IPv4Address | None = None  # siaddr; None: the server's own address
    boot_file: str | None = None  # the file field, and option 67 when the client asks for it


# Options the server computes itself; configuring them under [dhcp4.options] would break the protocol.
_RESERVED = {0, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61, 82, 255}


def load_options(table: Table) -> OptionMap:
    return load_option_table(table, high=254, reserved=_RESERVED, max_length=16 * 255)


def _load_class(name: str, table: Table, base: ClientClass | None) -> ClientClass:
    result = ClientClass(
        name=name,
        **load_criteria(table, base),
        user_class=tuple(v.encode() for v in table.text_list("user_class")) if table.has("user_class") else (
            base.user_class if base else ()),
        options={**(base.options if base else {}), **load_options(table.table("options"))},
    )
    table.finish()
    return result


def builtin_classes() -> dict[str, ClientClass]:
    return {name: ClientClass(name=name, **criteria) for name, criteria in builtin_criteria().items()}


def load_dhcp4(table: Table, server_url: str) -> Dhcp4Settings:
    enabled = table.flag("enabled", True)
    if enabled or table.has("range"):
        start, end = table.parse("range", lambda v: parse_range(v, 4))
    else:
        start = end = IPv4Address("0.0.0.0")
    options = load_options(table.table("options"))
    options.setdefault(66, text_value(server_url))  # server.url, expanded like any other template

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

    classes = load_classes(table.table("class"), builtin_classes(), _load_class)
    lease_time = table.integer("lease_time", 3600, min=60, max=2**31)
    # RFC 2131 4.4.5: T1 < T2 < lease time; defaults 1/2 and 7/8 of the lease.
    renew_time = table.integer("renew_time", lease_time // 2, min=1, max=lease_time - 1)
    rebind_time = table.integer("rebind_time", max(lease_time * 7 // 8, renew_time + 1), min=1, max=lease_time - 1)
    if rebind_time <= renew_time:
        raise table.error("rebind_time", f"must be greater than renew_time ({renew_time})")
    boot_file = table.text("boot_file", None)
    if boot_file is not None and (len(boot_file.encode()) > 127 or not boot_file.isprintable()):
        raise table.error("boot_file", "must be at most 127 bytes of printable text (the BOOTP file field)")

    settings = Dhcp4Settings(
        enabled=enabled,
        range_start=start,
        range_end=end,
        lease_time=lease_time,
        renew_time=renew_time,
        rebind_time=rebind_time,
        offer_time=table.integer("offer_time", 30, min=1, max=600),
        decline_time=table.integer("decline_time", 600, min=1),
        router=table.parse("router", ipaddress.IPv4Address, None, "an IPv4 address"),
        dns=tuple(table.parse("dns", lambda v: address_list(v, 4), [], "a list of IPv4 addresses")),
        domain=table.text("domain", None),
        options=options,
        hosts=tuple(hosts),
        classes=classes,
        rate_limit=table.number("rate_limit", 20.0, min=0.1),
        rate_burst=table.integer("rate_burst", 40, min=1),
        authoritative=table.flag("authoritative", True),
        commit_window_ms=table.number("commit_window_ms", 2.0, min=0.0),
        next_server=table.parse("next_server", ipaddress.IPv4Address, None, "an IPv4 address"),
        boot_file=boot_file or None,
    )
    table.finish()
    return settings

