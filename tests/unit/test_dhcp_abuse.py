"""One client (one MAC, one DUID) must not be able to take a pool, whatever identifiers it rotates.

The rate limiter counts messages; these tests show that a single client within its rate still holds at most
``MAX_PER_CLIENT`` addresses: DHCPv4 client identifiers rotated behind one MAC, DECLINE loops quarantining address
after address, DHCPv6 IAIDs rotated under one DUID or packed into one message.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bootstrapd.dhcp4 import codec as c4
from bootstrapd.dhcp6 import codec as c6
from bootstrapd.leases.pool import MAX_PER_CLIENT
from tests.unit import test_dhcp6_server as h6
from tests.unit.clock_helpers import at
from tests.unit.dhcp4_helpers import SERVER, dora, mac, make_server, message

RANGE = '\n[dhcp4]\nrange = "10.77.0.10-10.77.0.250"\nrate_limit = 1000.0\nrate_burst = 1000\n'
BASE = '[server]\ninterface = "eth1"\n'
SRC = ("0.0.0.0", 68)


def test_dhcp4_one_mac_rotating_client_ids_cannot_take_the_pool() -> None:
    """Each new identity of the MAC takes the place of its oldest one: the MAC never holds more than its share,
    and the newest identity (a phone reset with a new client-id) is still served."""
    server = make_server(base=BASE + RANGE)
    acked = []
    for n in range(100):
        client_id = b"\x01" + n.to_bytes(6, "big")
        offer = server.handle(message(c4.DISCOVER, mac(1), options={c4.CLIENT_ID: client_id}), SRC, at(1000.0))
        if offer is None or offer.data is None:
            continue
        yiaddr = c4.decode(offer.data).yiaddr
        ack = server.handle(message(c4.REQUEST, mac(1), options={c4.CLIENT_ID: client_id, c4.SERVER_ID: SERVER.packed,
                                                                 c4.REQUESTED_IP: yiaddr}), SRC, at(1000.0))
        if ack is not None and ack.data is not None and c4.decode(ack.data).msg_type() == c4.ACK:
            acked.append(n)
    assert acked[-1] == 99  # the newest identity got an address
    live = [b for b in server.pool.bindings() if b.state == "active" and b.expires > 1000.0]
    assert len(live) <= MAX_PER_CLIENT
    assert IPv4Address(dora(server, mac(2), 1001.0).yiaddr) in server.network  # others are still served


def test_dhcp4_init_reboot_with_rotating_client_ids_cannot_take_the_pool() -> None:
    server = make_server(base=BASE + RANGE)
    acked = 0
    for n in range(100):
        options = {c4.CLIENT_ID: b"\x01" + n.to_bytes(6, "big"), c4.REQUESTED_IP: bytes((10, 77, 0, 10 + n))}
        reply = server.handle(message(c4.REQUEST, mac(1), options=options), SRC, at(1000.0))
        if reply is not None and reply.data is not None and c4.decode(reply.data).msg_type() == c4.ACK:
            acked += 1
    assert 1 <= acked <= MAX_PER_CLIENT


def test_dhcp4_decline_loop_cannot_quarantine_the_pool() -> None:
    server = make_server(base=BASE + RANGE)
    for n in range(100):
        ack = server.handle(message(c4.DISCOVER, mac(1)), SRC, at(1000.0 + n))
        if ack is None or ack.data is None:
            continue
        address = dora(server, mac(1), 1000.0 + n).yiaddr
        server.handle(message(c4.DECLINE, mac(1), options={c4.SERVER_ID: SERVER.packed, c4.REQUESTED_IP: address}),
                      SRC, at(1000.0 + n))
    assert server.states()["declined"] <= MAX_PER_CLIENT


def test_dhcp6_one_message_with_many_ias_cannot_take_the_pool() -> None:
    srv = h6.server('range = "fd77::100-fd77::1ff"\nrate_limit = 1000.0\nrate_burst = 1000')
    reply, out = h6.handle(srv, h6.msg(c6.REQUEST, h6.YEALINK, *(h6.ia(i) for i in range(c6.MAX_IAS)),
                                       server_id=h6.SERVER_DUID))
    granted = [x for x in h6.ias(reply) if x.addresses]
    assert 1 <= len(granted) <= MAX_PER_CLIENT and len(out.leases) == len(granted)
    assert all(x.status is not None and x.status.code == c6.NO_ADDRS_AVAIL for x in h6.ias(reply) if not x.addresses)
    h6.obtain(srv, h6.OTHER)


def test_dhcp6_rotating_iaids_and_declines_cannot_take_the_pool() -> None:
    srv = h6.server('range = "fd77::100-fd77::1ff"\nrate_limit = 1000.0\nrate_burst = 1000')
    held = 0
    for iaid in range(100):
        reply, _ = h6.handle(srv, h6.msg(c6.REQUEST, h6.YEALINK, h6.ia(iaid), server_id=h6.SERVER_DUID))
        got = h6.ias(reply)[0].addresses
        if got:
            held += 1
            h6.handle(srv, h6.msg(c6.DECLINE, h6.YEALINK, h6.ia(iaid, str(got[0].address)),
                                  server_id=h6.SERVER_DUID))
    assert 1 <= held <= MAX_PER_CLIENT
    h6.obtain(srv, h6.OTHER)


def test_dhcp6_message_packed_with_ias_is_dropped_before_any_work() -> None:
    # 4,000 IA_NA in one 64 KB Solicit cost ~1,000 normal exchanges of CPU (and a 176 KB reply): at the per-DUID
    # rate a single client saturated the server. Phones send one IA; more than MAX_IAS is refused by the codec.
    srv = h6.server('range = "fd77::100-fd77::1ff"\nrate_limit = 1000.0\nrate_burst = 1000')
    packed = h6.msg(c6.SOLICIT, h6.YEALINK, *(h6.ia(i) for i in range(4000)))
    with pytest.raises(c6.Dhcp6Error):
        srv.handle(packed, h6.CLIENT, at(h6.NOW))
    reply, _ = h6.handle(srv, h6.msg(c6.SOLICIT, h6.YEALINK, *(h6.ia(i) for i in range(c6.MAX_IAS))))
    assert len(h6.ias(reply)) == c6.MAX_IAS
