"""The live view of a run: phones per stage, provisioned and failed so far, the latest failures.

On a terminal it is a rich Live panel redrawn a few times a second; otherwise (a log, a pipe) one plain line every
two seconds, so a CI log shows progress without control characters.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any

from bootstrapd.sim.phone import SimPhone, Stage
from bootstrapd.sim.report import table_rows

ORDER = (Stage.OFF, Stage.DHCP, Stage.PNP, Stage.DOWNLOAD, Stage.UPLOAD, Stage.PROVISIONED, Stage.FAILED)


class View:
    def __init__(self, stream: IO[str], total: int, *, live: bool | None = None, title: str = "bootstrapd sim") -> None:
        self.stream = stream
        self.total = total
        self.title = title
        self.live_mode = stream.isatty() if live is None else live
        self.phones: Sequence[SimPhone] = ()
        self.started = time.monotonic()
        self._last_line = 0.0
        self._live: Any = None
        self.boot = 0

    def __enter__(self) -> View:
        if self.live_mode:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._render(), console=Console(file=self.stream), refresh_per_second=4,
                              transient=False, get_renderable=self._render)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.__exit__(None, None, None)
            self._live = None
        else:
            self._line(force=True)

    def follow(self, phones: Sequence[SimPhone], boot: int) -> None:
        """The phones of the boot now running (the runner replaces its list at each boot)."""
        self.phones = phones
        self.boot = boot
        self.started = time.monotonic()

    def changed(self, phone: SimPhone) -> None:
        if self._live is None:
            self._line()

    def counts(self) -> Counter[Stage]:
        counts = Counter(p.stage for p in self.phones)
        counts[Stage.OFF] += max(0, self.total - len(self.phones))
        return counts

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_line < 2.0:
            return
        self._last_line = now
        counts = self.counts()
        parts = ", ".join(f"{stage.value} {counts[stage]}" for stage in ORDER if counts[stage])
        self.stream.write(f"[{now - self.started:6.1f} s] boot {self.boot + 1}: {parts}\n")
        self.stream.flush()

    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.table import Table

        counts = self.counts()
        grid = Table.grid(padding=(0, 2))
        grid.add_row(*[f"[bold]{stage.value}[/]" for stage in ORDER])
        grid.add_row(*[str(counts[stage]) for stage in ORDER])
        failed = [p for p in self.phones if p.stage is Stage.FAILED][-5:]
        body = Table.grid()
        body.add_row(grid)
        for phone in failed:
            body.add_row(f"[red]{phone.mac} {phone.identity.model.id}: {phone.failure}[/]")
        elapsed = time.monotonic() - self.started
        return Panel(body, title=f"{self.title} - boot {self.boot + 1} - {elapsed:.1f} s - "
                                 f"{counts[Stage.PROVISIONED]}/{self.total} provisioned")


def print_table(stream: IO[str], phones: Sequence[SimPhone], *, live: bool | None = None) -> None:
    """The summary table: phone, model, address, URL source, URL, files, time, result."""
    headers = ("phone", "model", "address", "URL source", "URL", "files", "time", "result")
    rows = table_rows(phones)
    if live if live is not None else stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        Console(file=stream).print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    stream.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for row in rows:
        stream.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
