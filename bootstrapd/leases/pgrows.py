"""The SQL of the PostgreSQL backend and the conversion of lease records to and from its rows and notifications.

No connection, no event loop: statements and pure functions, so the rules they encode can be read in one place.

The conditional upsert is the rule that keeps two appliances from giving one address to two clients. A lease row
for an address is written only when the row there now is
- absent, released, or expired (``expires <= now`` on the writer's wall clock: appliances keep NTP time), or
- the same client's (DHCPv4: the same client identifier, or the same MAC when neither has one, RFC 2131's client
  identity; DHCPv6: the same DUID and IAID) and not its quarantine after a DECLINE, which a new lease of the
  decliner must not end early.
Otherwise the statement leaves the row alone and does not return its address: that lease lost, its reply is
withheld, and the appliance learns the winning row. ``RETURNING`` tells the two apart in the same round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from bootstrapd.leases.phones import PhoneRecord, printable
from bootstrapd.leases.store import Lease, Lease4, Lease6

CHANNEL = "bootstrapd_leases"
PAYLOAD_MAX = 7000  # bytes of one NOTIFY payload (PostgreSQL's limit is 8000)

UPSERT4 = """
INSERT INTO lease4 AS l (address, mac, client_id, expires, state, hostname, vendor_class, appliance, updated)
SELECT a, m, c, e, s, h, v, $8, $9
FROM unnest($1::inet[], $2::bytea[], $3::bytea[], $4::float8[], $5::text[], $6::text[], $7::text[])
     AS t(a, m, c, e, s, h, v)
ORDER BY a
ON CONFLICT (address) DO UPDATE SET
    mac = EXCLUDED.mac, client_id = EXCLUDED.client_id, expires = EXCLUDED.expires, state = EXCLUDED.state,
    hostname = EXCLUDED.hostname, vendor_class = EXCLUDED.vendor_class, appliance = EXCLUDED.appliance,
    updated = EXCLUDED.updated
WHERE l.state = 'released' OR l.expires <= $9
   OR ((l.client_id = EXCLUDED.client_id
        OR (l.client_id IS NULL AND EXCLUDED.client_id IS NULL AND l.mac = EXCLUDED.mac))
       AND (l.state <> 'declined' OR EXCLUDED.state = 'declined'))
RETURNING address
"""

UPSERT6 = """
INSERT INTO lease6 AS l (address, duid, iaid, expires, state, mac, hostname, appliance, updated)
SELECT a, d, i, e, s, m, h, $8, $9
FROM unnest($1::inet[], $2::bytea[], $3::int8[], $4::float8[], $5::text[], $6::bytea[], $7::text[])
     AS t(a, d, i, e, s, m, h)
ORDER BY a
ON CONFLICT (address) DO UPDATE SET
    duid = EXCLUDED.duid, iaid = EXCLUDED.iaid, expires = EXCLUDED.expires, state = EXCLUDED.state,
    mac = EXCLUDED.mac, hostname = EXCLUDED.hostname, appliance = EXCLUDED.appliance, updated = EXCLUDED.updated
WHERE l.state = 'released' OR l.expires <= $9
   OR (l.duid = EXCLUDED.duid AND l.iaid = EXCLUDED.iaid AND (l.state <> 'declined' OR EXCLUDED.state = 'declined'))
RETURNING address
"""

SELECT4 = "SELECT address, mac, client_id, expires, state, hostname, vendor_class FROM lease4"
SELECT6 = "SELECT address, duid, iaid, expires, state, mac, hostname FROM lease6"

# Phone records: the newest record of a MAC wins (by seen); new MACs only while the table has room (phones.py).
UPSERT_PHONE = """
INSERT INTO phone AS p (address, seen, source, vendor, model, version, url, mac)
SELECT * FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[])
ORDER BY 8
ON CONFLICT (mac) DO UPDATE SET address = EXCLUDED.address, seen = EXCLUDED.seen, source = EXCLUDED.source,
    vendor = EXCLUDED.vendor, model = EXCLUDED.model, version = EXCLUDED.version, url = EXCLUDED.url
WHERE p.seen <= EXCLUDED.seen
RETURNING xmax = 0
"""
KNOWN_PHONES = "SELECT mac FROM phone WHERE mac = ANY($1::text[])"
COUNT_PHONES = "SELECT count(*) FROM phone"
SELECT_PHONE = "SELECT mac, address, seen, source, vendor, model, version, url FROM phone"

UPSERT_META = """
INSERT INTO meta (appliance, key, value, updated) VALUES ($1, $2, $3, $4)
ON CONFLICT (appliance, key) DO UPDATE SET value = EXCLUDED.value, updated = EXCLUDED.updated
"""
UPSERT_UPLOAD = """
INSERT INTO upload (appliance, mac, name, size, sha256, mtime) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (mac, name, appliance) DO UPDATE SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256,
    mtime = EXCLUDED.mtime
