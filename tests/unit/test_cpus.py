"""``server.cpu``: parsing, the choice of CPU, and the error that names the key and the line."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bootstrapd import cpus
from bootstrapd.config import ConfigError, loads


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("off", "off"), (0, 0), (3, 3)])
def test_parse(value: object, expected: object) -> None:
    assert cpus.parse(value) == expected


@pytest.mark.parametrize("value", [True, -1, "fast", 1.5, [0]])
def test_parse_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        cpus.parse(value)


def test_choose() -> None:
    assert cpus.choose("auto", {0, 1, 2}, 2) == 2  # where the main thread runs
    assert cpus.choose("auto", {0, 1}, None) == 0
    assert cpus.choose(1, {0, 1}, 0) == 1
    assert cpus.choose("off", {0, 1}, 0) is None
    assert cpus.choose("auto", {5}, 5) is None  # one CPU: nothing to choose
    with pytest.raises(ValueError, match=r"server.cpu = 4: not one of the CPUs this process may use \(0,1\)"):
        cpus.choose(4, {0, 1}, 0)
    with pytest.raises(ValueError):
        cpus.choose(4, {0}, 0)  # a wrong CPU is wrong on a one-CPU machine too


def test_current_is_one_of_ours() -> None:
    assert cpus.current() in os.sched_getaffinity(0)


def test_the_key_is_checked_with_its_line(tmp_path: Path) -> None:
    text = '[server]\ninterface = "eth1"\ncpu = "fast"\n[dhcp4]\nenabled = false\n'
    with pytest.raises(ConfigError, match=r":3: server.cpu: must be \"auto\", \"off\" or a CPU number"):
        loads(text, str(tmp_path / "b.toml"))
    assert loads(text.replace('"fast"', "1"), "b.toml").server.cpu == 1
    assert loads(text.replace('cpu = "fast"\n', ""), "b.toml").server.cpu == "auto"


def test_pin_then_release_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a thread of its own (pinning is per thread): pinned to one CPU, the set saved for workers; release takes
    it back."""
    everything = os.sched_getaffinity(0)
    monkeypatch.delenv(cpus.ENV, raising=False)
    seen: dict[str, object] = {}

    def body() -> None:
        seen["cpu"] = cpus.pin("auto")
        seen["pinned"] = os.sched_getaffinity(0)
        seen["env"] = os.environ.get(cpus.ENV)
        cpus.release()
        seen["released"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if len(everything) < 2:
        assert seen["cpu"] is None and seen["pinned"] == everything
        return
    assert seen["pinned"] == {seen["cpu"]}
    assert seen["env"] == cpus.format_set(everything)
    assert seen["released"] == everything
    assert os.sched_getaffinity(0) == everything  # the test's own thread was never pinned
