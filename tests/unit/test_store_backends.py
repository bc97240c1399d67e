"""The store interface, run against both backends (SQLite in a temporary folder, a real PostgreSQL), so the two
cannot drift: group commit, a reply released only once its lease is durable, rows and phone records read back."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from bootstrapd.config import Settings, loads
from bootstrapd.leases import phones as phones_module
from bootstrapd.leases.backends import Store, read_store
from bootstrapd.leases.phones import PhoneRecord
from bootstrapd.leases.settings import StoreSettings
from bootstrapd.leases.store import Lease4, Lease6, LeaseStore
from bootstrapd.leases.waiter import Callbacks
from tests.pgserver import PostgresServer

MAC = b"\x00\x15\x65\x00\x00\x01"


@dataclass
class Backend:
    kind: str
    open: Callable[[], Awaitable[Store]]
    count: Callable[[str], int]  # rows of a table, read by another client (sqlite3 / psql) right now
    settings: Settings  # a configuration naming this store (for the tools' reader)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "leases.sqlite3"

        async def open_sqlite() -> Store:
            store = LeaseStore(path, window=0.05)
            store.start(asyncio.get_running_loop())
            return store

        def count_sqlite(table: str) -> int:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            finally:
                conn.close()

        yield Backend("sqlite", open_sqlite, count_sqlite, _settings(tmp_path, ""))
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    dsn: str = request.getfixturevalue("pg_dsn")
    database = dsn.split("/")[3].split("?")[0]

    async def open_pg() -> Store:
        from bootstrapd.leases.postgresql import PgStore

        return await PgStore.open(StoreSettings(backend="postgresql", dsn=dsn), "ap1")

    def count_pg(table: str) -> int:
        return int(postgres.psql(f"SELECT count(*) FROM {table}", database).strip())

    yield Backend("postgresql", open_pg, count_pg,
                  _settings(tmp_path, f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\n'))


def _settings(state: Path, store: str) -> Settings:
    return loads(f'[server]\ninterface = "eth1"\nstate_dir = "{state}"\n[dhcp4]\nenabled = false\n{store}')


def lease(n: int, expires: float = 4e9, mac: bytes = MAC, state: str = "active") -> Lease4:
    return Lease4(IPv4Address(0x0A4D0000 + n), mac, None, expires, state)


def test_group_commit_batches_leases_ready_together(backend: Backend) -> None:
    async def scenario() -> tuple[int, int]:
        store = await backend.open()
        futures = [store.commit([lease(i, mac=i.to_bytes(6, "big"))]) for i in range(500)]
        await asyncio.gather(*futures)
        commits, committed = store.commits, store.committed  # type: ignore[attr-defined]
        await store.shutdown()
        return commits, committed

    commits, committed = asyncio.run(scenario())
    assert committed == 500
    assert commits < 50  # 500 leases queued at once share a handful of commits, not 500
    assert backend.count("lease4") == 500


def test_commit_then_sends_only_after_the_row_is_durable(backend: Backend) -> None:
    seen: list[int] = []

    async def scenario() -> None:
        store = await backend.open()
        done = asyncio.get_running_loop().create_future()

        def send() -> None:
            # Another client (another process for PostgreSQL) sees the row by the time the reply would leave.
            seen.append(backend.count("lease4"))
            done.set_result(None)

        store.commit_then([Lease4(IPv4Address("10.77.0.9"), MAC, b"\x01id", 5e9)],
                          Callbacks(send, lambda exc: done.set_exception(exc)), None)
        await done
        await store.shutdown()

    asyncio.run(scenario())
    assert seen == [1]


def test_rows_round_trip_replace_and_meta(backend: Backend) -> None:
    first = Lease4(IPv4Address("10.77.0.9"), MAC, None, 5e9, "active", "desk", "yealink")
    six = Lease6(IPv6Address("fd77::100"), b"\x00\x03\x00\x01" + bytes(6), 7, 9e9, "active", MAC, "desk6")

    async def write() -> None:
        store = await backend.open()
        await store.commit([first, six])
        released = Lease4(first.address, MAC, None, 5e9, "released", "desk", "yealink")
        await store.commit([released])
        store.set_meta("duid", b"\x01\x02")
        await store.shutdown()

    async def read() -> tuple[list[Lease4], list[Lease6], bytes | None]:
        store = await backend.open()
        result = list(store.leases4()), store.leases6(), store.get_meta("duid")
        await store.shutdown()
        return result

    asyncio.run(write())
    leases4, leases6, meta = asyncio.run(read())
    assert leases4 == [Lease4(first.address, MAC, None, 5e9, "released", "desk", "yealink")]
    assert leases6 == [six]
    assert meta == b"\x01\x02"


def test_one_batch_may_update_an_address_twice_in_order(backend: Backend) -> None:
    """An ACK and the RELEASE of the same address in one batch: the last one queued is what is stored."""

    async def scenario() -> list[Lease4]:
        store = await backend.open()
        a = store.commit([lease(1)])
        b = store.commit([lease(1, state="released")])
        c = store.commit([lease(2)])
        await asyncio.gather(a, b, c)
        await store.shutdown()
        store = await backend.open()
        rows = sorted(store.leases4(), key=lambda x: int(x.address))
        await store.shutdown()
        return rows

    rows = asyncio.run(scenario())
    assert [(r.address, r.state) for r in rows] == [(lease(1).address, "released"), (lease(2).address, "active")]


def test_phone_records_newest_wins_and_the_table_is_capped(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(phones_module, "PHONES_MAX", 3)
    from bootstrapd.leases import postgresql

    monkeypatch.setattr(postgresql, "PHONES_MAX", 3)

    def record(mac: str, seen: float, address: str = "10.77.0.5", model: str = "T46U") -> PhoneRecord:
        return PhoneRecord(mac, address, seen, "pnp", "Yealink", model, "66.86\n0.1", None)

    async def scenario() -> None:
        store = await backend.open()
        outcomes: list[BaseException | None] = []
        done = asyncio.Event()

        def told(error: BaseException | None) -> None:
            outcomes.append(error)
            if len(outcomes) == 3:
                done.set()

        store.record_phones([record("001565000001", 100.0)], told)
        store.record_phones([record("001565000001", 50.0, "10.77.0.99")], told)  # older: must not win
        store.record_phones([record(f"0015650000{i:02x}", 10.0) for i in range(2, 8)], told)
        await asyncio.wait_for(done.wait(), 30)
        await store.shutdown()
        assert outcomes == [None, None, None]

    asyncio.run(scenario())
    assert backend.count("phone") == 3  # a flood of new MACs stops at the cap
    # Read back through the tools' reader (the one `resync` and `leases` use), for either backend.
    rows = read_store(backend.settings, phones=True).phones
    newest = next(r for r in rows if r.mac == "001565000001")
    assert newest.address == "10.77.0.5" and newest.seen == 100.0
    assert newest.version == "66.86?0.1"  # stored printable


