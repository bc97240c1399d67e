"""Who holds an address now: the MAC behind one of bootstrapd's own live leases.

The file services use it for the MAC-file rule (a phone's own files go only to the address leased to that MAC) and
the journal uses it to tie a file request to a phone. There is no copy of the lease table here: each DHCP server
registers a lookup into its own pool, so the answer is always what the server itself would say.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

Lookup = Callable[[IPv4Address | IPv6Address, float], bytes | None]


class LeaseOwners:
    def __init__(self) -> None:
        self._lookups: list[Lookup] = []

    def register(self, lookup: Lookup) -> None:
        self._lookups.append(lookup)

    def mac_for(self, address: str | IPv4Address | IPv6Address, now: float) -> bytes | None:
        """The MAC holding an active, unexpired lease on ``address`` (wall-clock ``now``), or None."""
        if isinstance(address, str):
            try:
                # An IPv6 source may carry a scope ("fe80::1%eth1") and a v4-mapped form ("::ffff:10.0.0.5").
                parsed = ip_address(address.split("%", 1)[0])
            except ValueError:
                return None
        else:
            parsed = address
        if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        for lookup in self._lookups:
            mac = lookup(parsed, now)
            if mac is not None:
                return mac
        return None
