"""/metrics: fed by the event stream and the services' state, parsed by prometheus-client, accepted by promtool."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bootstrapd.events import Events
from bootstrapd.journal.journal import Journal
from bootstrapd.journal.settings import JournalSettings
from bootstrapd.journal.store import SqliteJournal
from bootstrapd.leases.health import StoreHealth, read_state
from bootstrapd.leases.owners import LeaseOwners
from bootstrapd.leases.settings import StoreSettings
from bootstrapd.leases.store import Lease4, LeaseStore
from bootstrapd.metrics import Metrics, registry_for, render
from tests.conftest import IN_CI
from tests.unit.dhcp4_helpers import dora, mac, make_server


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _exposition(tmp_path: Path) -> str:
    async def main() -> str:
        events = Events()
        core = make_server()
        dhcp4 = SimpleNamespace(name="dhcp4", core=core)
        tftp = SimpleNamespace(name="tftp", sessions={1, 2})
        store = LeaseStore(tmp_path / "leases.sqlite3")
        store.start(asyncio.get_running_loop())
        journal = Journal(JournalSettings(flush_interval=0.05), SqliteJournal(tmp_path / "j.sqlite3"), events,
                          LeaseOwners())
        journal.load()
        journal.start(asyncio.get_running_loop())
        clock = [1000.0]
        health = StoreHealth(StoreSettings(), tmp_path, clock=lambda: clock[0])
        events.subscribe(health.sink)
        metrics = Metrics(events, [dhcp4, tftp], journal, store, health)
        # An outage of 30 s, then one going on for 5 s (the daemon's lease store, through the event stream).
        events.emit("store.down", backend="sqlite", error="gone")
        clock[0] += 30
        events.emit("store.up", backend="sqlite", outage=30.0)
        events.emit("store.down", backend="sqlite", error="gone again")
        clock[0] += 5
        for n in range(3):
            ack = dora(core, mac(n))
            await store.commit([Lease4(IPv4Address(ack.yiaddr), mac(n), None, time.time() + 3600)])
            events.emit("dhcp4.ack", type="ACK", request="REQUEST", mac=mac(n).hex(":"), address=str(ack.yiaddr),
                        options=[1, 66], classes=[], vendor_class=None)
        events.emit("tftp.transfer", client="10.77.0.100", file="a.cfg", outcome="ok", bytes=1234, duration=0.1)
        events.emit("tftp.transfer", client="10.77.0.100", file="b.cfg", outcome="not_found", bytes=0, duration=0.0)
        events.emit("http.request", client="10.77.0.100", path="/T46U/", status=401, outcome="ok", bytes=0,
                    duration=0.0, mac=mac(0).hex(":"))
        events.count("dhcp4.dropped", 5)
        events.count("tftp.socket_error", 2)
        await journal.flush()
        text = render(registry_for(metrics)).decode()
        journal.finish()
        journal.join()
        store.close()
        return text

    return asyncio.run(main())


def test_metrics_parse_and_say_what_happened(tmp_path: Path) -> None:
    text = _exposition(tmp_path)
    samples = _samples(text)
    assert samples[("bootstrapd_dhcp4_pool_size", ())] == 4
    assert samples[("bootstrapd_dhcp4_addresses_assigned", ())] == 3
    assert samples[("bootstrapd_requests_total", (("outcome", "ack"), ("protocol", "dhcp4")))] == 3
    assert samples[("bootstrapd_requests_total", (("outcome", "not_found"), ("protocol", "tftp")))] == 1
    assert samples[("bootstrapd_requests_total", (("outcome", "401"), ("protocol", "http")))] == 1
    assert samples[("bootstrapd_transfer_bytes_total", (("protocol", "tftp"),))] == 1234
    assert samples[("bootstrapd_dropped_packets_total", (("service", "dhcp4"),))] == 5
    assert samples[("bootstrapd_errors_total", (("kind", "socket_error"), ("service", "tftp")))] == 2
    assert samples[("bootstrapd_active_transfers", (("protocol", "tftp"),))] == 2
    assert samples[("bootstrapd_phones", (("stage", "told"),))] == 2
    assert samples[("bootstrapd_phones", (("stage", "stuck"),))] == 1  # the phone that got the 401
    assert samples[("bootstrapd_journal_commit_seconds_count", ())] >= 1
    assert samples[("bootstrapd_lease_commit_seconds_count", ())] == 3
    assert samples[("bootstrapd_leases_committed_total", ())] == 3
    backend = (("backend", "sqlite"),)
    assert samples[("bootstrapd_store_up", backend)] == 0
    assert samples[("bootstrapd_store_outages_total", backend)] == 2
    assert samples[("bootstrapd_store_outage_seconds_total", backend)] == 35  # the current outage counted
    assert samples[("bootstrapd_store_last_change_timestamp_seconds", backend)] == 1030
    state = read_state(tmp_path)  # what `bootstrapd status` reads: the same state, written at the change
    assert state is not None and state["up"] is False and state["down_since"] == 1030 and state["error"] == "gone again"


def test_promtool_accepts_the_exposition(tmp_path: Path) -> None:
    if not shutil.which("promtool"):
        if IN_CI:
            pytest.fail("promtool missing (Debian prometheus, make peers)")
        pytest.skip("promtool missing (Debian prometheus, make peers)")
    text = _exposition(tmp_path)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
