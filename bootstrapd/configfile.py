"""Reading a TOML configuration file with errors that name the file, line and key.

``tomllib`` gives values but no positions, so :class:`KeyLocator` scans the text once and remembers the line of
every key (tables, arrays of tables and dotted keys included). :class:`Table` wraps one parsed table with typed
getters; every getter records the keys it read so that :meth:`Table.finish` can reject unknown keys (typos such as
``leasetime`` must not be silently ignored on a production box).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_MISSING: Any = object()


class ConfigError(Exception):
    """A configuration problem, with where it is."""

    def __init__(self, file: str, line: int | None, key: str, message: str) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


class KeyLocator:
    """Maps dotted key paths (``dhcp4.host[1].mac``) to the line they are on."""

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counts: dict[str, int] = {}
        prefix = ""
        in_multiline: str | None = None
        for number, raw in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if in_multiline in raw:
                    in_multiline = None
                continue
            header = _HEADER.match(raw)
            if header:
                path = ".".join(_split_key(header.group(2)))
                if header.group(1) == "[[":
                    index = counts.get(path, 0)
                    counts[path] = index + 1
                    prefix = f"{path}[{index}]"
                else:
                    prefix = path
                self.lines.setdefault(prefix, number)
                continue
            key = _KEY.match(raw)
            if key:
                path = ".".join(_split_key(key.group(1)))
                full = f"{prefix}.{path}" if prefix else path
                self.lines.setdefault(full, number)
                rest = raw[key.end():]
                for quote in ('"""', "'''"):
                    if rest.count(quote) == 1:
                        in_multiline = quote

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            if "." not in path and "[" not in path:
                return None
            path = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path)
        return None


class Source:
    """A parsed file: its data, name and key positions."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.locator = KeyLocator(text)
        try:
            self.data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = re.search(r"line (\d+)", str(exc))
            raise ConfigError(file, int(match.group(1)) if match else None, "", f"not valid TOML: {exc}") from None

    @classmethod
    def read(cls, path: str | Path) -> Source:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), None, "", f"cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(str(path), None, "", "not UTF-8 text") from None
        return cls(str(path), text)

    def root(self) -> Table:
        return Table(self, "", self.data)

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.file, self.locator.line(path), path, message)


class Table:
    """One TOML table with typed, validating getters."""

    def __init__(self, source: Source, path: str, data: dict[str, Any]) -> None:
        self.source = source
        self.path = path
        self.data = data
        self._seen: set[str] = set()

    def key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return self.source.error(self.key_path(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def _get(self, key: str, default: Any) -> Any:
        self._seen.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "is required")
        return default

    def _typed(self, key: str, default: Any, kind: type | tuple[type, ...], what: str) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) and kind is not bool:
            raise self.error(key, f"must be {what}, not a boolean")
        if not isinstance(value, kind):
            raise self.error(key, f"must be {what}, not {type(value).__name__} {value!r}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        return self._typed(key, default, str, "a string")

    def flag(self, key: str, default: Any = _MISSING) -> Any:
        return self._typed(key, default, bool, "true or false")

    def integer(self, key: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None) -> Any:
        value = self._typed(key, default, int, "a whole number")
        if isinstance(value, int) and key in self.data:
            if min is not None and value < min:
                raise self.error(key, f"must be at least {min}, not {value}")
            if max is not None and value > max:
                raise self.error(key, f"must be at most {max}, not {value}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, min: float | None = None) -> Any:
        value = self._get(key, default)
        if key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"must be a number, not {value!r}")
        if min is not None and value < min:
            raise self.error(key, f"must be at least {min}, not {value}")
        return float(value)

    def text_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if key not in self.data:
            return value
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, "must be a string or a list of strings")
        return list(value)

    def parse(self, key: str, convert: Callable[[Any], T], default: Any = _MISSING, what: str = "") -> T:
        """Read a value and convert it; a ValueError from ``convert`` becomes a ConfigError naming the key."""
        value = self._get(key, default)
        if key not in self.data:
            return value  # type: ignore[no-any-return]
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            detail = str(exc) or what
            raise self.error(key, f"{detail}" if not what else f"must be {what} ({detail})") from None

    def table(self, key: str) -> Table:
        value = self._get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, "must be a table")
        return Table(self.source, self.key_path(key), value)

    def tables(self, key: str) -> list[Table]:
        value = self._get(key, [])
        if isinstance(value, dict):
            raise self.error(key, f"must be an array of tables: write [[{self.key_path(key)}]]")
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"must be an array of tables ([[{self.key_path(key)}]])")
        return [Table(self.source, f"{self.key_path(key)}[{i}]", v) for i, v in enumerate(value)]

    def items(self) -> Iterator[tuple[str, Any]]:
        """Every key of a free-form table (such as option codes); marks them all as read."""
        for key, value in self.data.items():
            self._seen.add(key)
            yield key, value

    def finish(self) -> None:
        """Reject keys nobody read: almost always a typo."""
        for key in self.data:
            if key not in self._seen:
                raise self.error(key, "unknown key")
