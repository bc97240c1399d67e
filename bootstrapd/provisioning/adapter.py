"""The asyncio side of the provisioning model: builds the overlays at start, rebuilds them on SIGHUP and when the
inventory or a template changes on disk, and plugs them (and the encryption transform) into the one resolver the
file services share (``ctx.files``), so TFTP, HTTP and FTP serve rendered and encrypted files alike.

A build with errors never replaces the files in force: at start-up it is a start-up error (exit 2, with every
problem logged); later it is logged and the previous files keep being served. Nothing a template renders, and no
key, is ever logged: only names and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bootstrapd.config import Settings
from bootstrapd.provisioning.overlays import KeyStoreError, Problem
from bootstrapd.provisioning.tree import Provisioning, plug
from bootstrapd.service import Context, StartupError

log = logging.getLogger("bootstrapd.provisioning")

EXTRA = "provisioning"


class ProvisioningService:
    name = "provisioning"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.provisioning: Provisioning | None = None
        self._task: asyncio.Task[None] | None = None
        ctx.extras[EXTRA] = self

    def _build(self, settings: Settings) -> tuple[Provisioning, list[Problem] | None]:
        provisioning = Provisioning(settings)
        return provisioning, provisioning.rendered.refresh(force=True)

    async def start(self) -> None:
        try:
            provisioning, problems = self._build(self.ctx.settings)
        except KeyStoreError as exc:
            raise StartupError(f"provisioning.encrypt: {exc}") from None
        if problems:
            for problem in problems:
                log.error("provisioning: %s", problem)
            raise StartupError(f"provisioning: {len(problems)} problem(s) in the inventory or templates, first: "
                               f"{problems[0]}")
        self.provisioning = provisioning
        self._plug()
        self._report(provisioning)
        interval = self.ctx.settings.provisioning.watch_interval
        if interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def _plug(self) -> None:
        """The overlays and transform in force into the daemon's resolver (which SIGHUP rebuilds before us)."""
        if self.ctx.files is not None and self.provisioning is not None:
            plug(self.ctx.files, self.provisioning)

    def _report(self, provisioning: Provisioning) -> None:
        files = list(provisioning.rendered.names())
        self.ctx.events.emit("provisioning.rendered", files=len(files),
                             phones=len(provisioning.rendered.inventory.phones),
                             generation=provisioning.rendered.generation)
        log.info("provisioning: %d phone(s) in the inventory, %d file(s) rendered",
                 len(provisioning.rendered.inventory.phones), len(files))

    def _rejected(self, problems: list[Problem]) -> None:
        self.ctx.events.emit("provisioning.render_failed", problems=len(problems))
        for problem in problems:
            log.error("provisioning: %s", problem)
        log.error("provisioning: %d problem(s): the files rendered before stay in force", len(problems))

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self.ctx.settings.provisioning.watch_interval, 0.1))
            provisioning = self.provisioning
            if provisioning is None:
                continue
            before = provisioning.rendered.generation
            try:
                problems = await loop.run_in_executor(None, provisioning.rendered.refresh)
            except Exception:  # a disk error must not end the watcher: the files in force stay
                log.exception("provisioning: cannot look at the inventory and templates")
                continue
            if problems:
                self._rejected(problems)
            elif provisioning.rendered.generation != before:
                self._report(provisioning)

    def reload(self, settings: Settings) -> None:
        # SIGHUP: rebuild from the new settings at once, so the next request already gets the new files.
        try:
            provisioning, problems = self._build(settings)
        except KeyStoreError as exc:
            log.error("provisioning: reload keeps the files in force: provisioning.encrypt: %s", exc)
            self._plug()
            return
        if problems:
            self._rejected(problems)
            self._plug()
            return
        self.provisioning = provisioning
        self._plug()
        self._report(provisioning)
        if self._task is None and settings.provisioning.watch_interval > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
