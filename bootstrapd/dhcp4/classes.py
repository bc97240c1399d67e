"""Client classes: which classes a DHCPv4 client falls into, and the options that gives it.

Matching is on option 60 (vendor class, trailing NULs already stripped; prefix or substring, case-insensitive), on
option 77 (user class, substring) and on MAC prefixes (OUIs). The merged option set of each combination of classes
is computed once (its templates rendered from the interface's addresses) and cached, so a boot storm of identical
phones costs one dict lookup per packet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from bootstrapd.dhcp4.codec import Option, encode_options
from bootstrapd.dhcp4.settings import ClientClass
from bootstrapd.dhcpconf import render_map


class Ordered(NamedTuple):
    items: tuple[Option, ...]  # (code, value) in priority order
    wire: bytes  # their encoding, in that order
    codes: tuple[int, ...]  # the same codes, sorted (for events)


@dataclass(frozen=True, slots=True)
class OptionSet:
    """A merged option set, with its wire encoding in each client's order computed once.

    ``options`` are sent to every client, requested or not; ``on_request`` only to a client that lists the code in
    its option 55 (the boot file name, 67). Options the client requested come first, in its option 55 order (RFC
    2132 9.8), then the others by code: so when a reply is too small, what is left out is what nobody asked for.
    A boot storm of one model sends one option 55, so the ordering is a dict lookup per packet.
    """

    options: dict[int, bytes]
    codes: tuple[int, ...]
    on_request: dict[int, bytes] = field(default_factory=dict)
    _ordered: dict[bytes, Ordered] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, options: Mapping[int, bytes], on_request: Mapping[int, bytes] | None = None) -> OptionSet:
        return cls(dict(options), tuple(sorted(options)), dict(on_request or {}))

    def ordered(self, requested: bytes) -> Ordered:
        """The options for a client whose option 55 is ``requested``, in priority order, and their encoding."""
        cached = self._ordered.get(requested)
        if cached is not None:
            return cached
        options, on_request = self.options, self.on_request
        first: list[Option] = []
        seen: set[int] = set()
        for code in requested:
            if code in seen:
                continue
            value = options.get(code, on_request.get(code))
            if value is not None:
                first.append((code, value))
                seen.add(code)
        rest = [(code, options[code]) for code in self.codes if code not in seen]
        items = (*first, *rest)
        cached = Ordered(items, encode_options(items), tuple(sorted(code for code, _ in items)))
        if len(self._ordered) < 256:  # bounded: option 55 comes from the wire
            self._ordered[requested] = cached
        return cached


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
    def __init__(self, classes: Sequence[ClientClass], base: Mapping[int, bytes], variables: Mapping[str, str],
                 on_request: Mapping[int, bytes] | None = None) -> None:
        self.classes = tuple(classes)
        self.base = dict(base)
        self.variables = dict(variables)
        self.on_request = dict(on_request or {})
        self._cache: dict[tuple[str, ...], OptionSet] = {}
        # A client's classes depend on its vendor and user class and on as much of its MAC as the longest prefix:
        # a boot storm of one model is one dict lookup per packet instead of every class's every prefix.
        self._prefix = max((len(p) for c in self.classes for p in c.mac_prefix), default=0)
        self._classified: dict[tuple[bytes | None, bytes | None, bytes], tuple[str, ...]] = {}

    def classify(self, vendor_class: bytes | None, user_class: bytes | None, mac: bytes) -> tuple[str, ...]:
        key = (vendor_class, user_class, mac[:self._prefix])
        names = self._classified.get(key)
        if names is None:
            names = tuple(c.name for c in self.classes if matches(c, vendor_class, user_class, mac))
            if len(self._classified) < 4096:  # bounded: the key comes from the wire
                self._classified[key] = names
        return names

    def options(self, names: tuple[str, ...]) -> OptionSet:
        """Global options overridden by each matched class's, in configuration order."""
        cached = self._cache.get(names)
        if cached is None:
            merged = dict(self.base)
            for cls in self.classes:
                if cls.name in names:
                    merged.update(render_map(cls.options, self.variables))
            cached = OptionSet.of(merged, self.on_request)
            if len(self._cache) < 4096:
                self._cache[names] = cached
        return cached
