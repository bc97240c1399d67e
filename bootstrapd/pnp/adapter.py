"""The asyncio side of SIP PnP: two sockets, one timer, the responder core in between.

- The listener is bound to ``224.0.1.75:5060`` (SO_REUSEADDR: a SIP server on the same box may own 5060 on its
  unicast address) and joins the group on the provisioning interface's index only.
- Replies and NOTIFYs leave from a second socket bound to the interface's own IPv4 address (``pnp.source_port``,
  ephemeral by default); the phones' 200s to our NOTIFYs come back to it, since it is our Via sent-by.
- One ``call_at`` timer, re-armed only when the core's next deadline comes earlier than the armed one.
- Each answered phone is an event ``pnp.answer`` and a line in ``state_dir/pnp-phones.json`` (MAC -> address), so
  ``bootstrapd resync MAC`` can find phones that got their address elsewhere. The file is rewritten at most once a
  second, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from bootstrapd.config import Settings
from bootstrapd.net.sockets import join_ipv4_group, udp_socket
from bootstrapd.net.udp import DatagramEndpoint, open_endpoint
from bootstrapd.pnp.responder import Answered, Outgoing, Responder
from bootstrapd.service import Context

GROUP = "224.0.1.75"
RECORD = "pnp-phones.json"
RECORD_CAP = 100_000

log = logging.getLogger("bootstrapd.pnp")


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
        self._phones: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self._flush: asyncio.TimerHandle | None = None
        self._record = ctx.settings.server.state_dir / RECORD

    async def start(self) -> None:
        settings = self.ctx.settings.pnp
        iface = self.ctx.interface
        if iface.first_ipv4 is None:
            raise OSError(f"interface {iface.name!r} has no IPv4 address (pnp needs one)")
        self._loop = asyncio.get_running_loop()
        self._phones = _read_record(self._record)
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
                             version=answer.version, url=answer.url, acknowledged=answer.acknowledged)
        if answer.mac is None:
            return
        if len(self._phones) >= RECORD_CAP and answer.mac not in self._phones:
            return
        self._phones[answer.mac] = {"ip": answer.ip, "vendor": answer.vendor, "model": answer.model,
                                    "version": answer.version, "url": answer.url,
                                    "acknowledged": answer.acknowledged, "time": time.time()}
        self._dirty = True
        if self._flush is None and self._loop is not None:
            self._flush = self._loop.call_later(1.0, self._write_record)

    def _write_record(self) -> None:
        self._flush = None
        if not self._dirty or self._loop is None:
            return
        self._dirty = False
        text = json.dumps(self._phones, sort_keys=True)
        self._loop.run_in_executor(None, _write_atomically, self._record, text)

    def reload(self, settings: Settings) -> None:
        if self.core is not None:
            self.core.reconfigure(settings.pnp, variables(self.ctx))

    async def stop(self) -> None:
        for handle in (self._timer, self._flush):
            if handle is not None:
                handle.cancel()
        if self._dirty:
            _write_atomically(self._record, json.dumps(self._phones, sort_keys=True))
        for endpoint in (self.listener, self.sender):
            if endpoint is not None:
                endpoint.close()


def _read_record(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)


def read_phones(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The record of answered phones (MAC -> ip, model, …), for ``bootstrapd resync``."""
    return _read_record(state_dir / RECORD)
