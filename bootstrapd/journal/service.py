"""The journal as one of the daemon's services: opens the store under ``state_dir`` and subscribes to the events."""

from __future__ import annotations

import asyncio
import logging

from bootstrapd.config import Settings
from bootstrapd.journal.journal import Expected, Journal
from bootstrapd.journal.store import FILE, SqliteJournal
from bootstrapd.service import Context

log = logging.getLogger("bootstrapd.journal")


class JournalService:
    name = "journal"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.journal: Journal | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        path = self.ctx.settings.server.state_dir / FILE
        store = await loop.run_in_executor(None, SqliteJournal, path)
        self.journal = Journal(self.ctx.settings.journal, store, self.ctx.events, self.ctx.owners,
                               self._expected())
        # Loading the phones already known reads the file: off the loop, like opening it.
        await loop.run_in_executor(None, self.journal.load)
        self.journal.start(loop)
        self.ctx.extras["journal"] = self.journal
        log.info("journal in %s, %d phones known", path, sum(self.journal.stage_counts.values()))

    def _expected(self) -> Expected | None:
        """The provisioning model's download list ("done"), when the model runs in this daemon."""
        from bootstrapd.provisioning.adapter import EXTRA, ProvisioningService

        service = self.ctx.extras.get(EXTRA)
        if not isinstance(service, ProvisioningService):
            return None
        from bootstrapd.journal.expected import downloads_for

        return downloads_for(lambda: self.ctx.settings, self.ctx.interface, lambda: service.provisioning)

    def reload(self, settings: Settings) -> None:
        if self.journal is not None:
            self.journal.reload(settings.journal)

    async def stop(self) -> None:
        if self.journal is not None:
            self.journal.finish()
            await asyncio.get_running_loop().run_in_executor(None, self.journal.join)
            self.journal = None
