"""``Range: bytes=…`` (RFC 9110 14.1-14.2) against a file's size. Pure.

:func:`parse_ranges` returns the byte ranges to send, inclusive ``(first, last)``, in the order asked; None means
"ignore the header and send the whole file" (another unit, a syntax error, or more than :data:`MAX_RANGES` ranges:
a server may ignore a Range header, and a thousand ranges are a denial-of-service attempt, not a resume);
:class:`Unsatisfiable` means 416. Overlapping or adjacent ranges are merged (RFC 9110 14.3 lets a server coalesce
them), so a response never carries the same bytes twice.
"""

from __future__ import annotations

import itertools

MAX_RANGES = 16
MAX_HEADER = 1024


class Unsatisfiable(ValueError):
    """No range of the header overlaps the file: 416 with ``Content-Range: bytes */size``."""


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    if len(header) > MAX_HEADER:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    pieces = [p.strip() for p in spec.split(",")]
    pieces = [p for p in pieces if p]
    if not pieces or len(pieces) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for piece in pieces:
        first_text, dash, last_text = piece.partition("-")
        first_text, last_text = first_text.strip(), last_text.strip()
        if not dash or not (first_text.isdigit() or first_text == "") or not (last_text.isdigit() or last_text == ""):
            return None
        if not first_text.isascii() or not last_text.isascii():
            return None
        if first_text == "":
            if last_text == "":
                return None
            suffix = int(last_text)
            if suffix == 0 or size == 0:
                continue  # bytes=-0 selects nothing
            ranges.append((max(0, size - suffix), size - 1))
            continue
        first = int(first_text)
        if last_text and int(last_text) < first:
            return None  # an invalid range-spec: the whole header is ignored
        if first >= size:
            continue
        last = min(int(last_text), size - 1) if last_text else size - 1
        ranges.append((first, last))
    if not ranges:
        raise Unsatisfiable(f"bytes */{size}")
    return _coalesce(ranges)


def _coalesce(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ordered = sorted(ranges)
    if all(a[1] + 1 < b[0] for a, b in itertools.pairwise(ordered)):
        return ranges  # disjoint: keep the order the client asked for
    merged = [ordered[0]]
    for first, last in ordered[1:]:
        if first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged
