"""A slow disk stalls only the requests waiting for it (issue #8 item 16), over TFTP and HTTP alike: DHCP, PnP and
cached files over TFTP and HTTP keep answering meanwhile.

The real daemon runs under tests/lab/slowdisk.py: its reads of files under ``root/slow`` and its fsyncs under the
upload store wait on a file lock the test holds, as they would on a disk or a network mount that stopped answering.
While a phone's download (a cache miss, a streamed large file; TFTP or HTTP) or upload waits on it, udhcpc gets a
lease, sipp completes a PnP exchange and curl fetches a file from the hot cache over TFTP and HTTP; once the lock is
released the slow transfer completes with the right bytes. The same setting shows a retransmitted RRQ (tftp-hpa,
1 s timer) handled as a duplicate of the running transfer (RFC 1350, issue #8 item 14), not a second transfer.
"""

from __future__ import annotations

import fcntl
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_root, require_tools
from tests.lab.appliance import Appliance
from tests.lab.clients import udhcpc
from tests.lab.netns import Lab, Node
from tests.lab.sipphone import run_phone

pytestmark = pytest.mark.lab

SERVER = "10.77.0.1"
CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
url = "tftp://{ipv4}/"

[dhcp4]
enabled = true
range = "10.77.0.100-10.77.0.199"

[pnp]
enabled = true

[tftp]
enabled = true
rate_limit = 0
large_file_size = 65536

[http]
enabled = true

[provisioning]
uploads = true
mac_files = "any"
"""
PHONE_MAC = "001565770020"


@dataclass
class Env:
    lab: Lab
    app: Appliance
    phone: Node  # static address: TFTP and sipp
    dhcp: Node  # no address: udhcpc
    work: Path
    lock: Path
    files: dict[str, bytes]

    @contextmanager
    def slow_disk(self) -> Iterator[None]:
        """Hold the lock: the daemon's reads under root/slow and fsyncs under the upload store wait until we let
        go."""
        self.waiting.unlink(missing_ok=True)
        with open(self.lock, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(held, fcntl.LOCK_UN)

    @property
    def waiting(self) -> Path:
        return Path(str(self.lock) + ".waiting")

    def wait_blocked(self, what: str, proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.waiting.exists() and what in self.waiting.read_text().split():
                return
            if proc.poll() is not None:
                raise AssertionError(f"the client ended before the daemon reached the slow {what}: "
                                     f"{proc.returncode} {proc.communicate()}")
            time.sleep(0.05)
        raise AssertionError(f"the daemon never reached the slow {what}:\n{self.app.log()[-3000:]}")

    def others_still_answer(self) -> None:
        """DHCP, PnP and a cached file over TFTP and HTTP, on the same event loop as the stalled transfer."""
        lease = udhcpc(self.dhcp, self.work, f"slow-{time.monotonic_ns()}", "-t", "8")
        assert lease["ip"].startswith("10.77.0.1"), lease
        code, _, output = run_phone(self.phone, "yealink-w52p", self.work)
        assert code == 0, output
        dest = self.work / "hot.cfg"
        result = self.phone.run(["curl", "-sS", "--max-time", "10", "-o", str(dest), f"tftp://{SERVER}/a.cfg"])
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == self.files["a.cfg"]
        dest.unlink()
        result = self.phone.run(["curl", "-sS", "--fail", "--max-time", "10", "-o", str(dest), f"http://{SERVER}/a.cfg"])
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == self.files["a.cfg"]

    def events(self, file: str) -> list[str]:
        """Outcomes of the daemon's tftp.transfer events for ``file`` (its --debug JSON log)."""
        outcomes = []
        for line in self.app.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("message") == "tftp.transfer" and record.get("file") == file:
                outcomes.append(record["outcome"])
        return outcomes


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_root()
    require_tools("curl", "tftp", "busybox", "sipp")
    from tests.lab.netns import lab

    work = tmp_path_factory.mktemp("slowdisk")
    work.chmod(0o755)
    with lab() as the_lab:
        node = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.20/24")
        dhcp = the_lab.add_phone()
        app = Appliance(node, work, CONFIG)
        rng = random.Random(16)
        files = {"a.cfg": b"account.1.enable = 1\n" * 20, "slow/small.cfg": rng.randbytes(20000),
                 "slow/dup.cfg": rng.randbytes(3000), "slow/big.bin": rng.randbytes(2 << 20)}
        files["slow/h-small.cfg"], files["slow/h-big.bin"] = files["slow/small.cfg"], files["slow/big.bin"]
        for name, data in files.items():
            (app.root / name).parent.mkdir(parents=True, exist_ok=True)
            (app.root / name).write_bytes(data)
        lock = work / "disk.lock"
        lock.write_text("")
        app.start("--debug", "--log-format", "json", command=[sys.executable, "-m", "tests.lab.slowdisk"],
                  env={"SLOWDISK_DIRS": f"{app.root / 'slow'}:{app.state / 'uploads'}", "SLOWDISK_LOCK": str(lock)})
        try:
            yield Env(the_lab, app, phone, dhcp, work, lock, files)
        finally:
            app.stop()


