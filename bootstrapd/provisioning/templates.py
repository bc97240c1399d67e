"""Per-phone files rendered from the inventory with Jinja2 templates in the tree.

Every ``*.j2`` file under the root is a template; its output name is its name without ``.j2``, with each
``{column}`` replaced by an inventory column's value: ``{mac}.cfg.j2`` gives ``<mac>.cfg`` for every phone,
``site-{site}.cfg.j2`` one file per site, ``{pn}/y000000000000.boot.j2`` one boot file per model directory; a name
without placeholders is rendered once. A template sees ``phones`` (the inventory rows of its output), every
placeholder as a variable, ``phone`` when the name has ``{mac}``, and ``inventory`` (every row).

Block tags take their line with them (``trim_blocks``/``lstrip_blocks``), so ``{% if %}`` lines leave no blank lines.
Templates run in Jinja2's immutable sandbox with StrictUndefined (a missing column is an error, not an empty
value). Rendering is deterministic: unchanged inputs give byte-identical files across runs and restarts (the phone's
MD5 check then skips a needless update). Errors name the template, its line and the phone.
"""

from __future__ import annotations

import os
import re
import stat
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bootstrapd.provisioning.inventory import Inventory, InventoryPhone
from bootstrapd.provisioning.names import TEMPLATE_SUFFIX
from bootstrapd.provisioning.resolver import Refused, normalize

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


class TemplateError(Exception):
    def __init__(self, template: str, line: int | None, phone: str | None, message: str) -> None:
        self.template, self.line, self.phone, self.message = template, line, phone, message
        where = f"{template}:{line}" if line else template
        super().__init__(f"{where}: {message}" + (f" (phone {phone})" if phone else ""))


@dataclass(frozen=True)
class Rendered:
    name: str  # '/'-joined path relative to the root
    data: bytes
    template: str
    mac: str | None  # the phone it is for, when the name has {mac}
    mtime: float


@dataclass
class RenderSet:
    files: dict[str, Rendered] = field(default_factory=dict)
    errors: list[TemplateError] = field(default_factory=list)
    inputs: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # path -> (mtime_ns, size, ino)


def identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def discover(root: str) -> list[str]:
    """Every template under ``root`` ('/'-joined relative names), sorted; symlinks leaving the root are ignored."""
    found: list[str] = []
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(folder, d)).startswith(real_root))
        for name in files:
            if name.endswith(TEMPLATE_SUFFIX) and not name.startswith("."):
                path = os.path.join(folder, name)
                real = os.path.realpath(path)
                if real.startswith(real_root + "/") and stat.S_ISREG(os.stat(real).st_mode):
                    found.append(os.path.relpath(path, root).replace(os.sep, "/"))
    return sorted(found)


class _TreeLoader(jinja2.BaseLoader):
    """Templates (and what they include) from the tree only; records every file read, for change detection."""

    def __init__(self, root: str, inputs: dict[str, tuple[int, int, int]]) -> None:
        self.root = os.path.realpath(root)
        self.inputs = inputs

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        try:
            parts = normalize(template)
        except Refused:
            raise jinja2.TemplateNotFound(template) from None
        path = os.path.join(self.root, *parts)
        real = os.path.realpath(path)
        if not real.startswith(self.root + "/") or not os.path.isfile(real):
            raise jinja2.TemplateNotFound(template)
        with open(real, "rb") as handle:
            raw = handle.read()
        ident = identity(real)
        if ident:
            self.inputs[real] = ident
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise jinja2.TemplateSyntaxError("not UTF-8 text", raw[:exc.start].count(b"\n") + 1, template,
                                             template) from None
        return source, "/".join(parts), lambda: False


def environment(root: str, inputs: dict[str, tuple[int, int, int]]) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=_TreeLoader(root, inputs), undefined=jinja2.StrictUndefined, autoescape=False,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, auto_reload=False, cache_size=0,
    )


def _error_line(exc: BaseException, template: str) -> int | None:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    line = None
    for frame, number in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == template:
            line = number
    return line


def _fill(base: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], base)


def _output_names(template: str, inventory: Inventory) -> list[tuple[str, dict[str, Any]]] | TemplateError:
    """Each output name of ``template`` with its context, in inventory order."""
    base = template[:-len(TEMPLATE_SUFFIX)]
    columns = list(dict.fromkeys(_PLACEHOLDER.findall(base)))
    everyone = [p.context() for p in inventory]
    if not columns:
        return [(base, {"phones": everyone, "inventory": everyone})]
    groups: dict[str, tuple[dict[str, str], list[InventoryPhone]]] = {}
    for phone in inventory:
        ctx = phone.context()
        values: dict[str, str] = {}
        for column in columns:
            if column not in ctx:
                return TemplateError(template, None, phone.mac, f"the name uses {{{column}}}, which is not an "
                                                                f"inventory column")
            value = ctx[column]
            if not _SAFE_COMPONENT.match(value) or ".." in value:
                return TemplateError(template, None, phone.mac,
                                     f"{{{column}}} of inventory row {phone.row} is not usable in a file name "
                                     f"(letters, digits, '.', '_', '-')")
            values[column] = value
        name = _fill(base, values)
        groups.setdefault(name, (values, []))[1].append(phone)
    out: list[tuple[str, dict[str, Any]]] = []
    for name, (values, phones) in groups.items():
        context: dict[str, Any] = {**values, "phones": [p.context() for p in phones], "inventory": everyone}
        if "mac" in columns:
            context["phone"] = phones[0].context()
        out.append((name, context))
    return out


def render_all(root: str | Path, inventory: Inventory, inventory_identity: tuple[int, int, int] | None) -> RenderSet:
    """Render every template of the tree for the inventory. Problems are collected in ``errors``."""
    root = os.path.realpath(root)
    result = RenderSet()
    if inventory_identity:
        result.inputs[inventory.file] = inventory_identity
    env = environment(root, result.inputs)
    for template in discover(root):
        result.inputs.setdefault(os.path.join(root, template), identity(os.path.join(root, template)) or (0, 0, 0))
        try:
            compiled = env.get_template(template)
        except jinja2.TemplateError as exc:
            result.errors.append(TemplateError(template, _error_line(exc, template), None, _message(exc)))
            continue
        outputs = _output_names(template, inventory)
        if isinstance(outputs, TemplateError):
            result.errors.append(outputs)
            continue
        for name, context in outputs:
            mac = context["phone"]["mac"] if "phone" in context else None
            try:
                text = compiled.render(context)
            except Exception as exc:  # a template can raise anything; each becomes an error naming it
                result.errors.append(TemplateError(template, _error_line(exc, template), mac, _message(exc)))
                continue
            if name in result.files:
                result.errors.append(TemplateError(template, None, mac, f"renders {name}, which "
                                                   f"{result.files[name].template} renders too"))
                continue
            if os.path.lexists(os.path.join(root, name)):
                result.errors.append(TemplateError(template, None, mac, f"renders {name}, which is also a static "
                                                   f"file of the tree: remove one of them"))
                continue
            result.files[name] = Rendered(name, text.encode("utf-8"), template, mac, 0.0)
    newest = max((ident[0] for ident in result.inputs.values()), default=0) / 1e9
    result.files = {name: Rendered(r.name, r.data, r.template, r.mac, newest) for name, r in result.files.items()}
    return result


def _message(exc: BaseException) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined: {exc.message}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    if isinstance(exc, jinja2.TemplateNotFound):
        return f"template not found: {exc.name}"
    # Other exceptions may quote the values they choked on (a SIP password): name the kind only.
    return f"{type(exc).__name__} while rendering"
