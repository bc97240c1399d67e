"""The Yealink model table (``bootstrapd/data/models.toml``): products, [MODEL] prefix names, common CFG files.

Data, not code, like the OUI table: a new product is a new ``[model.ID]`` section. :func:`table` loads it once.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import translate
from functools import cache, cached_property
from importlib import resources

COMMON_BOOT = "y000000000000.boot"


@dataclass(frozen=True)
class Model:
    id: str
    product: str
    prefix: str | None  # the name valid in [MODEL,...] prefixes, None when the guide lists none
    hardware_id: int
    boot_since: int
    exclude_since: int | None
    pn: str  # default static.auto_provision.url_wildcard.pn ($PN)
    prefix_since: int

    @property
    def common_cfg(self) -> str:
        return f"y{self.hardware_id:012d}.cfg"

    def reads_boot_files(self, firmware: int | None) -> bool:
        return firmware is None or firmware >= self.boot_since

    def has_exclude_mode(self, firmware: int | None) -> bool:
        return self.exclude_since is not None and (firmware is None or firmware >= self.exclude_since)

    def matches(self, names: tuple[str, ...], firmware: int | None) -> bool:
        """Whether a line prefixed with ``[names]`` is for this phone (never on firmware without prefixes)."""
        if self.prefix is None or (firmware is not None and firmware < self.prefix_since):
            return False
        return self.prefix in names


def _fold(name: str) -> str:
    folded = name.strip().upper()
    for lead in ("SIP-", "SIP "):
        if folded.startswith(lead):
            folded = folded[len(lead):]
    return re.sub(r"[\s_\-()]", "", folded)


@dataclass(frozen=True)
class ModelTable:
    models: tuple[Model, ...]
    resource_keys: tuple[str, ...]

    def __iter__(self) -> Iterator[Model]:
        return iter(self.models)

    @property
    def prefix_names(self) -> frozenset[str]:
        return frozenset(m.prefix for m in self.models if m.prefix)

    @property
    def common_cfgs(self) -> dict[str, tuple[Model, ...]]:
        out: dict[str, list[Model]] = {}
        for model in self.models:
            out.setdefault(model.common_cfg, []).append(model)
        return {name: tuple(models) for name, models in out.items()}

    def find(self, name: str) -> Model | None:
        """The model called ``name`` (its id or product name, case, spaces, '-' and '_' ignored)."""
        folded = _fold(name)
        for model in self.models:
            if folded in (_fold(model.id), _fold(model.product)):
                return model
        return None

    def by_hardware_id(self, hardware_id: int) -> tuple[Model, ...]:
        return tuple(m for m in self.models if m.hardware_id == hardware_id)

    def suggest(self, name: str) -> list[str]:
        """Prefix names close to ``name`` (for 'unknown model' messages)."""
        folded = _fold(name)
        return sorted(n for n in self.prefix_names if _fold(n) == folded or _fold(n).startswith(folded[:3]))[:5]

    @cached_property
    def _resource_key(self) -> re.Pattern[str]:
        # One regex for every pattern: the model asks this for each parameter of each phone (12 per phone in the
        # boot storm, against 14 patterns); fnmatchcase per pattern was 4% of a simulated phone's CPU.
        return re.compile("|".join(f"(?:{translate(pattern)})" for pattern in self.resource_keys) or "(?!)")

    def is_resource_key(self, key: str) -> bool:
        return self._resource_key.match(key) is not None


def parse_table(text: str) -> ModelTable:
    data = tomllib.loads(text)
    since = int(data.get("prefix_since", 83))
    models = []
    for model_id, entry in data["model"].items():
        models.append(Model(
            id=model_id,
            product=entry["product"],
            prefix=entry.get("prefix"),
            hardware_id=int(entry["hardware_id"]),
            boot_since=int(entry["boot_since"]),
            exclude_since=int(entry["exclude_since"]) if "exclude_since" in entry else None,
            pn=entry.get("pn", entry.get("prefix", model_id)),
            prefix_since=since,
        ))
    return ModelTable(tuple(models), tuple(data.get("resources", {}).get("keys", ())))


@cache
def table() -> ModelTable:
    return parse_table(resources.files("bootstrapd.data").joinpath("models.toml").read_text(encoding="utf-8"))
