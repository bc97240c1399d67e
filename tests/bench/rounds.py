"""What every benchmark shares: servers interleaved over repeated rounds, min/median/max, ratios of medians.

A benchmark measures each server once per round; round ``r`` starts with the ``r``-th server (the order rotates), so
a slow spell of the shared machine does not always land on the same server. The figure of a server is the median of
its rounds, and a ratio is always median against median. Also here: the machine's load (the README states how loaded
the machine was for every figure) and the CPU time of a process, so a run can be read as CPU per exchange too.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


def interleaved(servers: Sequence[str], repeat: int) -> Iterator[tuple[int, str]]:
    """``(round, server)`` pairs: every server once per round, each round starting one server further on."""
    for round_ in range(repeat):
        for i in range(len(servers)):
            yield round_, servers[(round_ + i) % len(servers)]


@dataclass
class Series(Generic[T]):
    """Per server, one value per round (None: that round failed to produce a figure)."""

    values: dict[str, list[T]] = field(default_factory=dict)

    def add(self, server: str, value: T) -> None:
        self.values.setdefault(server, []).append(value)


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max); NaNs (failed rounds) are left out, all-NaN gives NaNs."""
    good = [v for v in values if v == v]
    if not good:
        nan = float("nan")
        return nan, nan, nan
    return min(good), statistics.median(good), max(good)


def ratio(ours: Sequence[float], theirs: Sequence[float], higher_is_better: bool = True) -> float:
    """Median against median, oriented so that above 1.0 means bootstrapd is better."""
    a, b = spread(ours)[1], spread(theirs)[1]
    if a != a or b != b or (b if higher_is_better else a) == 0:
        return float("nan")
    return a / b if higher_is_better else b / a


def fmt(value: float, digits: int = 1) -> str:
    if value != value:
        return "-"
    return f"{value:,.{digits}f}"


def table(title: str, unit: str, series: dict[str, list[float]], digits: int = 1,
          higher_is_better: bool = True, base: str = "bootstrapd") -> list[str]:
    """Lines: one per server with its rounds, min/median/max, and bootstrapd's ratio of medians to it."""
    width = max([12, *map(len, series)])
    lines = [title, f"  {'server':<{width}} {'rounds':<34} {'min':>10} {'median':>10} {'max':>10}  {'bootstrapd/':>12}"]
    for name, values in series.items():
        low, mid, high = spread(values)
        rounds = ", ".join(fmt(v, digits) for v in values)
        shown = ""
        if name != base and base in series:
            r = ratio(series[base], values, higher_is_better)
            shown = f"{fmt(r, 2)}x" if r == r else "-"
        lines.append(f"  {name:<{width}} {rounds:<34} {fmt(low, digits):>10} {fmt(mid, digits):>10} "
                     f"{fmt(high, digits):>10}  {shown:>12}  {unit}")
    return lines


def journal_cost(series: dict[str, list[float]], unit: str) -> str | None:
    """The journal's cost as issue #12 states it: bootstrapd (journal on, its default) against bootstrapd-nojournal
    in the same rounds, median against median (at least 0.90: the journal costs at most 10%)."""
    if "bootstrapd" not in series or "bootstrapd-nojournal" not in series:
        return None
    r = ratio(series["bootstrapd"], series["bootstrapd-nojournal"])
    return (f"Journal on / off (bootstrapd / bootstrapd-nojournal, medians of the highest rate): {fmt(r, 2)}x "
            f"({fmt(spread(series['bootstrapd'])[1], 0)} against {fmt(spread(series['bootstrapd-nojournal'])[1], 0)}"
            f" {unit}; the goal: at least 0.90)")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its threads included (from /proc; 0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def schedstat(pid: int, tid: int | str | None = None) -> tuple[float, float]:
    """Seconds a process (its main thread) or one of its threads ran on a CPU and seconds it waited, runnable,
    for one (``/proc/PID[/task/TID]/schedstat``); zeros once it is gone."""
    path = f"/proc/{pid}/schedstat" if tid is None else f"/proc/{pid}/task/{tid}/schedstat"
    try:
        ran, waited = Path(path).read_text().split()[:2]
    except (OSError, ValueError):
        return (0.0, 0.0)
    return (int(ran) / 1e9, int(waited) / 1e9)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``ip netns exec`` execs, so the server is usually ``pid`` itself)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        try:
            for child in children.read_text().split():
                out.extend(process_tree(int(child)))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid))


def settled_cpu_seconds(pid: int, timeout: float = 20.0) -> float:
    """:func:`tree_cpu_seconds` once the processes have gone idle (under 20 ms of CPU in 0.5 s), at most ``timeout``
    seconds from now: the work a server does after the load stopped counts too."""
    deadline = time.monotonic() + timeout
    cpu = tree_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu_seconds(pid)
        if now - cpu < 0.02:
            return now
        cpu = now
    return cpu


def run_rounds(servers: Sequence[str], repeat: int, measure: Callable[[int, str], T]) -> Series[T]:
    series: Series[T] = Series()
    for round_, name in interleaved(servers, repeat):
        print(f"-- round {round_ + 1}/{repeat}: {name}", flush=True)
        series.add(name, measure(round_, name))
    return series
