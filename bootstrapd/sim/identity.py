"""Who the simulated phones are: MACs from the Yealink OUIs, models from an inventory, a list or a weighted mix.

The OUIs are the shipped table of the built-in ``yealink`` DHCP class (``bootstrapd/data/classes.toml``), so a
simulated phone falls in the same class a real one does. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootstrapd.dhcpconf import builtin_criteria
from bootstrapd.provisioning.inventory import read_inventory
from bootstrapd.provisioning.models import Model, table


class IdentityError(ValueError):
    """A model list or inventory the simulator cannot use (bad usage: exit 2)."""


@dataclass(frozen=True)
class Identity:
    mac: str  # 12 lower-case hex digits
    model: Model
    firmware: int | None = None
    preset: dict[str, str] = field(default_factory=dict)


def yealink_ouis() -> tuple[bytes, ...]:
    return builtin_criteria()["yealink"]["mac_prefix"]


def parse_models(spec: str) -> list[tuple[Model, int]]:
    """``T46U,T54W`` (equal shares) or ``T46U:3,T54W:1`` (weights) -> models with their weights."""
    out: list[tuple[Model, int]] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, _, weight = item.partition(":")
        model = table().find(name)
        if model is None:
            hint = table().suggest(name)
            raise IdentityError(f"unknown model {name!r}" + (f" (try {', '.join(hint)})" if hint else ""))
        try:
            share = int(weight) if weight else 1
        except ValueError:
            raise IdentityError(f"{item!r}: the weight after ':' must be a whole number") from None
        if share < 1:
            raise IdentityError(f"{item!r}: the weight must be at least 1")
        out.append((model, share))
    if not out:
        raise IdentityError("no model given")
    return out


def _macs(count: int, rng: random.Random, taken: set[str], ouis: Sequence[bytes]) -> Iterable[str]:
    made = 0
    while made < count:
        oui = ouis[(len(taken)) % len(ouis)]
        mac = (oui + rng.getrandbits(24).to_bytes(3, "big")).hex()
        if mac in taken:
            continue
        taken.add(mac)
        made += 1
        yield mac


def phones(count: int, *, models: str = "T46U", inventory: Path | None = None, seed: int = 1,
           firmware: int | None = None, preset: dict[str, str] | None = None) -> list[Identity]:
    """``count`` phones: the inventory's rows first (its MACs and models), then new MACs with models from
    ``models`` in proportion to their weights (interleaved, so any prefix of the list is a fair mix)."""
    rng = random.Random(seed)
    out: list[Identity] = []
    taken: set[str] = set()
    base = dict(preset or {})
    if inventory is not None:
        listed = read_inventory(inventory)
        if listed.errors:
            raise IdentityError(str(listed.errors[0]))
        for row in list(listed)[:count]:
            out.append(Identity(row.mac, row.model, firmware, dict(base)))
            taken.add(row.mac)
    mix = parse_models(models)
    cycle = [model for model, weight in mix for _ in range(weight)]
    ouis = yealink_ouis()
    for index, mac in enumerate(_macs(count - len(out), rng, taken, ouis)):
        out.append(Identity(mac, cycle[index % len(cycle)], firmware, dict(base)))
    return out
