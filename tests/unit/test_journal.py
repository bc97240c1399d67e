"""The phone journal: events -> steps -> stage, the store's bounds, the writer's batches."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrapd.config import loads
from bootstrapd.events import Events
from bootstrapd.journal.journal import Journal
from bootstrapd.journal.settings import JournalSettings
from bootstrapd.journal.stage import BOOT, CONFIGS, DONE, NO_ADDRESS, STUCK, TOLD, Phone, fold
from bootstrapd.journal.steps import clean, normal_mac, step_of, text_of
from bootstrapd.journal.store import Batch, Limits, SqliteJournal, read_times
from bootstrapd.leases.owners import LeaseOwners
from tests.unit.conftest import JournalBackend

MAC = "00:15:65:aa:bb:cc"
OWN = "001565aabbcc"


def offer(**extra: Any) -> tuple[str, dict[str, Any]]:
    return "dhcp4.offer", {"type": "OFFER", "request": "DISCOVER", "mac": MAC, "address": "10.77.0.100",
                           "classes": ["yealink"], "vendor_class": "yealink SIP-T46U", "options": [1, 3, 66], **extra}


def ack(options: list[int] | None = None) -> tuple[str, dict[str, Any]]:
    return "dhcp4.ack", {"type": "ACK", "request": "REQUEST", "mac": MAC, "address": "10.77.0.100", "classes": [],
                         "vendor_class": "yealink SIP-T46U", "options": [1, 3, 66] if options is None else options}


def tftp(name: str, outcome: str = "ok", size: int = 100) -> tuple[str, dict[str, Any]]:
    return "tftp.transfer", {"client": "10.77.0.100", "file": name, "outcome": outcome, "bytes": size,
                             "duration": 0.01}


def journey(*events: tuple[str, dict[str, Any]], expected: list[str] | None = None) -> Phone:
    phone = Phone(MAC, expected=expected)
    for i, (kind, fields) in enumerate(events):
        step = step_of(kind, fields, 1000.0 + i)
        assert step is not None, kind
        fold(phone, step)
    return phone


def test_a_phone_goes_through_every_stage() -> None:
    phone = journey(offer())
    assert phone.stage == NO_ADDRESS
    fold(phone, step_of(*ack(options=[1, 3]), 1.0))  # type: ignore[arg-type]
    assert phone.stage == "address" and phone.address == "10.77.0.100"
    phone = journey(offer(), ack())
    assert phone.stage == TOLD
    phone = journey(offer(), ack(), tftp(f"{OWN}.boot", "not_found"), tftp("y000000000000.boot"))
    assert phone.stage == BOOT, phone.error  # the MAC boot file 404 is made good by the common one
    phone = journey(offer(), ack(), tftp("y000000000000.boot"), tftp("y000000000028.cfg"),
                    tftp(f"{OWN}-local.cfg", "not_found"))
    assert phone.stage == CONFIGS and phone.error is None  # no -local.cfg on a first boot is normal
    phone = journey(offer(), ack(), tftp("y000000000000.boot"), tftp("y000000000028.cfg"), tftp(f"{OWN}.cfg"))
    assert phone.stage == DONE
    assert phone.vendor_class == "yealink SIP-T46U"


def test_stuck_with_the_reason_and_made_good_by_a_retry() -> None:
    phone = journey(offer(), ack(), tftp("y000000000000.boot"), tftp("sip.cfg", "not_found"),
                    tftp("features.cfg"))
    assert phone.stage == STUCK and phone.error == "asked for sip.cfg: not found"
    fold(phone, step_of(*tftp("sip.cfg"), 2000.0))  # type: ignore[arg-type]
    assert phone.stage == CONFIGS and phone.error is None
    phone = journey(offer(), ack(), tftp("big.rom", "timeout"))
    assert phone.stage == STUCK and phone.error == "asked for big.rom: timed out (the phone stopped acknowledging)"


def test_nak_notify_and_401_reasons() -> None:
    nak = ("dhcp4.nak", {"type": "NAK", "mac": MAC, "reason": "requested address not on this subnet",
                         "classes": []})
    assert journey(nak).error == "DHCP NAK: requested address not on this subnet"
    assert journey(nak, ack()).stage == TOLD
    notify = ("pnp.answer", {"mac": OWN, "ip": "10.77.0.100", "vendor": "Yealink", "model": "SIP-T46U",
                             "version": "108.86.0.20", "url": "http://10.77.0.1/", "acknowledged": False})
    phone = journey(notify)
    assert phone.error == "NOTIFY never acknowledged" and phone.model == "SIP-T46U"
    assert phone.firmware == "108.86.0.20"
    assert journey(notify, tftp("y000000000000.boot")).stage == BOOT  # it found its way anyway
    http = ("http.request", {"client": "10.77.0.100", "mac": MAC, "model": "SIP-T46U", "method": "GET",
                             "path": "/T46U_1/y000000000000.boot", "status": 401, "outcome": "unauthorized",
                             "bytes": 0, "duration": 0.001, "vendor": "Yealink", "version": "108.86.0.20"})
    phone = journey(ack(), http)
    assert phone.error == "401 on /T46U_1/" and phone.firmware == "108.86.0.20" and phone.vendor == "Yealink"
    served = ("http.request", {**http[1], "status": 200, "outcome": "served", "bytes": 99})
    assert journey(ack(), http, served).stage == BOOT
    ftp = ("ftp.transfer", {"client": "10.77.0.100", "user": "anonymous", "command": "RETR", "file": "sip.cfg",
                            "outcome": "not_found", "bytes": 0, "duration": 0.0})
    assert journey(ack(), ftp).error == "asked for sip.cfg: not found"
    page = ("http.request", {"client": "10.77.0.100", "path": "/status/", "status": 200, "outcome": "route"})
    assert step_of(*page, 1.0) is None  # type: ignore[arg-type]


def test_a_withheld_reply_is_a_step_and_the_next_ack_makes_it_good() -> None:
    withheld = ("dhcp4.withheld", {"mac": MAC, "address": "10.77.0.100", "request": "REQUEST", "type": "ACK",
                                   "reason": "its lease was not committed: PostgreSQL is not reachable"})
    phone = journey(offer(), ack(), withheld)
    assert phone.stage == STUCK
    assert phone.error == "DHCP ACK withheld: its lease was not committed: PostgreSQL is not reachable"
    step = step_of(*withheld, 1.0)
    assert step is not None and text_of(step).startswith("REQUEST → ACK 10.77.0.100 not sent (its lease")
    assert journey(offer(), ack(), withheld, ack()).stage == TOLD
    six = ("dhcp6.withheld", {"mac": MAC, "duid": "0003", "type": "REPLY", "request": "REQUEST",
                              "address": "fd77::100", "reason": "its lease was not committed: gone"})
    phone = journey(six)
    assert phone.error == "DHCPv6 REPLY withheld: its lease was not committed: gone" and phone.address6 is None
    step = step_of(*six, 1.0)
    assert step is not None
    assert text_of(step) == "REQUEST → REPLY fd77::100 not sent (its lease was not committed: gone)"
    reply = ("dhcp6.reply", {"mac": MAC, "type": "REPLY", "request": "REQUEST", "address": "fd77::100",
                             "options": [59]})
    assert journey(six, reply).error is None


def test_done_follows_the_models_download_list() -> None:
    files = ["y000000000000.boot", "sip.cfg", f"{OWN}.cfg"]
    phone = journey(ack(), tftp(files[0]), tftp(f"{OWN}.cfg"), expected=files)
    assert phone.stage == CONFIGS  # sip.cfg not yet served
    fold(phone, step_of(*tftp("sip.cfg"), 3000.0))  # type: ignore[arg-type]
    assert phone.stage == DONE


def test_steps_read_like_the_exchange() -> None:
    step = step_of(*offer(), 5.0)  # type: ignore[arg-type]
    assert step is not None and text_of(step).startswith("DISCOVER → OFFER 10.77.0.100 (options 1 3 66)")
    v6 = step_of("dhcp6.reply", {"mac": MAC, "type": "reply", "request": "REQUEST", "address": IPv6Address("fd77::100"),
                                 "options": [1, 2, 3, 59]}, 5.0)
    assert v6 is not None and v6["told"] and v6["address6"] == "fd77::100"
    assert text_of(v6) == "REQUEST → REPLY fd77::100 (options 1 2 3 59)"
    failed = step_of(*tftp("sip.cfg", "not_found"), 1.0)  # type: ignore[arg-type]
    assert failed is not None and text_of(failed) == "TFTP get sip.cfg: not found"
    assert step_of("tftp.socket_error", {}, 1.0) is None


def test_hostile_text_is_cleaned() -> None:
    step = step_of(*offer(vendor_class="evil\x1b[2J\r\nX" + "a" * 500), 1.0)  # type: ignore[arg-type]
    assert step is not None
    assert "\x1b" not in text_of(step) and "\n" not in text_of(step) and len(step["vendor_class"]) <= 101


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["mac", "client", "file", "path", "outcome", "status", "bytes", "options",
                                        "address", "vendor", "model", "type", "request", "acknowledged", "reason"]),
                       st.one_of(st.none(), st.text(), st.integers(-10, 10**6), st.booleans(),
                                 st.lists(st.integers(0, 300)))),
       st.sampled_from(["dhcp4.offer", "dhcp4.ack", "dhcp4.nak", "dhcp6.reply", "pnp.answer", "tftp.transfer",
                        "http.request", "ftp.transfer", "ftp.login", "dhcp4.release"]))
def test_any_event_fields_make_a_step_or_nothing(fields: dict[str, Any], kind: str) -> None:
    try:
        step = step_of(kind, fields, 1.0)
    except (ValueError, TypeError):
        # bytes/duration that are not numbers come only from a broken service, not the wire: a loud failure is right
        return
    if step is not None:
        fold(Phone(MAC), step)
        assert "\n" not in text_of(step)


def test_normal_mac_and_clean() -> None:
    assert normal_mac("00-15-65-AA-BB-CC") == MAC == normal_mac(OWN) == normal_mac(bytes.fromhex(OWN))
    assert normal_mac("nonsense") is None and normal_mac(None) is None
    # The twelve-digit spelling of a User-Agent takes the short way; the others the long one, to the same MAC.
    assert normal_mac(" 001565AABBCC\n") == normal_mac("0015.65aa.bbcc") == normal_mac("001565aabbcc") == MAC
    assert normal_mac("00156500000g") is None and normal_mac("0015650000") is None
    assert clean("a\x00b") == "a?b"


def test_store_bounds_per_phone_in_total_and_phones(journal_backend: JournalBackend) -> None:
    store = journal_backend.writer()
    limits = Limits(steps_per_phone=10, max_steps=100, max_phones=5)
    for batch in range(30):
        steps = [{"mac": f"m{p}", "time": batch + p / 10, "n": batch} for p in range(3)]
        store.write([Batch.of([{"mac": f"m{p}", "stage": "told", "last_seen": batch} for p in range(3)], steps)],
                    limits)
    counts = store.step_counts()
    assert all(n <= 11 for n in counts.values()) and set(counts) == {"m0", "m1", "m2"}
    assert [s.doc["n"] for s in store.steps("m0")][-1] == 29  # the newest are kept
    for p in range(3, 20):
        store.write([Batch.of([{"mac": f"m{p}", "stage": "told", "last_seen": 100 + p}],
                              [{"mac": f"m{p}", "time": 100.0}])], limits)
    assert len(store.phones()) <= 6 and store.phone("m19") is not None and store.phone("m0") is None
    store.close()
    reader = journal_backend.reader()
    assert reader.phone("m19") is not None and len(reader.phones()) <= 6
    reader.close()


def test_store_bound_in_total_prunes_the_oldest_steps(journal_backend: JournalBackend) -> None:
    store = journal_backend.writer()
    limits = Limits(steps_per_phone=1000, max_steps=100, max_phones=1000)
    for p in range(15):
        store.write([Batch.of([{"mac": f"m{p}", "stage": "told", "last_seen": p}],
                              [{"mac": f"m{p}", "time": p + n / 100, "n": n} for n in range(10)])], limits)
    counts = store.step_counts()
    assert 100 <= sum(counts.values()) <= 110 and "m0" not in counts and counts["m14"] == 10
    store.close()


def test_the_journal_writes_batches_and_ties_requests_by_lease(journal_backend: JournalBackend) -> None:
    async def main() -> None:
        events = Events()
        owners = LeaseOwners()
        owners.register(lambda address, now: bytes.fromhex(OWN) if address == IPv4Address("10.77.0.100") else None)
        store = await asyncio.get_running_loop().run_in_executor(None, journal_backend.writer)
        journal = Journal(JournalSettings(flush_interval=0.05), store, events, owners)
        journal.load()
        journal.start(asyncio.get_running_loop())
        for kind, fields in (offer(), ack(), tftp("y000000000000.boot"), tftp(f"{OWN}.cfg")):
            events.emit(kind, **fields)
        events.emit("tftp.transfer", client="10.77.0.222", file="x.cfg", outcome="ok", bytes=1, duration=0.0)
        events.emit("dhcp4.commit_failed")
        assert await journal.flush()
        assert {k: v for k, v in journal.stage_counts.items() if v} == {DONE: 1}
        assert events.counters["journal.unknown_phone"] == 1
        journal.finish()
        await asyncio.get_running_loop().run_in_executor(None, journal.join)

    asyncio.run(main())
    store = journal_backend.reader()
    row = store.phone(MAC)
    assert row is not None and row.stage == DONE and row.doc["address"] == "10.77.0.100"
    assert [s.doc["kind"] for s in store.steps(MAC)] == ["offer", "ack", "get", "get"]
    store.close()
    # A restart carries on from what this appliance wrote.
    again = Journal(JournalSettings(), journal_backend.writer(), Events(), LeaseOwners())
    again.load()
    assert again.stage_counts == {DONE: 1}
    again.store.close()


def test_the_sink_is_bounded() -> None:
    events = Events()
    journal = Journal(JournalSettings(max_pending=100), None, events, LeaseOwners())  # type: ignore[arg-type]
    for _ in range(150):
        journal.sink(*tftp("a"))
    assert events.counters["journal.dropped"] == 50


@pytest.mark.parametrize("bad", ["steps_per_phone = 1", "flush_interval = 100", "nonsense = 1"])
def test_journal_settings_errors(bad: str) -> None:
    from bootstrapd.config import ConfigError

    with pytest.raises(ConfigError):
        loads(f'[server]\ninterface = "eth1"\n[journal]\n{bad}\n')


def test_done_uses_the_provisioning_models_download_list(tmp_path: Path) -> None:
    from bootstrapd.config import load
    from bootstrapd.journal.expected import downloads_for
    from bootstrapd.provisioning.tree import Provisioning
    from tests.unit.test_check_explain import GOOD, setup

    settings = load(setup(tmp_path, GOOD))
    provisioning = Provisioning(settings, create_keys=False)
    provisioning.rendered.refresh(force=True)
    expected = downloads_for(lambda: settings, None, lambda: provisioning)
    files = expected("00:15:65:00:00:01", "SIP-T46U")
    assert files == ["y000000000000.boot", "t46u.cfg", "sip.cfg", "001565000001.cfg"]
    assert expected("00:15:65:00:00:01", "no such phone") is None and expected("00:15:65:00:00:01", None) is None
    phone = Phone("00:15:65:00:00:01", expected=list(files))
    for i, name in enumerate(["001565000001.boot", *files[:3]]):
        step = step_of("tftp.transfer", {"file": name, "outcome": "not_found" if i == 0 else "ok"}, float(i))
        assert step is not None
        fold(phone, step)
    assert phone.stage == CONFIGS  # 001565000001.cfg not yet
    step = step_of("tftp.transfer", {"file": "/001565000001.cfg", "outcome": "ok"}, 9.0)
    assert step is not None
    assert fold(phone, step).stage == DONE


def test_status_command_without_and_with_a_journal(journal_backend: JournalBackend,
                                                   capsys: pytest.CaptureFixture[str]) -> None:

    from bootstrapd.cli import main

    config = journal_backend.state.parent / "b.toml"
    config.write_text(f'[server]\ninterface = "eth1"\nstate_dir = "{journal_backend.state}"\n[dhcp4]\nenabled = false\n'
                      f'{journal_backend.section}')
    assert main(["status", "--config", str(config)]) == 0
    empty = capsys.readouterr()
    assert "no journal yet" in empty.err if journal_backend.name == "sqlite" else "0 phones" in empty.out
    assert main(["status", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["done"] == 0
    assert main(["status", "--config", str(config), "--mac", "nonsense"]) == 2
    assert main(["status", "--config", str(config), "--stage", "nonsense"]) == 2
    store = journal_backend.writer()
    phone = journey(offer(), ack(), tftp("sip.cfg", "not_found"))
    steps = [step_of(*e, 1.0) for e in (offer(), ack(), tftp("sip.cfg", "not_found"))]
    store.write([Batch.of([phone.as_dict()], [s | {"mac": MAC} for s in steps if s])], Limits(10, 100, 10))
    store.close()
    capsys.readouterr()
    assert main(["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "asked for sip.cfg: not found" in out and "1 phone: 1 stuck" in out
    assert main(["status", "--config", str(config), "--mac", OWN]) == 0
    assert "TFTP get sip.cfg: not found" in capsys.readouterr().out
    assert main(["status", "--config", str(config), "--mac", "00:15:65:00:00:01"]) == 1
    assert main(["status", "--config", str(config), "--stage", "done", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phones"] == []
    # The daemon's record of its lease store, when it is down: the first line, and "store" in --json.
    from bootstrapd.leases.health import StoreHealth

    journal_backend.state.mkdir(exist_ok=True)  # the daemon's (it makes it at start-up)
    health = StoreHealth(journal_backend.settings().store, journal_backend.state)
    health.sink("store.down", {"error": "connection refused"})
    assert main(["status", "--config", str(config)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "UNREACHABLE since" in first and "connection refused" in first
    assert main(["status", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["store"]["up"] is False
    health.sink("store.up", {})
    assert main(["status", "--config", str(config)]) == 0
    assert "UNREACHABLE" not in capsys.readouterr().out


def test_during_a_storm_the_journal_collects_and_folds_once_it_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events faster than storm_events a second defer the folding (the replies first); a quiet interval, or an
    event older than MAX_LAG, folds everything, none lost; storm_events = 0 never waits."""
    import time

    from bootstrapd.journal import journal as module

    async def main() -> None:
        events = Events()
        journal = Journal(JournalSettings(flush_interval=60), None, events, LeaseOwners())  # type: ignore[arg-type]
        journal.start(asyncio.get_running_loop())
        clock = [100.0]
        monkeypatch.setattr(time, "monotonic", lambda: clock[0])

        def tick(events_in_it: int) -> None:  # an interval of 1 s in which ``events_in_it`` events arrived
            for _ in range(events_in_it):
                journal.sink(*ack())
            clock[0] += 1.0
            assert journal._timer is not None
            journal._timer.cancel()  # the test ticks by hand
            journal._tick()

        tick(0)  # the first tick only starts the clock
        storm = int(journal.settings.storm_events) + 1
        tick(storm)
        assert journal._storm and len(journal._backlog) == storm * module.STRIDE and journal._queue.empty()
        tick(storm)
        assert len(journal._backlog) == 2 * storm * module.STRIDE and journal._queue.empty()
        tick(1)  # the storm passed: everything is folded (a slice now, the rest in the callbacks that follow)
        assert not journal._storm
        for _ in range(100):
            if not journal._backlog:
                break
            await asyncio.sleep(0)
        assert not journal._backlog and not journal._queue.empty()
        assert journal._phones[MAC].steps == 2 * storm + 1
        # A storm that lasts: an event older than MAX_LAG is folded all the same.
        journal.sink(*ack())
        journal._pending[0] -= module.MAX_LAG + 1  # its time
        tick(storm)
        assert not journal._storm
        for _ in range(100):
            if not journal._backlog:
                break
            await asyncio.sleep(0)
        assert journal._phones[MAC].steps == 3 * storm + 2
        journal.settings = JournalSettings(flush_interval=60, storm_events=0)
        tick(storm)
        assert not journal._storm
        assert journal._timer is not None
        journal._timer.cancel()

    asyncio.run(main())