"""


def columns4(leases: Sequence[Lease4]) -> tuple[list[Any], ...]:
    # Text from the wire is stored printable and bounded (it already is; the database must never be the one to
    # refuse a row, which would fail every lease of its batch).
    return ([x.address for x in leases], [x.mac for x in leases], [x.client_id for x in leases],
            [x.expires for x in leases], [x.state for x in leases], [printable(x.hostname) for x in leases],
            [printable(x.vendor_class) for x in leases])


def columns6(leases: Sequence[Lease6]) -> tuple[list[Any], ...]:
    return ([x.address for x in leases], [x.duid for x in leases], [x.iaid for x in leases],
            [x.expires for x in leases], [x.state for x in leases], [x.mac for x in leases],
            [printable(x.hostname) for x in leases])


def phone_columns(records: Sequence[PhoneRecord]) -> tuple[list[Any], ...]:
    rows = [(printable(r.address, 64), float(r.seen), printable(r.source, 32), printable(r.vendor),
             printable(r.model), printable(r.version), printable(r.url, 1024), printable(r.mac, 12))
            for r in records]
    return tuple([row[i] for row in rows] for i in range(8))


def lease4(row: Sequence[Any]) -> Lease4:
    a, m, c, e, s, h, v = row
    return Lease4(a, bytes(m), bytes(c) if c is not None else None, e, s, h, v)


def lease6(row: Sequence[Any]) -> Lease6:
    a, d, i, e, s, m, h = row
    return Lease6(a, bytes(d), i, e, s, bytes(m) if m is not None else None, h)


def rounds(leases: Iterable[Lease]) -> list[list[Lease]]:
    """Split a batch so that no statement names an address twice (``ON CONFLICT DO UPDATE`` cannot touch a row
    twice in one statement), keeping each address's updates in the order they were queued."""
    out: list[list[Lease]] = []
    seen: list[set[object]] = []
    for lease in leases:
        # The rounds holding an address are always the first ones: the first round without it comes after all of
        # its earlier updates.
        index = next((i for i, taken in enumerate(seen) if lease.address not in taken), len(out))
        if index == len(out):
            out.append([])
            seen.append(set())
        out[index].append(lease)
        seen[index].add(lease.address)
    return out


# -- notifications: the leases one appliance committed, for the others' pools ----------------------------------------

def _encode(lease: Lease) -> list[Any]:
    if isinstance(lease, Lease4):
        return [4, str(lease.address), lease.mac.hex(), lease.client_id.hex() if lease.client_id is not None else None,
                lease.expires, lease.state, lease.hostname, lease.vendor_class]
    return [6, str(lease.address), lease.duid.hex(), lease.iaid, lease.expires, lease.state,
            lease.mac.hex() if lease.mac is not None else None, lease.hostname]


def payloads(appliance: str, leases: Sequence[Lease]) -> list[str]:
    """JSON texts of at most :data:`PAYLOAD_MAX` bytes each: ``{"from": appliance, "leases": [...]}``."""
    out: list[str] = []
    head = json.dumps(appliance)
    chunk: list[str] = []
    size = 0
    for lease in leases:
        item = json.dumps(_encode(lease), ensure_ascii=True, separators=(",", ":"))
        if chunk and size + len(item) + len(head) + 30 > PAYLOAD_MAX:
            out.append('{"from":%s,"leases":[%s]}' % (head, ",".join(chunk)))  # noqa: UP031 - JSON braces
            chunk, size = [], 0
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        out.append('{"from":%s,"leases":[%s]}' % (head, ",".join(chunk)))  # noqa: UP031
    return out


def decode(payload: str) -> tuple[str, list[Lease]]:
    """(appliance, leases) of a notification; raises ValueError on anything that is not one of ours."""
    try:
        message = json.loads(payload)
        sender = message["from"]
        out: list[Lease] = []
        for item in message["leases"]:
            if item[0] == 4:
                _, a, m, c, e, s, h, v = item
                out.append(Lease4(IPv4Address(a), bytes.fromhex(m), bytes.fromhex(c) if c is not None else None,
                                  float(e), str(s), h, v))
            elif item[0] == 6:
                _, a, d, i, e, s, m, h = item
                out.append(Lease6(IPv6Address(a), bytes.fromhex(d), int(i), float(e), str(s),
                                  bytes.fromhex(m) if m is not None else None, h))
        if not isinstance(sender, str):
            raise ValueError("sender")
        return sender, out
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"not a lease notification: {exc}") from None
