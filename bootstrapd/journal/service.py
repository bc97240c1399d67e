"""The journal as one of the daemon's services: opens its store (``state_dir/journal.sqlite3``, or the shared
PostgreSQL database with ``[store] backend = "postgresql"``) and subscribes to the events."""

from __future__ import annotations

import asyncio
import logging

from bootstrapd.config import Settings
from bootstrapd.journal.backends import open_journal
from bootstrapd.journal.journal import Expected, Journal
from bootstrapd.journal.store import JournalUnavailable
from bootstrapd.service import Context, StartupError

log = logging.getLogger("bootstrapd.journal")


class JournalService:
    name = "journal"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.journal: Journal | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.ctx.settings
        try:
            store = await loop.run_in_executor(None, open_journal, settings, self.ctx.store.appliance)
        except JournalUnavailable as exc:  # a password file gone since the lease store read it
            raise StartupError(f"journal: {exc}") from None
        self.journal = Journal(settings.journal, store, self.ctx.events, self.ctx.owners, self._expected())
        # Loading the phones already known reads the store: off the loop, like opening it.
        try:
            await loop.run_in_executor(None, self.journal.load)
        except JournalUnavailable as exc:  # the shared database went away since the lease store opened it
            log.warning("journal: cannot read the phones already known (%s); starting without them", exc)
        self.journal.start(loop)
        self.ctx.extras["journal"] = self.journal
        log.info("journal in %s, %d phones known", store.where, sum(self.journal.stage_counts.values()))

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
