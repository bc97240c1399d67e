"""The journal as one of the daemon's services: a process of its own (``worker.py``), fed by the event sink
(``client.py``), writing ``journal.sqlite3`` under ``state_dir``."""

from __future__ import annotations

import asyncio
import logging

from bootstrapd.config import Settings
from bootstrapd.journal.client import JournalClient
from bootstrapd.journal.store import FILE
from bootstrapd.service import Context

log = logging.getLogger("bootstrapd.journal")


class JournalService:
    name = "journal"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.journal: JournalClient | None = None

    async def start(self) -> None:
        from bootstrapd.provisioning.adapter import EXTRA, ProvisioningService

        # With the provisioning model in this daemon, the journal's process builds one too: "done" is its list.
        with_model = isinstance(self.ctx.extras.get(EXTRA), ProvisioningService)
        self.journal = JournalClient(self.ctx.settings, self.ctx.events, self.ctx.owners, self.ctx.interface,
                                     with_model)
        self.journal.start(asyncio.get_running_loop())
        self.ctx.extras["journal"] = self.journal
        log.info("journal in %s (a process of its own)", self.ctx.settings.server.state_dir / FILE)

    def reload(self, settings: Settings) -> None:
        if self.journal is not None:
            self.journal.reload(settings)

    async def stop(self) -> None:
        if self.journal is not None:
            self.journal.finish()
            await asyncio.get_running_loop().run_in_executor(None, self.journal.join)
            self.journal = None
