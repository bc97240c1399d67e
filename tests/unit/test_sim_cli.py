"""``bootstrapd sim`` usage errors exit 2 with the reason, before any socket is opened."""

from __future__ import annotations

import pytest

from bootstrapd.cli import main


@pytest.mark.parametrize(("args", "reason"), [
    (["--count", "0"], "--count must be at least 1"),
    (["--custom-option", "100"], "--custom-option must be 128-254"),
    (["--slice", "2/2"], "--slice '2/2': expected I/K with 0 <= I < K"),
    (["--slice", "a/b"], "--slice 'a/b': expected I/K with 0 <= I < K"),
    (["--count", "1", "--slice", "1/2"], "--slice 1/2: no phone falls in this slice"),
    (["--slice", "0/2", "--dhcp6"], "--slice: DHCPv6 replies go to one socket per interface"),
    (["--set", "novalue"], "--set 'novalue': expected KEY=VALUE"),
])
def test_usage_errors(args: list[str], reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--interface", "bdt-no-such-if", *args]) == 2
    assert reason in capsys.readouterr().err