def _download(env: Env, scheme: str, name: str) -> tuple[subprocess.Popen[Any], Path]:
    dest = env.work / f"{scheme}-{name.replace('/', '-')}"
    dest.unlink(missing_ok=True)
    proc = env.phone.popen(["curl", "-sS", "--fail", "--max-time", "120", "-o", str(dest), f"{scheme}://{SERVER}/{name}"])
    return proc, dest


@pytest.mark.parametrize("scheme", ["tftp", "http"])
@pytest.mark.parametrize("name", ["slow/small.cfg", "slow/big.bin"])
def test_a_slow_read_stalls_only_its_own_transfer(env: Env, scheme: str, name: str) -> None:
    # slow/small.cfg: a cache miss (the file is read whole, then served from the cache); slow/big.bin: streamed.
    # Over HTTP, copies of the same files (the TFTP runs left the originals in the hot cache).
    if scheme == "http":
        name = name.replace("slow/", "slow/h-")
    with env.slow_disk():
        proc, dest = _download(env, scheme, name)
        env.wait_blocked("read", proc)
        env.others_still_answer()
        assert proc.poll() is None  # its transfer still waits for the disk
    assert proc.wait(timeout=120) == 0, proc.communicate()
    assert dest.read_bytes() == env.files[name]


def test_a_slow_upload_fsync_stalls_only_that_upload(env: Env) -> None:
    local = env.work / "phone.log"
    local.write_bytes(env.files["slow/small.cfg"])
    with env.slow_disk():
        proc = env.phone.popen(["tftp", "-4", SERVER, "-m", "binary", "-c", "put", str(local),
                                f"logs/{PHONE_MAC}-phone.log"])
        env.wait_blocked("fsync", proc)
        env.others_still_answer()
        assert proc.poll() is None  # the final ACK waits until the upload is durable
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Error" not in out, (out, err)
    stored = env.app.state / "uploads" / PHONE_MAC / f"{PHONE_MAC}-phone.log"
    assert stored.read_bytes() == env.files["slow/small.cfg"]


def test_a_slow_http_upload_fsync_stalls_only_that_upload(env: Env) -> None:
    local = env.work / "contact.xml"
    local.write_bytes(env.files["slow/dup.cfg"])
    with env.slow_disk():
        proc = env.phone.popen(["curl", "-sS", "--fail", "--max-time", "120", "-T", str(local),
                                f"http://{SERVER}/{PHONE_MAC}-contact.xml", "-w", "%{http_code}"],
                               stdout=subprocess.PIPE)
        env.wait_blocked("fsync", proc)
        env.others_still_answer()
        assert proc.poll() is None  # the 201 waits until the upload is durable
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == b"201", out
    stored = env.app.state / "uploads" / PHONE_MAC / f"{PHONE_MAC}-contact.xml"
    assert stored.read_bytes() == env.files["slow/dup.cfg"]


def test_a_retransmitted_request_is_the_same_transfer(env: Env) -> None:
    # tftp-hpa with a 1 s retransmission timer sends its RRQ again, from the same port, while the daemon waits for
    # the disk: each repeat is a duplicate of the running transfer, and only that one transfer ever answers.
    dest = env.work / "dup.cfg"
    with env.slow_disk():
        proc = env.phone.popen(["tftp", "-4", SERVER], stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(f"binary\nrexmt 1\ntimeout 60\nget slow/dup.cfg {dest}\nquit\n".encode())
        proc.stdin.close()
        env.wait_blocked("read", proc)
        deadline = time.monotonic() + 30
        while env.events("slow/dup.cfg").count("duplicate") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert env.events("slow/dup.cfg").count("duplicate") >= 2, env.events("slow/dup.cfg")
    assert proc.wait(timeout=60) == 0
    assert dest.read_bytes() == env.files["slow/dup.cfg"]
    deadline = time.monotonic() + 10
    while "ok" not in env.events("slow/dup.cfg") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {e for e in env.events("slow/dup.cfg")} == {"ok", "duplicate"}
    assert env.events("slow/dup.cfg").count("ok") == 1
