"""Wall-clock steps (NTP, a resumed VM) must not lock clients out: rate limits and offer holds run on the monotonic
clock, only lease expiry on the wall clock (issue #8 item 9)."""

from __future__ import annotations

from ipaddress import IPv4Address

from bootstrapd.clock import Now
from bootstrapd.dhcp4 import codec
from bootstrapd.dhcp6 import codec as codec6
from bootstrapd.leases.ratelimit import RateLimiter
from tests.unit import test_dhcp6_server as v6
from tests.unit.dhcp4_helpers import SERVER, dora, mac, make_server, message

WALL, MONO = 1_700_000_000.0, 5_000.0
STEP = 3600.0  # the wall clock goes back an hour


def test_rate_limiter_is_unaffected_by_a_wall_clock_step_back() -> None:
    limiter = RateLimiter(rate=1.0, burst=2)
    assert limiter.allow(b"a", MONO) and limiter.allow(b"a", MONO)
    assert not limiter.allow(b"a", MONO)  # burst spent
    assert limiter.allow(b"a", MONO + 1.0)  # one second later (monotonic) there is a token again


def test_dhcp4_client_is_not_locked_out_after_the_wall_clock_steps_back() -> None:
    server = make_server(base=_base(rate="rate_limit = 1.0\nrate_burst = 2\n"))
    hw = mac(1)
    discover = message(codec.DISCOVER, hw)
    assert server.handle(discover, ("0.0.0.0", 68), Now(WALL, MONO)) is not None
    assert server.handle(discover, ("0.0.0.0", 68), Now(WALL, MONO + 0.1)) is not None
    # The wall clock is stepped back an hour; two seconds pass on the monotonic clock.
    reply = server.handle(discover, ("0.0.0.0", 68), Now(WALL - STEP, MONO + 2.0))
    assert reply is not None and reply.data is not None
    assert codec.decode(reply.data).msg_type() == codec.OFFER
    assert server.stats.get("rate_limited", 0) == 0


def test_dhcp4_offer_hold_ends_after_offer_time_on_the_monotonic_clock() -> None:
    server = make_server(base=_base(range_="10.77.0.100-10.77.0.100"))
    first, second = mac(1), mac(2)
    offer = server.handle(message(codec.DISCOVER, first), ("0.0.0.0", 68), Now(WALL, MONO))
    assert offer is not None and offer.data is not None
    assert codec.decode(offer.data).yiaddr == IPv4Address("10.77.0.100").packed
    # While the hold lasts (30 s) nobody else gets the only address, whatever the wall clock does ...
    held = server.handle(message(codec.DISCOVER, second), ("0.0.0.0", 68), Now(WALL + STEP, MONO + 10.0))
    assert held is not None and held.data is None and held.event["type"] == "exhausted"
    # ... and once it is over (31 s later, monotonic) the address is free although the wall clock went back.
    reply = server.handle(message(codec.DISCOVER, second), ("0.0.0.0", 68), Now(WALL - STEP, MONO + 31.0))
    assert reply is not None and reply.data is not None
    assert codec.decode(reply.data).yiaddr == IPv4Address("10.77.0.100").packed


def test_dhcp4_lease_expiry_stays_on_the_wall_clock() -> None:
    """A lease is a promise in wall-clock time (stored, listed): it lasts lease_time of it."""
    server = make_server(base=_base(range_="10.77.0.100-10.77.0.100"))
    ack = dora(server, mac(1), now=WALL)
    assert ack.yiaddr == IPv4Address("10.77.0.100").packed
    binding = server.lease_for(mac(1), None)
    assert binding is not None and binding.expires == WALL + 3600
    assert server.owner(IPv4Address("10.77.0.100"), WALL + 3599) == mac(1)
    request = message(codec.REQUEST, mac(2), options={codec.REQUESTED_IP: IPv4Address("10.77.0.100").packed,
                                                     codec.SERVER_ID: SERVER.packed})
    # Monotonic time running on does not end it either.
    reply = server.handle(request, ("0.0.0.0", 68), Now(WALL + 10, MONO + 10_000))
    assert reply is not None and reply.data is not None and codec.decode(reply.data).msg_type() == codec.NAK


def test_dhcp6_client_is_not_locked_out_and_advertise_hold_ends_on_the_monotonic_clock() -> None:
    srv = v6.server("rate_limit = 1.0\nrate_burst = 2\nrange = \"fd77::100-fd77::100\"\n")
    solicit = v6.msg(codec6.SOLICIT, v6.YEALINK, v6.ia(1))
    assert srv.handle(solicit, v6.CLIENT, Now(WALL, MONO)) is not None
    assert srv.handle(solicit, v6.CLIENT, Now(WALL, MONO + 0.1)) is not None
    out = srv.handle(solicit, v6.CLIENT, Now(WALL - STEP, MONO + 2.0))
    assert out is not None and out.addresses  # not rate limited after the step back
    other = v6.msg(codec6.SOLICIT, v6.OTHER, v6.ia(1))
    held = srv.handle(other, v6.CLIENT, Now(WALL - STEP, MONO + 10.0))
    assert held is not None and not held.addresses  # the only address is held for the first client
    freed = srv.handle(other, v6.CLIENT, Now(WALL - STEP, MONO + 40.0))
    assert freed is not None and freed.addresses  # 30 s of monotonic time later it is free


def _base(*, rate: str = "rate_limit = 1000.0\nrate_burst = 1000\n", range_: str = "10.77.0.100-10.77.0.103") -> str:
    return f"""
[server]
interface = "eth1"
[dhcp4]
range = "{range_}"
{rate}
[dhcp4.options]
66 = "tftp://10.77.0.1/"
"""
