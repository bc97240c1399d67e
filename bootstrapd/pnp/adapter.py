"""The asyncio side of SIP PnP: two sockets, one timer, the responder core in between.

- The listener is bound to ``224.0.1.75:5060`` (SO_REUSEADDR: a SIP server on the same box may own 5060 on its
  unicast address) and joins the group on the provisioning interface's index only.
- Replies and NOTIFYs leave from a second socket bound to the interface's own IPv4 address (``pnp.source_port``,
  ephemeral by default); the phones' 200s to our NOTIFYs come back to it, since it is our Via sent-by.
- One ``call_at`` timer, re-armed only when the core's next deadline comes earlier than the armed one.
- Each answered phone is an event ``pnp.answer``; one that acknowledged its NOTIFY is also a phone record in the
  store (:mod:`bootstrapd.pnp.phones`), so ``bootstrapd resync MAC`` can find phones that got their address
  elsewhere. Records are handed to the store's writer thread once a second, the latest per MAC (a phone or a sipp
  run repeating exchanges costs one upsert a second, not one commit per exchange), and on stop. An old
  ``state_dir/pnp-phones.json`` is imported once, off the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.leases.phones import PhoneRecord
from bootstrapd.log import RateLimited
from bootstrapd.net.sockets import join_ipv4_group, udp_socket
from bootstrapd.net.udp import DatagramEndpoint, open_endpoint
from bootstrapd.pnp import phones
from bootstrapd.pnp.responder import Answered, Outgoing, Responder
from bootstrapd.redact import mask_url
from bootstrapd.service import Context

GROUP = "224.0.1.75"
RECORD_EVERY = 1.0  # seconds between hand-overs of phone records to the store's writer

log = logging.getLogger("bootstrapd.pnp")
_limited = RateLimited(log)


def variables(ctx: Context) -> dict[str, str]:
    return ctx.url_variables()  # the same {ipv4}/{ipv6}/{interface} as every other URL (bootstrapd.urltemplates)


class PnpService:
    name = "pnp"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.core: Responder | None = None
        self.listener: DatagramEndpoint | None = None
        self.sender: DatagramEndpoint | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._import: asyncio.Future[None] | None = None
        self._unrecorded: dict[str, PhoneRecord] = {}  # MAC -> its latest record, not yet handed to the store
        self._record_timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        settings = self.ctx.settings.pnp
        iface = self.ctx.interface
        if iface.first_ipv4 is None:
            raise OSError(f"interface {iface.name!r} has no IPv4 address (pnp needs one)")
        self._loop = asyncio.get_running_loop()
        legacy = self.ctx.settings.server.state_dir / phones.LEGACY
        if legacy.exists():
            self._import = self._loop.run_in_executor(None, self._import_legacy, legacy)
        events = self.ctx.events
        listen = udp_socket(socket.AF_INET, iface.name, GROUP, settings.port, reuse_address=True)
        try:
            join_ipv4_group(listen, GROUP, iface.index)
            send = udp_socket(socket.AF_INET, iface.name, str(iface.first_ipv4), settings.source_port)
        except BaseException:
            listen.close()
            raise
        local = send.getsockname()
        self.core = Responder(settings, (local[0], local[1]), variables(self.ctx), answered=self._answered,
                              count=events.count)
        self.sender = await open_endpoint("pnp", send, self._datagram, events)
        self.listener = await open_endpoint("pnp", listen, self._datagram, events)
        log.info("pnp listening on %s:%d, answering from %s:%d", GROUP, settings.port, *local)

    def _datagram(self, data: bytes, addr: Any) -> None:
        assert self.core is not None and self._loop is not None
        try:
            out = self.core.receive(data, addr, self._loop.time())
        finally:
            self._rearm()
        self._send(out)

    def _send(self, out: list[Outgoing]) -> None:
        assert self.sender is not None
        for item in out:
            self.sender.sendto(item.data, item.addr)

    def _rearm(self) -> None:
        """Arm the one timer for the core's next deadline.

        A deadline that moved later (the oldest NOTIFY was answered, which under load is almost every datagram) keeps
        the armed timer: it fires early once and re-arms then, instead of a cancel + call_at per datagram.
        """
        assert self.core is not None and self._loop is not None
        deadline = self.core.next_deadline()
        if deadline is None or (self._armed is not None and self._armed <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed = deadline
        self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        assert self.core is not None and self._loop is not None
        self._timer = None
        self._armed = None
        self._send(self.core.on_timer(self._loop.time()))
        self._rearm()

    def _answered(self, answer: Answered) -> None:
        self.ctx.events.emit("pnp.answer", mac=answer.mac, ip=answer.ip, vendor=answer.vendor, model=answer.model,
                             version=answer.version, url=mask_url(answer.url) if answer.url else answer.url,
                             acknowledged=answer.acknowledged)
        record = phones.record_for(answer, time.time())  # the wall clock: a date to show, not a timeout
        if record is not None:
            self._unrecorded[record.mac] = record
            if self._record_timer is None and self._loop is not None:
                self._record_timer = self._loop.call_later(RECORD_EVERY, self._record)

    def _record(self) -> None:
        self._record_timer = None
        if self._unrecorded:
            records = list(self._unrecorded.values())
            self._unrecorded.clear()
            self.ctx.store.record_phones(records, self._recorded)

    def _recorded(self, error: BaseException | None) -> None:
        if error is not None:
            self.ctx.events.count("pnp.record_error")
            _limited.warning("pnp.record", "pnp: cannot record a phone in the store: %s", error)

    def _import_legacy(self, path: Path) -> None:
        """Runs in a worker thread: the acknowledged phones of an old JSON record go to the store, once."""
        records = phones.read_legacy(path)
        loop = self._loop
        assert loop is not None

        def imported(error: BaseException | None) -> None:
            if error is not None:
                log.warning("pnp: %s not imported (kept for the next start): %s", path, error)
                return
            # The rename is a metadata write on the state disk: not on the loop either.
            loop.run_in_executor(None, _retire, path, len(records))

        self.ctx.store.record_phones(records, imported)

    def reload(self, settings: Settings) -> None:
        if self.core is not None:
            self.core.reconfigure(settings.pnp, variables(self.ctx))

    async def stop(self) -> None:
        for handle in (self._timer, self._record_timer):
            if handle is not None:
                handle.cancel()
        self._record()  # queued before the daemon closes the store, whose writer commits what is queued
        for endpoint in (self.listener, self.sender):
            if endpoint is not None:
                endpoint.close()


def _retire(path: Path, count: int) -> None:
    try:
        os.replace(path, path.with_name(phones.IMPORTED))
    except OSError as exc:
        log.warning("pnp: imported %s but cannot rename it: %s", path, exc)
        return
    log.info("pnp: imported %d acknowledged phones from %s into the store; the file is now %s", count, path,
             phones.IMPORTED)
