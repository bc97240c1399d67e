"""URL templates: the one place where the placeholders of every URL bootstrapd hands out are filled in.

``server.url`` (and so DHCPv4 option 66 by default), the text of any DHCPv4/DHCPv6 option or sub-option (66, 160,
43 sub-options, custom codes, vendor options), DHCPv6 option 59 and the PnP NOTIFY URL may use:

- ``{ipv4}``: the interface's IPv4 address in the subnet of ``dhcp4.range`` (else its first IPv4 address);
- ``{ipv6}``: its global IPv6 address in the prefix of ``dhcp6.range`` (else its first global one, else its
  link-local one), without brackets: a URL template carries them (``tftp://[{ipv6}]/``);
- ``{interface}``: its name.

A service may add placeholders of its own (PnP: ``{mac}``, ``{vendor}``, ``{model}``). Anything else in braces, and
Yealink's ``$PN`` / ``$MAC`` wildcards, pass through untouched for the phone to fill in.

Configuration files are read without the interface (``check-config`` on another machine, a reload), so values are
kept as templates in the settings and expanded when a service starts or reloads, from the interface it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address

from bootstrapd.net.interfaces import Interface

PLACEHOLDERS = ("ipv4", "ipv6", "interface")

# The longest value each placeholder can take: configured lengths are checked against the expansion they may get.
LONGEST: Mapping[str, str] = {
    "ipv4": "255.255.255.255",
    "ipv6": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "interface": "x" * 15,  # IFNAMSIZ - 1
}


def has_placeholder(text: str) -> bool:
    return "{" in text and any("{" + name + "}" in text for name in PLACEHOLDERS)


def expand(template: str, variables: Mapping[str, str]) -> str:
    """Fill ``{name}`` for every name in ``variables``; everything else stays as it is."""
    if "{" not in template:
        return template
    out = template
    for key, value in variables.items():
        token = "{" + key + "}"
        if token in out:
            out = out.replace(token, value)
    return out


def interface_variables(iface: Interface, ipv4_near: IPv4Address | None = None,
                        ipv6_near: IPv6Address | None = None) -> dict[str, str]:
    """The values of the interface placeholders: the addresses on the served subnet/prefix when given."""
    ipv4 = next((i.ip for i in iface.ipv4 if ipv4_near is not None and ipv4_near in i.network), iface.first_ipv4)
    ipv6 = next((i.ip for i in iface.ipv6 if ipv6_near is not None and not i.ip.is_link_local
                 and ipv6_near in i.network), None)
    ipv6 = ipv6 or iface.first_global_ipv6 or iface.link_local_ipv6
    return {"ipv4": str(ipv4 or ""), "ipv6": str(ipv6 or ""), "interface": iface.name}
