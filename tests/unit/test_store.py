"""The lease store: durable rows, and group commit (many leases, one transaction)."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from bootstrapd.leases.store import Lease4, Lease6, LeaseStore, connect, read_leases4


def test_group_commit_batches_leases_ready_together(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        store = LeaseStore(tmp_path / "leases.sqlite3", window=0.05)
        store.start(asyncio.get_running_loop())
        futures = [store.commit([Lease4(IPv4Address(0x0A4D0000 + i), bytes(6), None, 100.0)]) for i in range(500)]
        await asyncio.gather(*futures)
        commits, committed = store.commits, store.committed
        store.close()
        return commits, committed

    commits, committed = asyncio.run(scenario())
    assert committed == 500
    assert commits < 50  # 500 leases queued at once share a handful of fsyncs, not 500
    rows = read_leases4(connect(tmp_path / "leases.sqlite3", readonly=True))
    assert len(rows) == 500


def test_commit_then_sends_only_after_the_row_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "leases.sqlite3"
    seen: list[int] = []

    async def scenario() -> None:
        store = LeaseStore(path)
        store.start(asyncio.get_running_loop())
        done = asyncio.get_running_loop().create_future()

        def send() -> None:
            # Another connection sees the row by the time the reply would leave.
            seen.append(len(read_leases4(connect(path, readonly=True))))
            done.set_result(None)

        store.commit_then([Lease4(IPv4Address("10.77.0.9"), b"\x00\x15\x65\x00\x00\x01", b"\x01id", 5.0)], send,
                          lambda exc: done.set_exception(exc))
        await done
        store.close()

    asyncio.run(scenario())
    assert seen == [1]


def test_rows_round_trip_and_replace(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "leases.sqlite3")
    lease = Lease4(IPv4Address("10.77.0.9"), b"\x00\x15\x65\x00\x00\x01", None, 5.0, "active", "desk", "yealink")
    store.write_now([lease, Lease6(IPv6Address("fd77::100"), b"\x00\x03\x00\x01" + bytes(6), 7, 9.0)])
    lease.state = "released"
    store.write_now([lease])
    assert list(store.leases4()) == [lease]
    assert [x.iaid for x in store.leases6()] == [7]
    store.set_meta("duid", b"\x01\x02")
    assert store.get_meta("duid") == b"\x01\x02"
    store.close()


def test_a_big_batch_of_replies_leaves_in_chunks_per_loop_iteration() -> None:
    """100 replies released by one commit are not sent back to back (they would overflow a relay's buffer)."""
    from bootstrapd.leases import store as store_module

    sent: list[int] = []
    iterations: list[int] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        def sender(n: int) -> store_module.Done:
            return lambda error: sent.append(n)

        callbacks = [sender(n) for n in range(100)]
        store_module._settle(loop, callbacks, None)
        iterations.append(len(sent))
        while len(sent) < 100:
            await asyncio.sleep(0)
            iterations.append(len(sent))

    asyncio.run(scenario())
    assert sent == list(range(100))  # all of them, in order
    assert iterations[0] == store_module.SEND_CHUNK
    assert len(iterations) >= 100 // store_module.SEND_CHUNK


def test_a_full_database_reports_sqlites_error_and_recovers(tmp_path: Path) -> None:
    """SQLITE_FULL (here from a page limit; tests/lab/test_store_disk_full.py fills a real file system) rolls the
    transaction back inside SQLite: the store must report that error, not the "cannot rollback" of its own ROLLBACK."""
    import sqlite3

    import pytest

    from bootstrapd.leases.store import is_disk_full

    store = LeaseStore(tmp_path / "leases.sqlite3")
    store.write_now([Lease4(IPv4Address("10.77.0.1"), bytes(6), None, 1.0)])
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = [Lease4(IPv4Address(0x0A4D0100 + i), bytes(6), b"x" * 200, 1.0) for i in range(500)]
    with pytest.raises(sqlite3.OperationalError) as info:
        store.write_now(big)
    assert "database or disk is full" in str(info.value) and is_disk_full(info.value)
    assert not store.conn.in_transaction
    store.conn.execute("PRAGMA max_page_count = 1000000")
    store.write_now(big[:3])
    assert len(list(store.leases4())) == 4
    store.close()
