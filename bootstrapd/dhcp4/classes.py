"""Client classes: which classes a DHCPv4 client falls into, and the options that gives it.

Matching is on option 60 (vendor class, trailing NULs already stripped; prefix or substring, case-insensitive), on
option 77 (user class, substring) and on MAC prefixes (OUIs). The merged option set of each combination of classes
is computed once (its templates rendered from the interface's addresses) and cached, so a boot storm of identical
phones costs one dict lookup per packet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bootstrapd.dhcp4.codec import encode_options
from bootstrapd.dhcp4.settings import ClientClass
from bootstrapd.dhcpconf import render_map


@dataclass(frozen=True, slots=True)
class OptionSet:
    """A merged option set, with its wire encoding computed once (the hot path only concatenates it)."""

    options: dict[int, bytes]
    wire: bytes
    codes: tuple[int, ...]

    @classmethod
    def of(cls, options: Mapping[int, bytes]) -> OptionSet:
        return cls(dict(options), encode_options(dict(options)), tuple(sorted(options)))


def matches(cls: ClientClass, vendor_class: bytes | None, user_class: bytes | None, mac: bytes) -> bool:
    if vendor_class:
        folded = vendor_class.lower()
        if any(folded.startswith(p.lower()) for p in cls.vendor_class):
            return True
        if any(p.lower() in folded for p in cls.vendor_class_contains):
            return True
    if user_class and any(p in user_class for p in cls.user_class):
        return True
    return any(mac.startswith(p) for p in cls.mac_prefix)


class Classifier:
    def __init__(self, classes: Sequence[ClientClass], base: Mapping[int, bytes],
                 variables: Mapping[str, str]) -> None:
        self.classes = tuple(classes)
        self.base = dict(base)
        self.variables = dict(variables)
        self._cache: dict[tuple[str, ...], OptionSet] = {}

    def classify(self, vendor_class: bytes | None, user_class: bytes | None, mac: bytes) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes if matches(c, vendor_class, user_class, mac))

    def options(self, names: tuple[str, ...]) -> OptionSet:
        """Global options overridden by each matched class's, in configuration order."""
        cached = self._cache.get(names)
        if cached is None:
            merged = dict(self.base)
            for cls in self.classes:
                if cls.name in names:
                    merged.update(render_map(cls.options, self.variables))
            cached = OptionSet.of(merged)
            if len(self._cache) < 4096:
                self._cache[names] = cached
        return cached
