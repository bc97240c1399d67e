"""Two appliances on one real PostgreSQL: the database decides who gets an address, each learns the other's leases,
an outage withholds replies and heals by itself, the schema is checked, the password is never shown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootstrapd.events import Events
from bootstrapd.leases import pgrows
from bootstrapd.leases.postgresql import PgStore, StoreError, StoreUnavailable
from bootstrapd.leases.settings import StoreSettings, redact
from bootstrapd.leases.store import Lease, Lease4, Lease6
from bootstrapd.leases.waiter import Callbacks, LeaseTaken
from tests.pgserver import PASSWORD, PASSWORD_USER, PostgresServer

A_MAC, B_MAC = b"\x00\x15\x65\x00\x00\x0a", b"\x00\x15\x65\x00\x00\x0b"
ADDRESS = IPv4Address("10.77.0.100")


def settings(dsn: str, **kw: object) -> StoreSettings:
    return StoreSettings(backend="postgresql", dsn=dsn, **kw)  # type: ignore[arg-type]


async def outcome(store: PgStore, leases: list[Lease]) -> tuple[str, list[Lease]]:
    """("sent" | "lost" | "failed", winners) of one commit_then."""
    future: asyncio.Future[tuple[str, list[Lease]]] = asyncio.get_running_loop().create_future()
    store.commit_then(leases, Callbacks(lambda: future.set_result(("sent", [])),
                                        lambda exc: future.set_result(("failed", [])),
                                        lambda winners: future.set_result(("lost", winners))), None)
    return await asyncio.wait_for(future, 30)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


def test_the_database_decides_who_gets_an_address(pg_dsn: str) -> None:
    now = time.time()

    async def scenario() -> None:
        a = await PgStore.open(settings(pg_dsn), "ap-a")
        b = await PgStore.open(settings(pg_dsn), "ap-b")
        try:
            mine = Lease4(ADDRESS, A_MAC, None, now + 3600)
            assert await outcome(a, [mine]) == ("sent", [])
            # Another client on the other appliance: loses, and learns who holds the address.
            state, winners = await outcome(b, [Lease4(ADDRESS, B_MAC, None, now + 3600)])
            assert state == "lost" and [(w.address, w.mac) for w in winners] == [(ADDRESS, A_MAC)]
            # The same client renewing through the other appliance (failover): allowed.
            assert (await outcome(b, [Lease4(ADDRESS, A_MAC, None, now + 7200)]))[0] == "sent"
            # A client identifier is the client (RFC 2131): same MAC, other identifier = another client.
            state, _ = await outcome(b, [Lease4(ADDRESS, A_MAC, b"\x01other", now + 3600)])
            assert state == "lost"
            # Released: anyone may take it.
            assert (await outcome(a, [Lease4(ADDRESS, A_MAC, None, now, "released")]))[0] == "sent"
            assert (await outcome(b, [Lease4(ADDRESS, B_MAC, None, now + 3600)]))[0] == "sent"
            # Expired (on the writer's clock): anyone may take it.
            assert (await outcome(b, [Lease4(ADDRESS, B_MAC, None, now - 1)]))[0] == "sent"
            assert (await outcome(a, [Lease4(ADDRESS, A_MAC, None, now + 3600)]))[0] == "sent"
            # The holder's DECLINE quarantines; its own new lease on it must wait like everyone else's.
            assert (await outcome(a, [Lease4(ADDRESS, A_MAC, None, now + 600, "declined")]))[0] == "sent"
            assert (await outcome(a, [Lease4(ADDRESS, A_MAC, None, now + 3600)]))[0] == "lost"
            assert (await outcome(b, [Lease4(ADDRESS, B_MAC, None, now + 3600, "declined")]))[0] == "lost"
            # commit() (no lost callback) raises LeaseTaken with the winner.
            with pytest.raises(LeaseTaken) as caught:
                await b.commit([Lease4(ADDRESS, B_MAC, None, now + 3600)])
            assert caught.value.winners[0].state == "declined"
            # DHCPv6: DUID + IAID is the client.
            duid = b"\x00\x03\x00\x01" + A_MAC
            six = IPv6Address("fd77::100")
            assert (await outcome(a, [Lease6(six, duid, 1, now + 3600)]))[0] == "sent"
            assert (await outcome(b, [Lease6(six, duid, 2, now + 3600)]))[0] == "lost"
            assert (await outcome(b, [Lease6(six, duid, 1, now + 7200)]))[0] == "sent"
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(scenario())


def test_concurrent_commits_never_give_one_address_to_two_clients(pg_dsn: str) -> None:
    """Both appliances commit 200 clients each onto the same 100 addresses at once: each address goes to exactly
    one client, and exactly the winners are told to send."""
    now = time.time()

    async def scenario() -> tuple[set[tuple[IPv4Address, bytes]], list[tuple[IPv4Address, bytes]]]:
        a = await PgStore.open(settings(pg_dsn, pool_size=3), "ap-a")
        b = await PgStore.open(settings(pg_dsn, pool_size=3), "ap-b")
        sent: set[tuple[IPv4Address, bytes]] = set()
        try:
            jobs = []
            for n in range(200):
                address = IPv4Address(int(ADDRESS) + n % 100)
                for store, tag in ((a, 1), (b, 2)):
                    client = bytes([tag]) + n.to_bytes(5, "big")
                    jobs.append((address, client, outcome(store, [Lease4(address, client, None, now + 3600)])))
            results = await asyncio.gather(*(job for _, _, job in jobs))
            for (address, client, _), (state, _) in zip(jobs, results, strict=True):
                if state == "sent":
                    sent.add((address, client))
        finally:
            await a.shutdown()
            await b.shutdown()
        check = await PgStore.open(settings(pg_dsn), "ap-check")
        rows = [(x.address, x.mac) for x in check.leases4()]
        await check.shutdown()
        return sent, rows

    sent, rows = asyncio.run(scenario())
    assert len(rows) == 100 and len({address for address, _ in rows}) == 100
    assert sent == set(rows)  # every client told "sent" holds its row; nobody else was told so


def test_each_appliance_learns_the_others_leases(pg_dsn: str) -> None:
    now = time.time()

    async def scenario() -> None:
        a = await PgStore.open(settings(pg_dsn), "ap-a")
        b = await PgStore.open(settings(pg_dsn), "ap-b")
        heard_a: list[Lease] = []
        heard_b: list[Lease] = []
        a.watch(heard_a.extend)
        b.watch(heard_b.extend)
        try:
            leases: list[Lease] = [Lease4(IPv4Address(int(ADDRESS) + i), i.to_bytes(6, "big"), None, now + 60,
                                          "active", "h\u00e9", "yealink") for i in range(300)]
            leases.append(Lease6(IPv6Address("fd77::5"), b"\x00\x01", 9, now + 60, "active", None, None))
            await a.commit(leases)  # several notifications: one payload holds ~60 leases
            await until(lambda: len(heard_b) == len(leases))
            # Each writer connection notifies its own share, so the order across addresses may differ.
            assert sorted(heard_b, key=repr) == sorted(leases, key=repr)
            assert heard_a == []  # its own commits are not news to an appliance
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(scenario())


def test_an_outage_withholds_replies_and_heals_by_itself() -> None:
    """PostgreSQL stopped: every commit fails (no reply leaves) and the store says so; started again: the store
    reconnects by itself, serves again, catches up with what the other appliance wrote, and lost nothing it ACKed."""
    server = PostgresServer()  # its own: this test stops and starts it
    try:
        name = server.create_database()
        dsn = server.dsn(name)
        from tests.conftest import init_schema

        init_schema(dsn)
        now = time.time()
        events = Events()
        kinds: list[str] = []
        events.subscribe(lambda kind, fields: kinds.append(kind))

        async def scenario() -> None:
            a = await PgStore.open(settings(dsn, command_timeout=2.0), "ap-a", events)
            heard: list[Lease] = []
            a.watch(heard.extend)
            acked = [Lease4(IPv4Address(int(ADDRESS) + i), i.to_bytes(6, "big"), None, now + 600) for i in range(50)]
            for lease in acked:
                assert (await outcome(a, [lease]))[0] == "sent"
            await asyncio.get_running_loop().run_in_executor(None, server.stop, "immediate")
            await until(lambda: not a.connected)
            state, _ = await outcome(a, [Lease4(IPv4Address("10.77.0.200"), A_MAC, None, now + 600)])
            assert state == "failed"
            with pytest.raises(StoreUnavailable):
                await a.commit([Lease4(IPv4Address("10.77.0.201"), A_MAC, None, now + 600)])
            await asyncio.get_running_loop().run_in_executor(None, server.start)
            # Another appliance writes while A's listener may not be back yet: A catches up on reconnect.
            b = await PgStore.open(settings(dsn), "ap-b")
            await b.commit([Lease4(IPv4Address("10.77.0.250"), B_MAC, None, now + 600)])
            await until(lambda: a.connected, 60)
            assert (await outcome(a, [Lease4(IPv4Address("10.77.0.202"), A_MAC, None, now + 600)]))[0] == "sent"
            await until(lambda: any(x.address == IPv4Address("10.77.0.250") for x in heard))
            await a.shutdown()
            check = list(b.leases4())  # b's snapshot was read after the restart
            await b.shutdown()
            stored = {x.address for x in check}
            assert {x.address for x in acked} <= stored  # nothing ACKed before the crash is lost
            assert IPv4Address("10.77.0.200") not in stored and IPv4Address("10.77.0.201") not in stored

        asyncio.run(scenario())
        assert "store.down" in kinds and "store.up" in kinds
        assert events.counters["store.disconnected"] >= 1 and events.counters["store.reconnected"] >= 1
    finally:
        server.close()


def test_the_schema_version_is_checked_at_start(postgres: PostgresServer) -> None:
    empty = postgres.create_database()
    with pytest.raises(StoreError, match=r"no bootstrapd schema.*db init"):
        asyncio.run(PgStore.open(settings(postgres.dsn(empty)), "ap"))
    from tests.conftest import init_schema

    init_schema(postgres.dsn(empty))
    postgres.psql("UPDATE bootstrapd_schema SET version = 99", empty)
    with pytest.raises(StoreError, match="version 99, newer than this bootstrapd"):
        asyncio.run(PgStore.open(settings(postgres.dsn(empty)), "ap"))
    postgres.drop_database(empty)


def test_password_from_a_file_never_shown(postgres: PostgresServer, tmp_path: Path) -> None:
    from bootstrapd.config import loads
    from bootstrapd.leases.backends import password

    database = postgres.create_database()  # owned by the password role, which creates the schema too
    dsn = postgres.dsn(database, PASSWORD_USER)
    from tests.conftest import init_schema

    init_schema(dsn, PASSWORD)
    secret = tmp_path / "db.password"
    secret.write_text(PASSWORD + "\n")
    text = (f'[server]\ninterface = "eth1"\n[dhcp4]\nenabled = false\n[store]\nbackend = "postgresql"\n'
            f'dsn = "{dsn}"\npassword_file = "{secret}"\n')
    store_settings = loads(text).store
    assert password(store_settings) == PASSWORD

    async def good() -> None:
        store = await PgStore.open(store_settings, "ap", password=password(store_settings))
        await store.commit([Lease4(ADDRESS, A_MAC, None, time.time() + 60)])
        await store.shutdown()

    asyncio.run(good())
    # A wrong password is a start-up error at once (no retrying for ever), and the message never holds it.
    wrong = dsn.replace(f"{PASSWORD_USER}@", f"{PASSWORD_USER}:hunter2-wrong@")
    with pytest.raises(StoreError) as caught:
        asyncio.run(PgStore.open(settings(wrong), "ap"))
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    assert "hunter2" not in repr(loads(text.replace(dsn, wrong)).store)
    postgres.drop_database(database)


def test_redact_masks_every_password_form() -> None:
    assert redact("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "pw" not in redact("postgresql://u@h/db?password=pw&sslmode=require")
    assert redact("postgresql://u@/db?host=/run/postgresql") == "postgresql://u@/db?host=/run/postgresql"


def test_rounds_keep_each_address_in_order() -> None:
    def at(n: int, state: str = "active") -> Lease4:
        return Lease4(IPv4Address(int(ADDRESS) + n), A_MAC, None, 1.0, state)

    batch: list[Lease] = [at(1), at(2), at(1, "released"), at(3), at(1, "declined")]
    rounds = pgrows.rounds(batch)
    assert [[(int(x.address) - int(ADDRESS), x.state) for x in r] for r in rounds] == [
        [(1, "active"), (2, "active"), (3, "active")], [(1, "released")], [(1, "declined")]]


@given(st.text(max_size=300))
def test_a_notification_decodes_or_raises_valueerror(text: str) -> None:
    try:
        pgrows.decode(text)
    except ValueError:
        pass


@given(st.lists(st.builds(Lease4, st.ip_addresses(v=4), st.binary(min_size=6, max_size=6),
                          st.none() | st.binary(max_size=40), st.floats(0, 4e9),
                          st.sampled_from(["active", "released"]),
                          st.none() | st.text(max_size=64), st.none() | st.text(max_size=64)), max_size=200))
def test_notifications_round_trip_within_the_payload_limit(leases: list[Lease4]) -> None:
    texts = pgrows.payloads("ap-a", leases)
    assert all(len(t.encode()) <= 8000 for t in texts)
    back = [lease for text in texts for lease in pgrows.decode(text)[1]]
    assert back == leases


def test_db_init_upgrade_status_commands(postgres: PostgresServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    database = postgres.create_database()
    config = tmp_path / "bootstrapd.toml"
    config.write_text(f'[server]\ninterface = "eth1"\n[dhcp4]\nenabled = false\n'
                      f'[store]\nbackend = "postgresql"\ndsn = "{postgres.dsn(database)}"\n')

    def db(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bootstrapd", "db", *args, "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)

    status = db("status")
    assert status.returncode == 1 and "no bootstrapd schema" in status.stdout
    first = db("init")
    assert first.returncode == 0 and "version 2 created" in first.stdout, first.stderr
    again = db("init")
    assert again.returncode == 1 and "already has the bootstrapd schema" in again.stderr
    assert db("upgrade").stdout.strip().endswith("already current")
    facts = json.loads(db("status", "--json").stdout)
    assert facts["version"] == facts["version_needed"] == 2 and facts["rows"]["lease4"] == 0
    assert facts["rows"]["journal_step"] == 0
    # A database of the first version (leases only): refused at start-up, naming the command; upgraded in place,
    # keeping its rows.
    old = postgres.create_database()
    dsn = postgres.dsn(old)

    async def version_1() -> None:
        import asyncpg

        from bootstrapd.leases import pgschema

        conn = await asyncpg.connect(dsn)
        try:
            assert await pgschema._migrate(conn, 0, 1) == 1
            await conn.execute("INSERT INTO lease4 VALUES ('10.77.0.9', '\\x001565000009', NULL, 4e9, 'active', "
                               "NULL, NULL, 'ap', 0)")
        finally:
            await conn.close()

    asyncio.run(version_1())
    with pytest.raises(StoreError, match=r"version 1, this bootstrapd needs 2: run `bootstrapd db upgrade"):
        asyncio.run(PgStore.open(settings(dsn), "ap"))
    config.write_text(f'[server]\ninterface = "eth1"\n[dhcp4]\nenabled = false\n'
                      f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n')
    upgraded = db("upgrade")
    assert upgraded.returncode == 0 and "upgraded from version 1 to 2" in upgraded.stdout, upgraded.stderr
    facts = json.loads(db("status", "--json").stdout)
    assert facts["version"] == 2 and facts["rows"]["lease4"] == 1 and facts["rows"]["journal_phone"] == 0
    postgres.drop_database(old)
    # Not PostgreSQL: usage error, 2.
    config.write_text('[server]\ninterface = "eth1"\n[dhcp4]\nenabled = false\n')
    assert db("init").returncode == 2
    postgres.drop_database(database)
