"""The lease store: durable rows, and group commit (many leases, one transaction)."""

from __future__ import annotations

import asyncio
import itertools
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from bootstrapd.leases.store import SCHEMA, Lease, Lease4, Lease6, LeaseStore, connect, read_leases4
from bootstrapd.leases.waiter import Callbacks


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

        store.commit_then([Lease4(IPv4Address("10.77.0.9"), b"\x00\x15\x65\x00\x00\x01", b"\x01id", 5.0)],
                          Callbacks(send, lambda exc: done.set_exception(exc)), None)
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
        class Sender:  # one waiter for every reply, as a service is
            def committed(self, reply: int) -> None:
                sent.append(reply)

            def commit_failed(self, reply: int, error: BaseException) -> None:
                raise AssertionError(error)

            def commit_lost(self, reply: int, winners: list[Lease]) -> None:
                raise AssertionError(winners)

        sender = Sender()
        store_module._settle(loop, [sender] * 100, list(range(100)), None)
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


def test_phone_records_go_through_the_writer_and_are_read_back_by_mac(tmp_path: Path) -> None:
    from bootstrapd.leases.phones import PhoneRecord, read_phone, read_phones

    path = tmp_path / "leases.sqlite3"
    outcome: list[BaseException | None] = []

    async def scenario() -> None:
        store = LeaseStore(path)
        store.start(asyncio.get_running_loop())
        done = asyncio.get_running_loop().create_future()
        store.record_phones([PhoneRecord("001565f4f9e1", "10.77.0.20", 100.0, "pnp", "yealink", "W52P", "25.81",
                                         "tftp://10.77.0.1/")])
        # A lease committed right behind it shares the writer (and, here, most likely the transaction).
        await store.commit([Lease4(IPv4Address("10.77.0.9"), bytes(6), None, 5.0)])

        def recorded(error: BaseException | None) -> None:
            outcome.append(error)
            done.set_result(None)

        store.record_phones([PhoneRecord("001565f4f9e1", "10.77.0.21", 200.0, "pnp", model="T46U")], recorded)
        await done
        store.close()

    asyncio.run(scenario())
    assert outcome == [None]
    conn = connect(path, readonly=True)
    record = read_phone(conn, "001565f4f9e1")
    assert record == PhoneRecord("001565f4f9e1", "10.77.0.21", 200.0, "pnp", None, "T46U", None, None)
    assert read_phone(conn, "001565000000") is None
    assert [r.mac for r in read_phones(conn)] == ["001565f4f9e1"]
    assert len(read_leases4(conn)) == 1


def test_the_newest_phone_record_wins_and_new_macs_are_capped(tmp_path: Path) -> None:
    from bootstrapd.leases import phones
    from bootstrapd.leases.phones import PhoneRecord, read_phone

    store = LeaseStore(tmp_path / "leases.sqlite3")
    store.write_now([PhoneRecord("001565000001", "10.77.0.30", 500.0, "pnp")])
    store.write_now([PhoneRecord("001565000001", "10.77.0.31", 400.0, "pnp")])  # older: an import, say
    assert read_phone(store.conn, "001565000001") == PhoneRecord("001565000001", "10.77.0.30", 500.0, "pnp")
    cap = phones.PHONES_MAX
    phones.PHONES_MAX = 3
    try:
        store.write_now([PhoneRecord(f"00156500000{n}", "10.77.0.40", 600.0, "pnp") for n in range(2, 7)])
        assert phones.count(store.conn) == 3
        assert read_phone(store.conn, "001565000004") is None  # a new MAC over the cap: dropped
        store.write_now([PhoneRecord("001565000001", "10.77.0.32", 700.0, "pnp")])  # a known one still updates
        assert read_phone(store.conn, "001565000001").address == "10.77.0.32"  # type: ignore[union-attr]
    finally:
        phones.PHONES_MAX = cap
    store.close()


def test_phone_record_text_is_stored_printable_and_bounded(tmp_path: Path) -> None:
    # Values a phone sent may hold undecodable bytes (surrogate-escaped) or control characters: as they were, the
    # row could not be encoded and the whole batch, leases included, would fail.
    from bootstrapd.leases.phones import PhoneRecord, read_phone

    store = LeaseStore(tmp_path / "leases.sqlite3")
    hostile = PhoneRecord("001565000009", "10.77.0.50", 1.0, "pnp", vendor="Y\udcffe\r\nalink\x1b[2J",
                          model="M" * 5000, version="1.0\u2028x")
    lease = Lease4(IPv4Address("10.77.0.50"), bytes(6), None, 5.0)
    store.write_now([hostile, lease])
    record = read_phone(store.conn, "001565000009")
    assert record is not None
    assert record.vendor == "Y?e??alink?[2J" and record.model == "M" * 256 and record.version == "1.0?x"
    assert len(list(store.leases4())) == 1
    store.close()


def test_reading_phone_records_from_a_store_without_the_table(tmp_path: Path) -> None:
    import sqlite3

    from bootstrapd.leases.phones import read_phone, read_phones

    path = tmp_path / "old.sqlite3"
    sqlite3.connect(path).execute("CREATE TABLE lease4 (address TEXT)").connection.close()
    conn = connect(path, readonly=True)
    assert read_phone(conn, "001565000001") is None and list(read_phones(conn)) == []


