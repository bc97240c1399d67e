"""What a run of simulated phones comes to: totals, time to provisioned (p50/p99/max), per-stage times, every
failure with its reason, and the JSON document (one record per phone)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bootstrapd.redact import mask_url
from bootstrapd.sim.phone import SimPhone, Stage


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.50), "p99": percentile(values, 0.99), "max": max(values) if values else None}


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The totals of one boot, from its phones' records (:meth:`SimPhone.record`): records from several simulator
    processes that powered on at the same moment merge into one summary."""
    provisioned = [r for r in records if r["provisioned"]]
    failed = [r for r in records if r["stage"] == Stage.FAILED.value]
    times = [r["seconds"] for r in provisioned if r["seconds"] is not None]
    ends = [r["timeline"]["done"] for r in provisioned if "done" in r["timeline"]]
    stages: dict[str, list[float]] = {}
    for record in provisioned:
        for name, seconds in record["stages"].items():
            stages.setdefault(name, []).append(seconds)
    files = Counter(t["status"] for r in records for t in r["transfers"])
    return {
        "phones": len(records),
        "provisioned": len(provisioned),
        "failed": len(failed),
        "not_updated": sum(1 for r in provisioned if r["updated"] is False),
        "last_provisioned": max(ends) if ends else None,  # seconds from the first power-on
        "time_to_provisioned": _stats(times),
        "stages": {name: _stats(values) for name, values in stages.items()},
        "transfers": dict(files),
        "retransmissions": {
            "dhcp": sum(r["dhcp"]["retransmissions"] for r in records if r["dhcp"]),
            "pnp": sum(max(0, r["pnp"]["subscribes"] - 1) for r in records if r["pnp"]),
            "files": sum(t["retries"] for r in records for t in r["transfers"]),
        },
        "failures": reasons(failed),
    }


def reasons(failed: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Failures grouped by reason, most common first, each with the phones it hit."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in failed:
        # The phone's own MAC in a reason (its <mac>.cfg) is written <mac>, so one missing template is one line.
        groups.setdefault((record["failure"] or "").replace(record["mac"], "<mac>"), []).append(record)
    return [{"reason": reason, "count": len(group), "phones": [f"{r['mac']} ({r['model']})" for r in group]}
            for reason, group in sorted(groups.items(), key=lambda item: -len(item[1]))]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def format_text(result: dict[str, Any], *, boot: int | None = None) -> str:
    lines = []
    head = f"boot {boot}: " if boot is not None else ""
    lines.append(f"{head}{result['provisioned']} of {result['phones']} phones provisioned, {result['failed']} failed"
                 + (f", {result['not_updated']} unchanged (MD5 check: no update)" if result["not_updated"] else ""))
    t = result["time_to_provisioned"]
    lines.append(f"  time to provisioned: p50 {_seconds(t['p50'])}, p99 {_seconds(t['p99'])}, max {_seconds(t['max'])}"
                 f"; last phone provisioned {_seconds(result['last_provisioned'])} after the first power-on")
    for name, stats in result["stages"].items():
        lines.append(f"  {name:9} p50 {_seconds(stats['p50'])}, p99 {_seconds(stats['p99'])}, "
                     f"max {_seconds(stats['max'])}")
    transfers = ", ".join(f"{count} {status}" for status, count in sorted(result["transfers"].items()))
    r = result["retransmissions"]
    lines.append(f"  transfers: {transfers or 'none'}; retransmissions: DHCP {r['dhcp']}, PnP {r['pnp']}, "
                 f"files {r['files']}")
    for failure in result["failures"]:
        shown = ", ".join(failure["phones"][:5]) + (f" and {failure['count'] - 5} more" if failure["count"] > 5
                                                    else "")
        lines.append(f"  FAILED x{failure['count']}: {failure['reason']}  [{shown}]")
    return "\n".join(lines) + "\n"


def table_rows(phones: Sequence[SimPhone]) -> list[tuple[str, ...]]:
    """phone, model, address, URL source, URL, files, time, result: the summary table of the demo."""
    rows: list[tuple[str, ...]] = []
    for phone in phones:
        files = sum(1 for x in phone.transfers if x.status == "ok" and x.kind != "upload")
        elapsed = phone.elapsed()
        rows.append((phone.mac, phone.identity.model.id, str(phone.lease.address) if phone.lease else "-",
                     phone.source.name if phone.source else "-", mask_url(phone.url) if phone.url else "-", str(files),
                     f"{elapsed:.2f} s" if elapsed is not None else "-",
                     "provisioned" if phone.stage is Stage.PROVISIONED else f"FAILED: {phone.failure}"))
    return rows


def document(boots: Sequence[Sequence[dict[str, Any]]], *, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` document: per boot its summary and one record per phone."""
    return {**(extra or {}), "boots": [{"summary": summary(records), "phones": list(records)} for records in boots]}
