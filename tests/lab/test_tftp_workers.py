"""TFTP transfer workers (``[tftp] workers``, issue #11): large downloads run in worker processes of the daemon.

The daemon still decides every request (limits, resolver, options), counts the slots and emits each transfer's one
event; a worker runs the download it was handed. Every test runs with two workers and with none (every transfer on
the daemon's loop), and compares every byte. A worker killed in the middle of a transfer loses that transfer (the
phone asks again) and is started again; stopping the daemon leaves no worker behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bench.tftp import rrq
from tests.conftest import require_tools
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import Lab, Node

SERVER = "10.77.0.1"
CONFIG = "\n[tftp]\nenabled = true\nlarge_file_size = 65536\nworkers = {workers}\n"


@dataclass
class Env:
    app: Appliance
    phone: Node
    out: Path
    files: dict[str, bytes]
    workers: int


def _start(lab: Lab, workdir: Path, workers: int, extra: str = "") -> Env:
    require_tools("curl", "atftp")
    ap = lab.add_appliance()
    phone = lab.add_phone(ipv4="10.77.0.10/24")
    app = Appliance(ap, workdir, BASE_CONFIG.format(root=workdir / "root", state=workdir / "state") +
                    CONFIG.format(workers=workers) + extra)
    rng = random.Random(11)
    files = {"fw.bin": rng.randbytes(3_000_000), "fw2.bin": rng.randbytes(1_500_001), "a.cfg": b"x = 1\n" * 100}
    for name, data in files.items():
        (app.root / name).write_bytes(data)
    out = workdir / "out"
    out.mkdir()
    out.chmod(0o777)
    app.start()
    return Env(app, phone, out, files, workers)


@pytest.fixture(params=[2, 0], ids=["workers", "loop"])
def env(request: pytest.FixtureRequest, lab: Lab, workdir: Path) -> Iterator[Env]:
    the_env = _start(lab, workdir, int(request.param))
    yield the_env
    if the_env.app.proc and the_env.app.proc.poll() is None:
        the_env.app.stop()


@pytest.fixture
def env2(lab: Lab, workdir: Path) -> Iterator[Env]:
    the_env = _start(lab, workdir, 2)
    yield the_env
    if the_env.app.proc and the_env.app.proc.poll() is None:
        the_env.app.stop()


def _workers(app: Appliance) -> list[int]:
    """The daemon's transfer worker processes."""
    assert app.proc is not None
    pids = []
    for task in Path(f"/proc/{app.proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"bootstrapd.tftp.worker" in cmdline:
                pids.append(int(child))
    return sorted(pids)


def _holds(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file called ``name`` open."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).endswith("/" + name):
                return True
        except OSError:
            continue
    return False


def _counters(app: Appliance) -> dict[str, int]:
    """The counters the daemon logs when it stops."""
    match = re.search(r"stopping counters=(\{.*\})", app.log())
    assert match, app.log()[-2000:]
    counters: dict[str, int] = json.loads(match.group(1).replace("'", '"'))
    return counters


def _download(env: Env, name: str, dest: str, window: int = 1) -> subprocess.Popen[bytes]:
    if window > 1:
        argv = ["atftp", "--get", "-r", name, "-l", str(env.out / dest), "--option", "blksize 1428", "--option",
                f"windowsize {window}", SERVER]
    else:
        argv = ["curl", "-sS", "--max-time", "60", "--tftp-blksize", "1428", "-o", str(env.out / dest),
                f"tftp://{SERVER}/{name}"]
    return env.phone.popen(argv)


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err.decode(errors="replace")


def _same(env: Env, name: str, dest: str) -> None:
    got = (env.out / dest).read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(env.files[name]).digest(), dest


def test_large_downloads_at_once_byte_for_byte(env: Env) -> None:
    assert len(_workers(env.app)) == env.workers
    procs = [_download(env, "fw.bin", f"lock{i}.bin") for i in range(6)]
    procs += [_download(env, "fw2.bin", f"win{i}.bin", window=16) for i in range(2)]
    procs.append(_download(env, "a.cfg", "a.cfg"))  # a small file: always the daemon's loop
    _wait(procs)
    for i in range(6):
        _same(env, "fw.bin", f"lock{i}.bin")
    for i in range(2):
        _same(env, "fw2.bin", f"win{i}.bin")
    _same(env, "a.cfg", "a.cfg")
    workers = _workers(env.app)
    env.app.stop()
    counters = _counters(env.app)
    assert counters.get("tftp.transfer", 0) == 9, counters  # one event per transfer, from the daemon
    assert counters.get("tftp.handed_over", 0) == (8 if env.workers else 0), counters
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived the daemon"


def test_a_killed_worker_loses_its_transfer_and_is_started_again(env2: Env) -> None:
    env = env2
    before = _workers(env.app)
    assert len(before) == 2
    # A client that takes the OACK and never acknowledges: its transfer sits in a worker, retransmitting.
    spec = [{"name": "silent", "hex": rrq("fw.bin", {"blksize": "1428"}).hex(), "wait": 4}]
    silent = env.phone.popen([sys.executable, "-m", "tests.bench.tftp", "probe", "--host", SERVER, "--cases",
                              json.dumps(spec)])
    deadline = time.monotonic() + 20
    while not any(_holds(pid, "fw.bin") for pid in before):  # handed over: a worker has the file open
        assert time.monotonic() < deadline, "no worker was handed the download"
        time.sleep(0.05)
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = _workers(env.app)
        if len(now) == 2 and not set(now) & set(before):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the workers were not started again: {before} -> {_workers(env.app)}")
    out, _ = silent.communicate(timeout=30)
    assert json.loads(out)[0]["replies"][0]["opcode"] == 6  # it had its OACK
    _wait([_download(env, "fw.bin", "after.bin")])  # the new workers serve
    _same(env, "fw.bin", "after.bin")
    env.app.stop()
    counters = _counters(env.app)
    assert counters.get("tftp.worker_lost", 0) == 1, counters
    assert counters.get("tftp.transfer", 0) == 2, counters
    # (the download after it went to a new worker if that one had said it was ready, else to the loop)
    assert counters.get("tftp.handed_over", 0) in (1, 2), counters



@pytest.mark.parametrize(("before", "after"), [("", "spin_us = 0\n"), ("spin_us = 0\n", "spin_us = 1000\n")],
                         ids=["turned-off", "turned-on"])
def test_a_reload_applies_spin_us_to_the_next_hand_over(lab: Lab, workdir: Path, before: str, after: str) -> None:
    """The workers outlive a reload, so [tftp] spin_us travels with each hand-over: after a reload the one
    lock-step download of a worker polls for its ACKs (``tftp.ack_polls``) exactly when the new value says so
    (before the fix the workers kept the start-up value)."""
    env = _start(lab, workdir, 1, before)
    try:
        config = env.app.config.read_text().replace(before, "")
        env.app.write_config(config.replace("workers = 1\n", "workers = 1\n" + after))
        env.app.reload()
        env.app.wait_notify("READY=1")
        _wait([_download(env, "fw.bin", "after.bin")])
        _same(env, "fw.bin", "after.bin")
        assert "configuration reloaded" in env.app.log(), env.app.log()[-2000:]
    finally:
        env.app.stop()
    counters = _counters(env.app)
    assert counters.get("tftp.handed_over", 0) == 1, counters
    if after == "spin_us = 0\n":
        assert counters.get("tftp.ack_polls", 0) == 0, counters
    else:
        assert counters.get("tftp.ack_polls", 0) >= 1, counters
