"""Time for the cores in unit tests: both clocks at one reading unless a test makes them differ."""

from __future__ import annotations

from bootstrapd.clock import Now


def at(wall: float, mono: float | None = None) -> Now:
    return Now(wall, wall if mono is None else mono)