def test_batches_of_any_size_store_the_rows_as_they_were_row_by_row(tmp_path: Path) -> None:
    """The writer inserts a small one-table batch as one statement of its size, others in multi-row chunks of powers
    of two, with the blobs as bytearray and NULL through an adapter: every size (across the boundaries) must store
    exactly what one INSERT per row stored: the address
    as ``str(address)``, BLOB and NULL columns, and the last row of an address in a batch winning."""
    import sqlite3

    store = LeaseStore(tmp_path / "leases.sqlite3")
    reference = sqlite3.connect(":memory:")
    reference.executescript(SCHEMA)
    columns4 = "address, typeof(mac), mac, typeof(client_id), client_id, expires, state, typeof(hostname), " \
        "hostname, vendor_class"
    columns6 = "address, typeof(duid), duid, iaid, expires, state, typeof(mac), mac, hostname"
    first = 0
    # One table only (a batch of up to _SINGLE rows is one statement of its own size) and both (chunks, BEGIN/COMMIT).
    for size, kinds in itertools.product((1, 2, 3, 7, 63, 64, 65, 255, 256, 257, 700), ("4", "6", "46")):
        batch: list[Lease4 | Lease6] = []
        for n in range(first, first + size):
            # Addresses with every octet width (0.0.0.n, 1.2.3.4, 10.200.x.y, 255...), a client id every other one.
            address = IPv4Address((n * 2654435761) % (1 << 32))
            if "4" in kinds:
                batch.append(Lease4(address, n.to_bytes(6, "big"), b"\x01" + bytes(6) if n % 2 else None, n + 0.5,
                                    "active", f"host{n}" if n % 3 == 0 else None, "yealink" if n % 5 == 0 else None))
            if "6" in kinds:
                batch.append(Lease6(IPv6Address(n * 0x10000000000000000000001 % (1 << 128)), b"\x00\x03" + bytes(6),
                                    n, n + 0.25, "active", n.to_bytes(6, "big") if n % 2 else None))
        if kinds == "4":  # the last row of an address in a batch wins
            batch.append(Lease4(batch[0].address, bytes(6), None, 1.0, "released"))  # type: ignore[arg-type]
        store.write_now(batch)
        for lease in batch:  # the reference: one INSERT per row, the values as the store used to bind them
            if isinstance(lease, Lease4):
                reference.execute("INSERT OR REPLACE INTO lease4 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (str(lease.address), lease.mac, lease.client_id, lease.expires, lease.state,
                                   lease.hostname, lease.vendor_class, 0.0))
            else:
                reference.execute("INSERT OR REPLACE INTO lease6 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (str(lease.address), lease.duid, lease.iaid, lease.expires, lease.state,
                                   lease.mac, lease.hostname, 0.0))
        first += size
    for table, columns in (("lease4", columns4), ("lease6", columns6)):
        query = f"SELECT {columns} FROM {table} ORDER BY address"
        assert store.conn.execute(query).fetchall() == reference.execute(query).fetchall()
    assert store.conn.execute("SELECT state FROM lease4 WHERE address = '0.0.0.0'").fetchall() == [("released",)]
    assert store.conn.execute("SELECT count(*) FROM lease4 WHERE state = 'released'").fetchone() == (11,)
    store.close()


def test_a_full_database_fails_a_small_batch_whole_and_recovers(tmp_path: Path) -> None:
    """A batch of a few leases is one statement in autocommit mode (store.py, _SINGLE): on SQLITE_FULL nothing of it
    is stored, SQLite's own error is raised, no transaction is left open, and the next write succeeds."""
    import sqlite3

    import pytest

    from bootstrapd.leases.store import _SINGLE, is_disk_full

    store = LeaseStore(tmp_path / "leases.sqlite3")
    store.write_now([Lease4(IPv4Address("10.77.0.1"), bytes(6), None, 1.0)])
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")
    small = [Lease4(IPv4Address(0x0A4D0100 + i), bytes(6), b"x" * 200, 1.0) for i in range(_SINGLE)]
    with pytest.raises(sqlite3.OperationalError) as info:
        store.write_now(small)
    assert is_disk_full(info.value) and not store.conn.in_transaction
    assert len(list(store.leases4())) == 1  # all or nothing
    store.conn.execute("PRAGMA max_page_count = 1000000")
    store.write_now(small)
    assert len(list(store.leases4())) == 1 + _SINGLE
    store.close()


def test_lease6_address_text_is_str_of_the_address(tmp_path: Path) -> None:
    """The lease6 row's address is the text str(IPv6Address) gives, whichever way _write formats it (inet_ntop
    writes the IPv4-looking ones, first 80 bits zero, with a dotted tail)."""
    texts = ["fd77::100", "fd77:0:0:1::", "2001:db8::1:0:0:1", "fe80::1:0:0:0", "1::", "::1:0:0:0", "::ffff:102:304",
             "::102:304", "::1", "::", "::ffff:ffff:0:0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
    leases = [Lease6(IPv6Address(text), b"\x00\x03\x00\x01" + bytes(6), i, 9.0) for i, text in enumerate(texts)]
    store = LeaseStore(tmp_path / "leases.sqlite3")
    store.write_now(leases)
    rows = dict(store.conn.execute("SELECT iaid, address FROM lease6").fetchall())
    store.close()
    assert [rows[i] for i in range(len(texts))] == [str(x.address) for x in leases] == texts
