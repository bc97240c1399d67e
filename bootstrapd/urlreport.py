"""The URLs a configuration hands out, as ``check-config`` prints them: every URL template (server.url, DHCPv4
options and sub-options, DHCPv6 option 59 and options, the PnP URL and rules), expanded with the addresses of the
interface when it exists on this machine, else shown as templates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from bootstrapd.config import Settings
from bootstrapd.dhcpconf import OptionValue, SubOptions, Text
from bootstrapd.urltemplates import expand


@dataclass(frozen=True)
class Url:
    key: str  # where it is configured, e.g. "dhcp4.class.yealink.options.43.1"
    template: str
    value: str  # expanded (or the template again when there is no interface to expand it from)


def _texts(key: str, value: OptionValue) -> Iterator[tuple[str, str]]:
    """The text (sub-)values of an option that are templates or look like URLs."""
    if isinstance(value, Text):
        yield key, value.template
    elif isinstance(value, SubOptions):
        for code, sub in value.items:
            yield from _texts(f"{key}.{code}", sub)
    else:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return
        if "://" in text and text.isprintable():
            yield key, text


def _options(prefix: str, options: Mapping[int, OptionValue]) -> Iterator[tuple[str, str]]:
    for code, value in sorted(options.items()):
        yield from _texts(f"{prefix}.{code}", value)


def templates(settings: Settings) -> Iterator[tuple[str, str]]:
    """(key, template) of every URL the enabled services hand out."""
    yield "server.url", settings.server.url
    dhcp4, dhcp6, pnp = settings.dhcp4, settings.dhcp6, settings.pnp
    if dhcp4.enabled:
        yield from _options("dhcp4.options", dhcp4.options)
        for cls in dhcp4.classes:
            yield from _options(f"dhcp4.class.{cls.name}.options", cls.options)
        for i, host in enumerate(dhcp4.hosts):
            yield from _options(f"dhcp4.host[{i}].options", host.options)
    if dhcp6.enabled:
        if dhcp6.bootfile_url:
            yield "dhcp6.bootfile_url", dhcp6.bootfile_url
        yield from _options("dhcp6.options", dhcp6.options)
        for enterprise, subs in sorted(dhcp6.vendor_options.items()):
            for code, sub in subs:
                yield from _texts(f"dhcp6.vendor_options.{enterprise}.{code}", sub)
        for cls6 in dhcp6.classes:
            if cls6.bootfile_url:
                yield f"dhcp6.class.{cls6.name}.bootfile_url", cls6.bootfile_url
            yield from _options(f"dhcp6.class.{cls6.name}.options", cls6.options)
    if pnp.enabled:
        yield "pnp.url", pnp.url
        for i, rule in enumerate(pnp.rules):
            if rule.url:
                yield f"pnp.rule[{i}].url", rule.url


def effective(settings: Settings, variables: Mapping[str, str] | None) -> list[Url]:
    return [Url(key, template, expand(template, variables) if variables is not None else template)
            for key, template in templates(settings)]


def print_check(settings: Settings, *, as_json: bool = False) -> None:
    """``check-config``'s output: the file is valid, and the URLs it hands out on this machine."""
    import json

    from bootstrapd.net.interfaces import InterfaceError, lookup
    from bootstrapd.urltemplates import interface_variables

    name = settings.server.interface
    try:
        iface = lookup(name)
    except (InterfaceError, OSError):
        variables = None
    else:
        variables = interface_variables(iface, settings.dhcp4.range_start, settings.dhcp6.range_start)
    urls = effective(settings, variables)
    if as_json:
        print(json.dumps({"file": settings.file, "ok": True, "interface": name, "expanded": variables is not None,
                          "urls": [{"key": u.key, "template": u.template, "value": u.value} for u in urls]},
                         indent=2))
        return
    print(f"{settings.file}: OK")
    if variables is not None:
        print(f"URLs handed out, with the addresses of {name}:")
    else:
        print(f"URLs handed out, as templates (no interface {name!r} here to fill in {{ipv4}} {{ipv6}} "
              "{interface}; the daemon fills them in from it at start-up):")
    width = max(len(u.key) for u in urls)
    for url in urls:
        shown = url.value if url.value == url.template or variables is None else f"{url.value}  ({url.template})"
        print(f"  {url.key:{width}}  {shown}")
