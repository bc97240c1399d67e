"""The real daemon's TFTP in the namespace lab, against curl, atftp, tftp-hpa and tftpy, over IPv4 and IPv6.

One appliance and one phone per module (starting a lab per test would cost more than the tests); every download is
compared byte for byte; every hostile datagram is followed by a normal download that must still work.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bench.tftp import rrq
from tests.conftest import require_root, require_tools
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import Lab, Node

V4, V6 = "10.77.0.1", "fd77::1"
BIG = 50 * 1000 * 1000

CONFIG = """
[tftp]
enabled = true
max_transfers = 3000
max_per_client = 3000
rate_limit = 0
"""


@dataclass
class Env:
    lab: Lab
    app: Appliance
    phone: Node
    root: Path
    out: Path
    files: dict[str, bytes]

    def sha(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def check(self, name: str, path: Path | None = None) -> None:
        got = (path or self.out / name).read_bytes()
        assert len(got) == len(self.files[name]) and got == self.files[name], name

    def bench(self, *args: str, timeout: float = 120) -> Any:
        result = self.phone.run([sys.executable, "-m", "tests.bench.tftp", *args], timeout=timeout)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def healthy(self, host: str = V4) -> None:
        """A normal download after something hostile: the server is still serving."""
        dest = self.out / "health.cfg"
        dest.unlink(missing_ok=True)
        result = self.phone.run(["curl", "-sS", "--max-time", "10", "-o", str(dest), f"tftp://{_url(host)}/a.cfg"])
        assert result.returncode == 0, result.stderr
        self.check("a.cfg", dest)


def _url(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_root()
    require_tools("curl", "atftp", "tftp")
    from tests.lab.netns import lab

    work = tmp_path_factory.mktemp("tftp")
    work.chmod(0o755)
    with lab() as the_lab:
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.10/24", ipv6="fd77::10/64")
        app = Appliance(ap, work, BASE_CONFIG.format(root=work / "root", state=work / "state") + CONFIG)
        root = app.root
        rng = random.Random(1350)
        files = {
            "a.cfg": b"#!version:1.0.0.1\naccount.1.enable = 1\n" * 10,
            "y000000000000.boot": rng.randbytes(400),
            "s4k.cfg": rng.randbytes(4096),
            "s20k.cfg": rng.randbytes(20480),
            "exact.bin": rng.randbytes(1428 * 7),  # ends with an empty DATA block
            "text.cfg": b"line one\nline two\r\nbare\rcarriage\n" * 300,
            "big.bin": rng.randbytes(BIG),
        }
        (root / "dir").mkdir()
        for name, data in files.items():
            (root / name).write_bytes(data)
        (root / "dir" / "c.cfg").write_bytes(files["a.cfg"])
        out = work / "out"
        out.mkdir()
        out.chmod(0o777)
        app.start()
        try:
            yield Env(the_lab, app, phone, root, out, files)
        finally:
            app.stop()


@pytest.mark.parametrize("host", [V4, V6])
@pytest.mark.parametrize("blksize", [512, 1432])
def test_curl(env: Env, host: str, blksize: int) -> None:
    for name in ("a.cfg", "s20k.cfg", "exact.bin", "dir/c.cfg"):
        dest = env.out / f"curl-{blksize}"
        result = env.phone.run(["curl", "-sS", "--max-time", "20", "--tftp-blksize", str(blksize), "-o", str(dest),
                                f"tftp://{_url(host)}/{name}"])
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == env.files[name.replace("dir/c.cfg", "a.cfg")]


@pytest.mark.parametrize("host", [V4, V6])
@pytest.mark.parametrize("options", [
    {"blksize": "1428"},
    {"blksize": "512", "tsize": "0"},
    {"blksize": "1428", "tsize": "0", "windowsize": "16"},
    {"blksize": "1428", "windowsize": "64"},
])
def test_atftp(env: Env, host: str, options: dict[str, str]) -> None:
    dest = env.out / "atftp.out"
    argv = ["atftp", "--get", "-r", "s20k.cfg", "-l", str(dest)]
    for key, value in options.items():
        argv += ["--option", f"{key} {value}"]
    result = env.phone.run([*argv, host], timeout=30)
    assert result.returncode == 0, result.stderr
    env.check("s20k.cfg", dest)


@pytest.mark.parametrize("host", [V4, V6])
def test_tftp_hpa(env: Env, host: str) -> None:
    dest = env.out / "hpa.out"
    family = "-6" if ":" in host else "-4"
    for name in ("s4k.cfg", "exact.bin"):
        result = env.phone.run(["tftp", family, host, "-m", "binary", "-c", "get", name, str(dest)], timeout=30)
        assert result.returncode == 0 and not result.stderr, result.stderr
        env.check(name, dest)
    # netascii: the client converts CR LF back to LF and CR NUL back to CR, so the file comes out as it is on disk.
    result = env.phone.run(["tftp", family, host, "-m", "netascii", "-c", "get", "text.cfg", str(dest)], timeout=30)
    assert result.returncode == 0 and not result.stderr, result.stderr
    env.check("text.cfg", dest)


def test_tftpy(env: Env) -> None:
    # tftpy's client is IPv4 only.
    dest = env.out / "tftpy.out"
    code = ("import sys, tftpy; tftpy.TftpClient(sys.argv[1], 69, options={'blksize': 1428})"
            ".download(sys.argv[2], sys.argv[3])")
    for name in ("s20k.cfg", "exact.bin"):
        result = env.phone.run([sys.executable, "-c", code, V4, name, str(dest)], timeout=30)
        assert result.returncode == 0, result.stderr
        env.check(name, dest)


@pytest.mark.parametrize("mode", ["lockstep", "windowed"])
def test_50mb(env: Env, mode: str) -> None:
    dest = env.out / f"big-{mode}.bin"
    options = {"blksize": "1428"} if mode == "lockstep" else {"blksize": "1428", "windowsize": "64"}
    argv = ["atftp", "--get", "-r", "big.bin", "-l", str(dest)]
    for key, value in options.items():
        argv += ["--option", f"{key} {value}"]
    result = env.phone.run([*argv, V4], timeout=120)
    assert result.returncode == 0, result.stderr
    env.check("big.bin", dest)
    dest.unlink()


def test_50mb_netascii_ipv6(env: Env) -> None:
    # The other mode: tftp-hpa, 512-byte blocks, netascii (block numbers roll over past 65535), over IPv6.
    dest = env.out / "big-ascii.bin"
    result = env.phone.run(["tftp", "-6", V6, "-m", "netascii", "-c", "get", "big.bin", str(dest)], timeout=180)
    assert result.returncode == 0, result.stderr
    env.check("big.bin", dest)
    dest.unlink()


def _error(reply: dict[str, Any]) -> tuple[int, int]:
    return reply["opcode"], reply["number"]


@pytest.mark.parametrize("host", [V4, V6])
def test_hostile_requests(env: Env, host: str) -> None:
    root = env.root
    if not (root / "out").exists():
        (root / "out").symlink_to("/etc/passwd")
        os.mkfifo(root / "fifo")
    cases: list[tuple[str, bytes, tuple[int, int] | None]] = [
        ("1 byte", b"\x01", None),
        ("3 bytes", b"\x00\x04\x00", None),
        ("ack never sent", b"\x00\x04\x12\x34", None),
        ("unknown opcode", b"\x00\x09abc\x00", None),
        ("non-UTF-8 name", rrq(b"\xff\xfe.cfg"), None),
        ("../../etc/passwd", rrq("../../etc/passwd"), (5, 2)),
        ("/etc/passwd", rrq("/etc/passwd"), (5, 2)),
        ("dir/../../x", rrq("dir/../../x"), (5, 2)),
        ("symlink out", rrq("out"), (5, 2)),
        ("fifo", rrq("fifo"), (5, 2)),
        ("directory", rrq("dir"), (5, 2)),
        ("missing", rrq("missing.cfg"), (5, 1)),
        ("write request", b"\x00\x02up.cfg\x00octet\x00", (5, 2)),
        ("mail mode", rrq("a.cfg", mode="mail"), (5, 4)),
    ]
    spec = [{"name": name, "hex": data.hex(), "wait": 0.3 if expected is None else 2, "first_only": bool(expected)}
            for name, data, expected in cases]
    results = env.bench("probe", "--host", host, "--cases", json.dumps(spec))
    for (name, _, expected), result in zip(cases, results, strict=True):
        replies = result["replies"]
        if expected is None:
            assert replies == [], name
        else:
            assert [_error(r) for r in replies] == [expected], (name, replies)
        env.healthy(host)
    # Bad option values are ignored, the file still comes (no OACK: nothing acceptable was asked).
    for options in ({"blksize": "abc"}, {"windowsize": "0"}, {"blksize": "1"}, {"tsize": "-1"}):
        results = env.bench("probe", "--host", host, "--cases", json.dumps(
            [{"name": "opt", "hex": rrq("a.cfg", options).hex(), "wait": 2, "first_only": True}]))
        assert [r["opcode"] for r in results[0]["replies"]] == [3], options  # DATA 1 straight away
        env.healthy(host)
    assert env.app.proc is not None and env.app.proc.poll() is None


@pytest.mark.parametrize("host", [V4, V6])
def test_error_from_stranger_during_transfer(env: Env, host: str) -> None:
    result = env.bench("stranger", "--host", host, "--file", "s20k.cfg")
    assert result["sha256"] == env.sha("s20k.cfg")
    # The bogus ACK got ERROR 5; the ERROR itself is not answered.
    assert [_error(r) for r in result["stranger"]] == [(5, 5)]
    env.healthy(host)


@pytest.mark.parametrize("host", [V4, V6])
@pytest.mark.parametrize("length", [5, 2000])
def test_error_from_client_ends_download(env: Env, host: str, length: int) -> None:
    # A download's socket reads short datagrams (an ACK, an ERROR cut after 475 bytes of message: adapter.py,
    # READ_BUFSIZE): an ERROR with a 2,000-byte message still ends the transfer, which then sends nothing more
    # (still running, it would retransmit DATA 1 after its 1 s timeout).
    result = env.bench("client-error", "--host", host, "--file", "s4k.cfg", "--length", str(length))
    assert (result["first"]["opcode"], result["first"]["number"], result["first"]["len"]) == (3, 1, 516)
    assert result["after"] == []
    env.healthy(host)


def test_thousand_concurrent_transfers(env: Env) -> None:
    files = {"y000000000000.boot": env.sha("y000000000000.boot")}
    result = env.bench("storm", "--host", V4, "--clients", "1000", "--files", json.dumps(files), "--options",
                       json.dumps({"blksize": "1428"}), "--limit", "60", timeout=90)
    assert result["failed"] == 0, result
    assert result["ok"] == 1000
    env.healthy()


def test_upload_enabled_by_reload(env: Env) -> None:
    # Last in the module: it turns uploads on (SIGHUP), which the tests above expect to be refused. Uploads go to
    # the one upload store (server.state_dir/uploads/<mac>/), shared with HTTP PUT and FTP STOR.
    text = BASE_CONFIG.format(root=env.root, state=env.app.state) + CONFIG + \
        "\n[provisioning]\nuploads = true\nupload_max_size = 30000\n"
    env.app.write_config(text)
    env.app.reload()
    env.app.wait_notify("READY=1")
    local = env.out / "phone.log"
    local.write_bytes(env.files["s20k.cfg"])
    name = "001565770010-boot.log"
    result = env.phone.run(["tftp", "-4", V4, "-m", "binary", "-c", "put", str(local), f"logs/{name}"], timeout=30)
    assert result.returncode == 0 and "Error" not in result.stdout, result.stdout
    store = env.app.state / "uploads"
    assert (store / "001565770010" / name).read_bytes() == env.files["s20k.cfg"]
    # netascii: tftp-hpa sends LF as CR LF and CR as CR NUL; the file is stored as it was on the phone (item 14).
    ascii_log = env.out / "text.log"
    ascii_log.write_bytes(env.files["text.cfg"][:20000])
    text_name = "001565770010-text.log"
    result = env.phone.run(["tftp", "-4", V4, "-m", "netascii", "-c", "put", str(ascii_log), f"logs/{text_name}"],
                           timeout=30)
    assert result.returncode == 0 and "Error" not in result.stdout, result.stdout
    assert (store / "001565770010" / text_name).read_bytes() == env.files["text.cfg"][:20000]
    # Never outside the store, never over a provisioned file, never a name phones do not upload, never over the cap.
    for target in ("../a.cfg", "/a.cfg/../x", "a.cfg", "notes.txt"):
        result = env.phone.run(["tftp", "-4", V4, "-m", "binary", "-c", "put", str(local), target], timeout=30)
        assert "Error code 2: access violation" in result.stdout, result.stdout  # tftp-hpa reports on stdout
    env.check("a.cfg", env.root / "a.cfg")
    big = env.out / "big.log"
    big.write_bytes(env.files["s20k.cfg"] * 2)
    result = env.phone.run(["tftp", "-4", V4, "-m", "binary", "-c", "put", str(big), "001565770010-big.log"],
                           timeout=30)
    assert "Error code 3: upload too large" in result.stdout, result.stdout
    assert sorted(p.name for p in store.rglob("*")) == ["001565770010", name, text_name]
    env.healthy()
