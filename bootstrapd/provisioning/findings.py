"""What the phone model, ``check`` and ``explain`` report about a file: one finding, with where it is."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    file: str  # a name in the tree, a URL, or a path outside the tree (inventory, configuration)
    line: int | None
    code: str  # stable identifier scripts can match ("missing-header", "include-missing", ...)
    message: str
    models: tuple[str, ...] = field(default=(), compare=False)  # the models it applies to, where that matters
    target: str | None = field(default=None, compare=False)  # the URL it is about (a missing include, resource)

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        text = f"{self.where()}: {self.severity.value}: {self.message}"
        if self.models:
            shown = ", ".join(self.models[:8]) + (f" and {len(self.models) - 8} more" if len(self.models) > 8 else "")
            text += f" (for {shown})"
        return text

    def as_json(self) -> dict[str, Any]:
        return {"severity": self.severity.value, "file": self.file, "line": self.line, "code": self.code,
                "message": self.message, "models": list(self.models)}


def error(file: str, line: int | None, code: str, message: str, target: str | None = None) -> Finding:
    return Finding(Severity.ERROR, file, line, code, message, target=target)


def warning(file: str, line: int | None, code: str, message: str, target: str | None = None) -> Finding:
    return Finding(Severity.WARNING, file, line, code, message, target=target)
