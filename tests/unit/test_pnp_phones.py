"""What the PnP responder remembers for resync (issue #8 item 11): only acknowledged exchanges, and the old JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bootstrapd.leases.phones import PhoneRecord
from bootstrapd.pnp.phones import read_legacy, record_for
from bootstrapd.pnp.responder import Answered
from tests.unit.test_pnp_responder import make, ok_for, sample


def test_only_an_acknowledged_exchange_is_recorded() -> None:
    core, answers, _ = make()
    phone, spoofed, silent = ("10.77.0.20", 5060), ("10.77.0.99", 5060), ("10.77.0.21", 5060)
    notify = core.receive(sample(), phone, 0.0)[1].data
    core.receive(ok_for(notify), phone, 0.1)  # the phone answers its NOTIFY
    core.receive(sample().replace(b"Call-ID: 1", b"Call-ID: 2"), spoofed, 0.2)  # nobody there answers
    rejected = core.receive(sample().replace(b"Call-ID: 1", b"Call-ID: 3"), silent, 0.3)[1].data
    core.receive(ok_for(rejected, 481), silent, 0.4)
    core.on_timer(100.0)  # Timer F for the spoofed one
    assert sorted((a.ip, a.acknowledged) for a in answers) == [
        ("10.77.0.20", True), ("10.77.0.21", False), ("10.77.0.99", False)]
    records = [r for a in answers if (r := record_for(a, 1234.0)) is not None]
    assert records == [PhoneRecord("001565f4f9e1", "10.77.0.20", 1234.0, "pnp", "yealink", "W52P", "25.81.0.10",
                                   "tftp://10.77.0.1/")]


def test_an_exchange_without_a_mac_is_not_recorded() -> None:
    answer = Answered(None, "10.77.0.20", 5060, "snom", "snom720", "1", "tftp://x/", True, 200)
    assert record_for(answer, 1.0) is None


def test_the_old_json_record_gives_only_its_acknowledged_phones(tmp_path: Path) -> None:
    path = tmp_path / "pnp-phones.json"
    path.write_text(json.dumps({
        "001565f4f9e1": {"ip": "10.77.0.20", "vendor": "yealink", "model": "W52P", "version": "25", "url": "tftp://x/",
                         "acknowledged": True, "time": 1700000000.5},
        "001565000002": {"ip": "10.77.0.99", "acknowledged": False, "time": 1700000001.0},  # spoofed, maybe
        "001565000003": {"ip": "10.77.0.30", "time": 1700000002.0},
        "001565000004": {"ip": "not an address", "acknowledged": True, "time": 1.0},
        "001565000005": {"ip": "10.77.0.31", "acknowledged": True, "time": "yesterday"},
        "NOT-A-MAC": {"ip": "10.77.0.32", "acknowledged": True, "time": 1.0},
        "001565000006": ["odd"],
        "001565000007": {"ip": "10.77.0.33", "acknowledged": True, "time": 5, "model": 7},
    }))
    assert read_legacy(path) == [
        PhoneRecord("001565f4f9e1", "10.77.0.20", 1700000000.5, "pnp", "yealink", "W52P", "25", "tftp://x/"),
        PhoneRecord("001565000007", "10.77.0.33", 5.0, "pnp"),
    ]


def test_an_unreadable_old_record_imports_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pnp-phones.json"
    for text in ("{", "[1, 2]", "null", ""):
        path.write_text(text)
        assert read_legacy(path) == []
    assert read_legacy(tmp_path / "missing.json") == []
