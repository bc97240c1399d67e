"""Where a phone learns the provisioning server from this configuration, in the guide's priority.

Guide, "Obtaining the Provisioning Server Address": Zero Touch > PnP > DHCP (IPv4 custom option > option 66 >
option 43; IPv6 custom option > option 59) > the phone's flash. Zero Touch and flash are on the phone; the rest is
what bootstrapd hands out, computed with the services' own rules (PnP URL rules, DHCPv4 client classes and
reservations) and URL expansion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bootstrapd.config import Settings
from bootstrapd.dhcp4.classes import Classifier
from bootstrapd.dhcpconf import render_map
from bootstrapd.net.interfaces import Interface
from bootstrapd.pnp import urls as pnp_urls
from bootstrapd.provisioning.models import Model
from bootstrapd.urltemplates import expand, interface_variables

YEALINK_VENDOR_CLASS = b"yealink"  # what Yealink phones send in option 60 by default (protocols.md section 4)
CUSTOM = "DHCPv4 custom option"


@dataclass(frozen=True)
class UrlSource:
    name: str  # "PnP", "DHCPv4 option 66", ...
    url: str | None  # None: this source gives this phone nothing
    note: str = ""


def url_variables(settings: Settings, iface: Interface | None) -> dict[str, str]:
    """{ipv4}/{ipv6}/{interface} as the services fill them in (bootstrapd.urltemplates, Context.url_variables);
    none when the interface is not on this machine, so the templates are shown as they are."""
    if iface is None:
        return {}
    return interface_variables(iface, settings.dhcp4.range_start, settings.dhcp6.range_start)


def _text(value: bytes) -> str | None:
    """A text option as a phone reads it: trailing NULs dropped (dnsmasq terminates its strings with one)."""
    try:
        text = value.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def _option43(value: bytes) -> str | None:
    """Option 43 as a URL: plain text, or TR-069 style sub-option 1 (code, length, URL)."""
    if len(value) >= 2 and value[0] == 1 and value[1] == len(value) - 2:
        return _text(value[2:])
    return _text(value)


def url_sources(settings: Settings, mac: str, model: Model, iface: Interface | None = None) -> list[UrlSource]:
    out: list[UrlSource] = []
    variables = url_variables(settings, iface)
    pnp = settings.pnp
    if pnp.enabled:
        template = pnp_urls.select(pnp.rules, pnp.url, vendor="yealink", model=model.id, mac=mac)
        if template is None:
            out.append(UrlSource("PnP (SIP NOTIFY)", None, "a [[pnp.rule]] refuses this phone"))
        else:
            out.append(UrlSource("PnP (SIP NOTIFY)", pnp_urls.expand(template, variables, mac=mac, vendor="yealink",
                                                                     model=model.id)))
    else:
        out.append(UrlSource("PnP (SIP NOTIFY)", None, "pnp.enabled = false"))
    dhcp4 = settings.dhcp4
    if dhcp4.enabled:
        mac_bytes = bytes.fromhex(mac)
        classifier = Classifier(dhcp4.classes, render_map(dhcp4.options, variables), variables)
        names = classifier.classify(YEALINK_VENDOR_CLASS, None, mac_bytes)
        options = dict(classifier.options(names).options)
        for host in dhcp4.hosts:
            if host.mac == mac_bytes:
                options.update(render_map(host.options, variables))
        shown = f"classes: {', '.join(names)}" if names else ""
        out += dhcp4_sources(options, shown)  # options rendered above: their URLs are expanded
    else:
        out.append(UrlSource("DHCPv4", None, "dhcp4.enabled = false"))
    dhcp6 = settings.dhcp6
    if dhcp6.enabled:
        url = dhcp6.bootfile_url
        mac_bytes = bytes.fromhex(mac)
        for cls in dhcp6.classes:
            if cls.bootfile_url and any(mac_bytes.startswith(p) for p in cls.mac_prefix):
                url = cls.bootfile_url
        out.append(UrlSource("DHCPv6 option 59", expand(url, variables),
                             "" if dhcp6.force_bootfile_url else "only when the phone requests option 59"))
    else:
        out.append(UrlSource("DHCPv6 option 59", None, "dhcp6.enabled = false"))
    return out


def dhcp4_sources(options: Mapping[int, bytes], note: str = "") -> list[UrlSource]:
    """What DHCPv4 options give, in the guide's order: custom options (128-254 holding a URL), 66, 43."""
    out: list[UrlSource] = []
    texts = [(code, _text(value)) for code, value in sorted(options.items()) if 128 <= code <= 254]
    custom = [(code, text) for code, text in texts if text and "://" in text]
    for code, url_text in custom:
        out.append(UrlSource(f"{CUSTOM} {code}", url_text, f"only when the phone's IPv4 Custom Option is {code}"))
    if not custom:
        out.append(UrlSource(CUSTOM, None, "none configured (128-254 with a URL)"))
    for code, name in ((66, "DHCPv4 option 66"), (43, "DHCPv4 option 43")):
        value = options.get(code)
        found = (_option43(value) if code == 43 else _text(value)) if value is not None else None
        out.append(UrlSource(name, found or None, note if found else "not sent to this phone"))
    return out


def received_sources(*, pnp: str | None, dhcp4: Mapping[int, bytes] | None, dhcp6_59: str | None,
                     pnp_note: str = "") -> list[UrlSource]:
    """What one phone heard (a NOTIFY body, the options of its DHCPv4 ACK, option 59 of its DHCPv6 reply), as the
    same list of sources, in the same order, that :func:`url_sources` computes from the configuration."""
    out = [UrlSource("PnP (SIP NOTIFY)", pnp.strip() if pnp and pnp.strip() else None, pnp_note)]
    out += dhcp4_sources(dhcp4 or {}) if dhcp4 is not None else [UrlSource("DHCPv4", None, "no lease")]
    out.append(UrlSource("DHCPv6 option 59", dhcp6_59, "" if dhcp6_59 else "no DHCPv6 reply with option 59"))
    return out


def chosen(sources: list[UrlSource], custom_option: int | None = None) -> UrlSource | None:
    """The source the phone follows: the first that gives a URL; a custom option only when it is the phone's IPv4
    Custom Option (``custom_option``; factory settings have none)."""
    for source in sources:
        if not source.url:
            continue
        if source.name.startswith(CUSTOM) and source.name != f"{CUSTOM} {custom_option}":
            continue
        return source
    return None
