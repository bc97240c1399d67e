"""Who may have a file: ``[[auth]]`` directories, and a phone's own files only to that phone.

- A name inside an ``[[auth]]`` directory needs that directory's user (HTTP basic auth, FTP login). TFTP has no
  credentials, so those directories are never served over TFTP.
- With ``mac_files = "owner"``, a MAC file (``<mac>.cfg``, ``<mac>-local.cfg`` …) goes only to the address that
  holds bootstrapd's live lease for that MAC, or to a request that passed the ``[[auth]]`` of the directory it is
  in. The lease is looked up in the DHCP servers' own pools (:class:`bootstrapd.leases.owners.LeaseOwners`).
- Both rules hold for uploads too.

The rules run before any file is looked up, so a refusal says nothing about whether the file exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from bootstrapd.dhcpconf import format_mac
from bootstrapd.provisioning.auth import AuthTable
from bootstrapd.provisioning.macfiles import owner_mac
from bootstrapd.provisioning.paths import Reason, Refused

OWNER = "owner"
ANY = "any"


class Owners(Protocol):
    def mac_for(self, address: str, now: float) -> bytes | None: ...


class AccessRules:
    def __init__(self, auth: AuthTable | None = None, mac_files: str = ANY, owners: Owners | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if mac_files not in (OWNER, ANY):
            raise ValueError(f"mac_files must be {OWNER!r} or {ANY!r}")
        self.auth = auth or AuthTable()
        self.mac_files = mac_files
        self.owners = owners
        self.clock = clock

    def check(self, parts: tuple[str, ...], client: str | None, user: str | None,
              mac: str | None = None) -> str | None:
        """The MAC the name belongs to (or None); raises :class:`Refused` when this request may not have it.

        ``user`` is a user name whose password the adapter has already verified; ``mac`` the phone an upload name
        belongs to, when the upload pattern puts the MAC elsewhere than at the start.
        """
        entry = self.auth.entry_for(parts)
        if entry is not None and user != entry.user:
            raise Refused(Reason.AUTH_REQUIRED, entry.path)
        mac = mac or owner_mac(parts[-1])
        if mac is None or self.mac_files == ANY or entry is not None:
            return mac
        holder = self.owner_of(client)
        if holder != mac:
            shown = format_mac(bytes.fromhex(holder)) if holder else "no lease"
            raise Refused(Reason.NOT_OWNER, f"{format_mac(bytes.fromhex(mac))}'s file, asked for by {client} ({shown})")
        return mac

    def owner_of(self, client: str | None) -> str | None:
        """The MAC (12 lower-case hex digits) holding a live lease on ``client``, or None."""
        if client is None or self.owners is None:
            return None
        mac = self.owners.mac_for(client, self.clock())
        return mac.hex() if mac else None

    def visible(self, parts: tuple[str, ...], user: str | None) -> bool:
        """Whether a listing (FTP) shows this name to ``user``: [[auth]] directories only to their user."""
        entry = self.auth.entry_for(parts)
        return entry is None or entry.user == user