def test_a_storm_under_way_at_the_first_tick_is_a_storm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A floor booting with the daemon: the first interval is timed from start, so its events wait too (they were
    folded at once, in the middle of the storm, for want of a previous tick to compare with)."""
    import time

    from bootstrapd.journal import journal as module

    async def main() -> None:
        clock = [100.0]
        monkeypatch.setattr(time, "monotonic", lambda: clock[0])
        events = Events()
        journal = Journal(JournalSettings(flush_interval=60), None, events, LeaseOwners())  # type: ignore[arg-type]
        journal.start(asyncio.get_running_loop())
        storm = int(journal.settings.storm_events) + 1
        for _ in range(storm):
            journal.sink(*ack())
        clock[0] += 1.0
        assert journal._timer is not None
        journal._timer.cancel()
        journal._tick()
        assert journal._storm and len(journal._backlog) == storm * module.STRIDE and journal._queue.empty()
        assert journal._timer is not None
        journal._timer.cancel()

    asyncio.run(main())


@pytest.mark.parametrize(("per_second", "storm"), [(300, False), (401, True)])
def test_a_storm_is_storm_events_events_a_second(monkeypatch: pytest.MonkeyPatch, per_second: int,
                                                storm: bool) -> None:
    """``storm_events`` (400) counts events: 300 a second are folded as they come, 401 wait (the sink's flat list
    holds three items per event, and comparing its length made a storm of 134 a second)."""
    import time

    async def main() -> None:
        clock = [100.0]
        monkeypatch.setattr(time, "monotonic", lambda: clock[0])
        journal = Journal(JournalSettings(flush_interval=60), None, Events(), LeaseOwners())  # type: ignore[arg-type]
        journal.start(asyncio.get_running_loop())
        assert journal.settings.storm_events == 400
        for _ in range(per_second):
            journal.sink(*ack())
        clock[0] += 1.0
        assert journal._timer is not None
        journal._timer.cancel()
        journal._tick()
        assert journal._storm is storm
        assert journal._timer is not None
        journal._timer.cancel()

    asyncio.run(main())


def test_a_storms_dhcp4_events_are_held_with_nothing_the_garbage_collector_tracks() -> None:
    """The sink holds an event as its time, kind and fields, flat, and the DHCPv4 server's fields are a dict the
    collector does not track: a storm's held events never set off a collection (each pass walked every tracked
    object held, with the loop stopped: README "The journal's and the capture's cost")."""
    import gc

    from bootstrapd.dhcp4 import codec
    from bootstrapd.journal import journal as module
    from tests.unit.clock_helpers import at
    from tests.unit.dhcp4_helpers import SERVER, make_server, message
    from tests.unit.dhcp4_helpers import mac as hw

    events = Events()
    journal = Journal(JournalSettings(), None, events, LeaseOwners())  # type: ignore[arg-type]
    events.subscribe(journal.sink)
    server = make_server()
    params = {codec.PARAM_LIST: bytes([1, 3, 6, 66, 160])}

    def dora(n: int) -> None:  # as the adapter emits them (dhcp4/adapter.py)
        for kind, extra in ((codec.DISCOVER, {}), (codec.REQUEST, {codec.SERVER_ID: SERVER.packed,
                                                                   codec.REQUESTED_IP: bytes([10, 77, 0, 100 + n])})):
            reply = server.handle(message(kind, hw(n), options={**params, **extra}), ("0.0.0.0", 68), at(1000.0))
            assert reply is not None and reply.event
            events.emit("dhcp4." + reply.event["type"].lower(), **reply.event)

    dora(0)
    gc.collect()  # what a running daemon's collections did long before the storm (the cached option codes untracked)
    for n in range(1, 4):
        dora(n)
    held = journal._pending[2 * module.STRIDE:]
    assert len(held) == 6 * module.STRIDE and [held[i] for i in range(1, len(held), 3)] == ["dhcp4.offer",
                                                                                          "dhcp4.ack"] * 3
    assert not [item for item in held if gc.is_tracked(item)]


def test_a_storms_dhcp6_events_are_held_with_nothing_the_garbage_collector_tracks() -> None:
    """The same for DHCPv6: the reply event's fields are strings and shared tuples (dhcp6/adapter.py, reply_event),
    and the journal folds them into the same steps as before."""
    import gc

    from bootstrapd.dhcp6 import codec as codec6
    from bootstrapd.dhcp6.adapter import reply_event
    from bootstrapd.journal import journal as module
    from tests.unit import test_dhcp6_server as v6

    events = Events()
    journal = Journal(JournalSettings(), None, events, LeaseOwners())  # type: ignore[arg-type]
    events.subscribe(journal.sink)
    core = v6.server()

    def exchange(n: int) -> str:  # as the adapter emits them, once each reply has left
        duid = b"\x00\x03\x00\x01\x00\x15\x65\x01\x02" + bytes([n])
        advertise, out = v6.handle(core, v6.msg(codec6.SOLICIT, duid, v6.ia(), v6.oro(59)))
        events.emit("dhcp6.reply", **reply_event(out))
        offered = str(v6.ias(advertise)[0].addresses[0].address)
        _, out = v6.handle(core, v6.msg(codec6.REQUEST, duid, v6.ia(1, offered), v6.oro(59),
                                        server_id=v6.SERVER_DUID))
        events.emit("dhcp6.reply", **reply_event(out))
        return offered

    exchange(0)
    gc.collect()  # what a running daemon's collections did long before the storm (the shared tuples untracked)
    offered = [exchange(n) for n in range(1, 4)]
    held = journal._pending[2 * module.STRIDE:]
    assert [held[i] for i in range(1, len(held), 3)] == ["dhcp6.reply"] * 6
    assert not [item for item in held if gc.is_tracked(item)]
    assert held[2]["address"] == offered[0] and held[2]["type"] == "advertise" and "addresses" not in held[2]
    step = step_of("dhcp6.reply", held[5], 1.0)
    assert step is not None and step["kind"] == "reply" and step["address6"] == offered[0]



def test_a_storms_http_requests_are_held_packed_and_folded_into_the_same_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """An http.request is held as its values, flat (journal.py, PACKED): nothing the collector tracks, a fraction
    of its dict's memory; folded, it is the very step its dict makes, in order with the other kinds' events, also
    across slices and when its fields change (a file's MAC, a request without a User-Agent); bounded as before."""
    import gc
    import time

    from bootstrapd.http.event import emit_request
    from bootstrapd.http.files import Outcome
    from bootstrapd.journal import journal as module

    clock = iter(range(1_000_000, 2_000_000))
    monkeypatch.setattr(time, "time", lambda: float(next(clock)))
    events = Events()
    count = 3 * module.SLICE + 5
    journal = Journal(JournalSettings(max_pending=count), None, events, LeaseOwners())  # type: ignore[arg-type]
    events.subscribe(journal.sink)
    seen: list[tuple[str, dict[str, Any]]] = []
    events.subscribe(lambda kind, fields: seen.append((kind, dict(fields))))
    agent = f"Yealink SIP-T46U 108.86.0.90 {OWN.upper()}"
    for i in range(count + 10):  # 10 beyond max_pending: dropped and counted
        if i % 50 == 7:
            events.publish(*ack())
        elif i % 50 == 9:
            emit_request(events, "10.77.0.100", "GET", f"/{OWN}.cfg", 200, Outcome(bytes=9, file_mac=OWN), 0.001,
                         True, agent)
        elif i % 50 == 11:  # no User-Agent: the phone is the lease's (there is none: not a phone's step)
            emit_request(events, "10.77.0.100", "GET", "/common.cfg", 404, Outcome("not_found"), 0.001, False, None)
        else:
            emit_request(events, "10.77.0.100", "GET", f"/f{i % 3}.cfg?x=1", 200, Outcome(bytes=4096), 0.0012,
                         False, agent)
    assert events.counters["journal.dropped"] == 10
    gc.collect()
    held = journal._pending
    assert "http.request" not in held and len(journal._layouts) == 3
    shared = {id(layout) for layout in journal._layouts.values()}  # three tuples, however many events
    assert not [item for item in held if gc.is_tracked(item) and item.__class__ is not dict  # ack()'s has lists
                and id(item) not in shared]
    journal._backlog.extend(journal._take())
    assert journal._backlog_events == count
    journal._scheduled = True  # a slice at a time, as the loop would (no loop here)
    slices = 0
    while journal._backlog:
        journal._process()
        slices += 1
    assert slices == 4 and journal._backlog_events == 0
    steps = []
    while not journal._queue.empty():
        batch = journal._queue.get_nowait()
        assert isinstance(batch, Batch)
        steps += [read_times(doc) for doc in json.loads(batch.steps)]  # times stored as microseconds
    expected = []
    for when, (kind, fields) in enumerate(seen[:count], start=1_000_000):
        if fields.get("mac") or kind != "http.request":
            step = step_of(kind, fields, float(when))
            assert step is not None
            expected.append({**step, "mac": MAC})
    assert steps == expected and len(steps) == count - sum(1 for i in range(count) if i % 50 == 11)
    assert events.counters["journal.unknown_phone"] == count - len(steps)


def test_times_are_stored_as_microseconds_and_read_back_as_seconds(journal_backend: JournalBackend) -> None:
    store = journal_backend.writer()
    when = 1796298245.1981525  # full precision, as time.time() gives it
    doc = {"mac": MAC, "stage": "told", "first_seen": when - 1.5, "last_seen": when, "last_time": when, "steps": 1}
    batch = Batch.of([doc], [{"mac": MAC, "time": when, "proto": "dhcp4", "kind": "ack"}])
    assert json.loads(batch.steps)[0]["time"] == 1796298245198152  # an int in the stored text: cheap to write
    store.write([batch], Limits(200, 1000, 1000))
    row, (step,) = store.phone(MAC), store.steps(MAC)
    assert row is not None and row.updated == row.doc["last_seen"] == row.doc["last_time"] == 1796298245.198152
    assert row.doc["first_seen"] == 1796298243.698152 and step.doc["time"] == step.time == 1796298245.198152
    store.close()


def test_a_journal_written_with_times_in_seconds_reads_the_same(tmp_path: Path) -> None:
    """A journal file from before times were microseconds: its JSON floats are seconds, and stay as they were."""
    path = tmp_path / "journal.sqlite3"
    SqliteJournal(path).close()
    conn = sqlite3.connect(path)
    phone = {"mac": MAC, "stage": "done", "first_seen": 1000.25, "last_seen": 1796298245.1981525,
             "last_step": "HTTP get x.cfg: 1 bytes in 0.00s", "last_time": 1796298245.1981525, "steps": 2}
    conn.execute("INSERT INTO phone VALUES (?, 'done', ?, ?)", (MAC, phone["last_seen"], json.dumps(phone)))
    conn.execute("INSERT INTO step (mac, time, doc) VALUES (?, 1000.0, ?)",
                 (MAC, json.dumps({"mac": MAC, "time": 1000.0, "proto": "dhcp4", "kind": "ack"})))
    conn.commit()
    conn.close()
    store = SqliteJournal(path)
    row, (step,) = store.phone(MAC), store.steps(MAC)
    assert row is not None and row.doc == phone and step.doc["time"] == 1000.0 and step.time == 1000.0
    # A newer write beside them: the new step in microseconds, both read as seconds, in order.
    store.write([Batch.of([dict(phone, last_seen=2000.5)], [{"mac": MAC, "time": 2000.5}])], Limits(200, 1000, 1000))
    assert [s.doc["time"] for s in store.steps(MAC)] == [1000.0, 2000.5]
    row = store.phone(MAC)
    assert row is not None and row.updated == row.doc["last_seen"] == 2000.5 and row.doc["first_seen"] == 1000.25
    store.close()
