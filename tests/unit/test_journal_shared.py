"""The journal in the PostgreSQL database appliances share (issue #15), on a real server: each appliance writes its
own rows, readers see a phone's whole journey from every appliance by time and one summary of it; each keeps its own
bounds; an outage keeps the batches and writes them once the server is back."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bootstrapd.events import Events
from bootstrapd.journal.journal import Journal
from bootstrapd.journal.pgjournal import PgJournal
from bootstrapd.journal.settings import JournalSettings
from bootstrapd.journal.stage import DONE, STUCK, Phone, fold, merge
from bootstrapd.journal.steps import step_of
from bootstrapd.journal.store import Batch, JournalUnavailable, Limits
from bootstrapd.journal.views import phone_document, phones_document
from bootstrapd.leases.owners import LeaseOwners
from bootstrapd.leases.settings import StoreSettings
from tests.pgserver import PostgresServer

MAC = "00:15:65:aa:bb:cc"
OWN = "001565aabbcc"
LIMITS = Limits(steps_per_phone=200, max_steps=10_000, max_phones=100)


def settings(dsn: str) -> StoreSettings:
    return StoreSettings(backend="postgresql", dsn=dsn, connect_timeout=2.0, command_timeout=2.0)


def steps_of(start: float, *events: tuple[str, dict[str, Any]]) -> tuple[Phone, list[dict[str, Any]]]:
    """One appliance's view: its steps (times from ``start``) and its summary of them."""
    phone = Phone(MAC)
    out = []
    for i, (kind, fields) in enumerate(events):
        step = step_of(kind, fields, start + i)
        assert step is not None
        fold(phone, step)
        out.append(step | {"mac": MAC})
    return phone, out


ACK = ("dhcp4.ack", {"mac": MAC, "request": "REQUEST", "address": "10.77.0.100", "options": [1, 66]})


def tftp(name: str, outcome: str = "ok") -> tuple[str, dict[str, Any]]:
    return "tftp.transfer", {"file": name, "outcome": outcome, "bytes": 10}


def test_two_appliances_one_journey(pg_dsn: str) -> None:
    a, b = PgJournal(settings(pg_dsn), "ap-a"), PgJournal(settings(pg_dsn), "ap-b")
    try:
        # A gave the address and the boot file, then died; the phone's sip.cfg failed there. B renewed the lease
        # and served the rest.
        seen_a, steps_a = steps_of(1000.0, ACK, tftp("y000000000000.boot"), tftp("sip.cfg", "timeout"))
        seen_b, steps_b = steps_of(2000.0, ACK, tftp("sip.cfg"), tftp(f"{OWN}.cfg"))
        assert seen_a.stage == STUCK
        a.write([Batch.of([seen_a.as_dict()], steps_a)], LIMITS)
        b.write([Batch.of([seen_b.as_dict()], steps_b)], LIMITS)
        reader = PgJournal(settings(pg_dsn))
        try:
            document = phone_document(reader, MAC)
            assert document is not None
            assert [(s["appliance"], s.get("file")) for s in document["steps"]] == [
                ("ap-a", None), ("ap-a", "y000000000000.boot"), ("ap-a", "sip.cfg"),
                ("ap-b", None), ("ap-b", "sip.cfg"), ("ap-b", f"{OWN}.cfg")]
            phone = document["phone"]
            assert phone["stage"] == DONE and phone["error"] is None and phone["appliances"] == ["ap-a", "ap-b"]
            assert phone["steps"] == 6 and phone["first_seen"] == 1000.0 and phone["address"] == "10.77.0.100"
            listed = phones_document(reader)
            assert [p["stage"] for p in listed["phones"]] == [DONE] and listed["summary"][DONE] == 1
            # Each appliance carries on from its own documents after a restart, not the combined one.
            assert [r.doc["stage"] for r in a.load()] == [STUCK] and [r.doc["stage"] for r in b.load()] == [DONE]
            # Each keeps its own share within the bounds: B pruning its steps leaves A's alone.
            small = Limits(steps_per_phone=10, max_steps=10_000, max_phones=100)
            for n in range(5):
                b.write([Batch.of([], [{"mac": MAC, "time": 3000.0 + n + i / 100, "proto": "tftp", "kind": "get"}
                                       for i in range(10)])], small)
            by = [s.appliance for s in reader.steps(MAC)]
            assert by.count("ap-a") == 3 and by.count("ap-b") <= 11
        finally:
            reader.close()
    finally:
        a.close()
        b.close()


def test_merge_keeps_what_any_appliance_saw() -> None:
    done_a, _ = steps_of(1000.0, ACK, tftp("y000000000000.boot"), tftp("sip.cfg"), tftp(f"{OWN}.cfg"))
    renewal_b, _ = steps_of(5000.0, ACK)  # later, only a renewal on the other box
    assert merge([renewal_b, done_a]).stage == DONE
    nak_a, _ = steps_of(1000.0, ("dhcp4.nak", {"mac": MAC, "request": "REQUEST", "reason": "wrong network"}))
    ok_b, _ = steps_of(2000.0, ACK)
    assert merge([nak_a, ok_b]).error is None and merge([nak_a]).error == "DHCP NAK: wrong network"
    missing_b, _ = steps_of(2000.0, tftp("sip.cfg", "not_found"))
    merged = merge([ok_b, missing_b])
    assert merged.stage == STUCK and merged.error == "asked for sip.cfg: not found"


def test_an_outage_keeps_the_batches_and_writes_them_when_the_server_is_back() -> None:
    from tests.conftest import init_schema

    server = PostgresServer()  # its own: this test stops and starts it
    try:
        dsn = server.dsn(server.create_database())
        init_schema(dsn)

        async def scenario() -> Journal:
            loop = asyncio.get_running_loop()
            events = Events()
            journal = Journal(JournalSettings(flush_interval=0.05), PgJournal(settings(dsn), "ap-a"), events,
                              LeaseOwners())
            await loop.run_in_executor(None, journal.load)
            journal.start(loop)
            events.emit(ACK[0], **ACK[1])
            assert await journal.flush()
            await loop.run_in_executor(None, server.stop, "immediate")
            for name in ("y000000000000.boot", f"{OWN}.cfg"):
                events.emit("dhcp4.ack", **ACK[1])  # steps while the database is down
                events.emit("tftp.transfer", mac=MAC, file=name, outcome="ok", bytes=1)
            await journal.flush()
            deadline = time.monotonic() + 30
            while journal.unavailable is None and time.monotonic() < deadline:
                await journal.flush()
            assert journal.unavailable is not None and events.counters["journal.store_unavailable"] >= 1
            await loop.run_in_executor(None, server.start)
            deadline = time.monotonic() + 60
            while journal.unavailable is not None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert journal.unavailable is None
            assert events.counters["journal.dropped"] == 0
            journal.finish()
            await loop.run_in_executor(None, journal.join)
            return journal

        asyncio.run(scenario())
        reader = PgJournal(settings(dsn))
        try:
            assert [s.doc["kind"] for s in reader.steps(MAC)] == ["ack", "ack", "get", "ack", "get"]
            row = reader.phone(MAC)
            assert row is not None and row.stage == DONE
        finally:
            reader.close()
        # Unreachable for a reader: one error type, with the database named and no password.
        server.stop("immediate")
        reader = PgJournal(settings(dsn))
        try:
            try:
                reader.phones()
            except JournalUnavailable as exc:
                assert "PostgreSQL at" in str(exc)
            else:
                raise AssertionError("read a stopped server")
        finally:
            reader.close()
    finally:
        server.close()
