"""[[auth]] passwords (scrypt), the upload store (atomic, capped, thread-safe), and their configuration errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bootstrapd.config import ConfigError, loads
from bootstrapd.provisioning.auth import AuthEntry, AuthTable, check_password, hash_password, parse_hash
from bootstrapd.provisioning.paths import Reason, Refused
from bootstrapd.provisioning.uploads import FILE_COST, UploadName, UploadStore, compile_pattern


def fast(password: str) -> str:
    return hash_password(password, n=1 << 4, r=1, p=1)  # cheap parameters for tests; the command uses 2^14, 8, 1


def test_scrypt_hashes() -> None:
    stored = fast("s3cret")
    assert stored.startswith("scrypt:16:1:1:") and "s3cret" not in stored
    assert check_password(stored, "s3cret") and not check_password(stored, "s3cret ")
    assert fast("s3cret") != stored  # salted
    assert check_password("plain", "plain") and not check_password("plain", "Plain")
    for bad in ("scrypt:16:1:1:!!:AAAA", "scrypt:15:1:1:AAAA:AAAAAAAAAAAAAAAAAAAAAA==", "scrypt:16:1", "md5:x"):
        with pytest.raises(ValueError):
            parse_hash(bad)


def test_auth_table_remembers_outcomes() -> None:
    entry = AuthEntry(("T46U_1",), "floor3", fast("pw"))
    table = AuthTable((entry, AuthEntry(("T46U_1", "inner"), "inner", "x")))
    assert table.entry_for(("T46U_1", "a.cfg")) == entry
    inner = table.entry_for(("T46U_1", "inner", "a.cfg"))
    assert inner is not None and inner.user == "inner"
    assert table.entry_for(("T46U_10", "a.cfg")) is None and table.entry_for(("T46U",)) is None
    assert table.known("floor3", "pw") is None
    assert table.verify("floor3", "pw") == entry and table.known("floor3", "pw") is True
    assert table.verify("floor3", "nope") is None and table.known("floor3", "nope") is False
    assert table.verify("nobody", "pw") is None
    assert "pw" not in repr(entry) and entry.password not in repr(entry)  # secrets are never logged


def test_patterns() -> None:
    pattern = compile_pattern("{mac}*.log")
    assert pattern.fullmatch("001565AABBCC-boot.log") and not pattern.fullmatch("x001565aabbcc.log")
    for bad in ("*.log", "{mac}/x.log", "{mac}{mac}.cfg"):
        with pytest.raises(ValueError):
            compile_pattern(bad)


def test_store_is_atomic_and_capped(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "uploads", max_size=10_000, total_max_size=3 * FILE_COST + 6000)
    name = UploadName("001565aa0001", "001565aa0001-local.cfg")
    path = Path(store.store(name, b"1" * 6000))
    assert path.read_bytes() == b"1" * 6000
    store.store(name, b"2" * 6000)  # replacing costs nothing more
    assert path.read_bytes() == b"2" * 6000 and [p.name for p in path.parent.iterdir()] == [path.name]
    other = UploadName("001565aa0002", "001565aa0002-local.cfg")
    with pytest.raises(Refused) as info:
        store.store(other, b"3" * 6000)
    assert info.value.reason == Reason.TOO_LARGE
    with pytest.raises(Refused):
        store.store(name, b"x" * 10_001)
    path.unlink()  # the operator makes room
    store.store(other, b"3" * 6000)
    assert store.find("001565AA0002-LOCAL.CFG") is not None and store.find("001565aa0001-local.cfg") is None


def test_store_from_threads(tmp_path: Path) -> None:
    store = UploadStore(tmp_path / "uploads", max_size=1000, total_max_size=20 * FILE_COST + 4 * FILE_COST)
    errors: list[BaseException] = []

    def upload(n: int) -> None:
        try:
            store.store(UploadName(f"0015650000{n:02x}", f"0015650000{n:02x}-local.cfg"), b"x" * 100)
        except Refused:
            pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    files = list((tmp_path / "uploads").rglob("*-local.cfg"))
    assert 1 <= len(files) <= 12  # each phone costs a folder and a file: the cap held under concurrency
    assert not list((tmp_path / "uploads").rglob("*.part"))


BASE = '[server]\ninterface = "eth1"\n[dhcp4]\nenabled = false\n'


@pytest.mark.parametrize(("extra", "key", "message"), [
    ('[provisioning]\nmac_files = "mine"\n', "provisioning.mac_files", 'must be "owner" or "any"'),
    ('[provisioning]\nupload_patterns = ["*.cfg"]\n', "provisioning.upload_patterns", "{mac}"),
    ('[[auth]]\npath = "/"\nuser = "u"\npassword = "p"\n', "auth[0].path", "not the root"),
    ('[[auth]]\npath = "/../x/"\nuser = "u"\npassword = "p"\n', "auth[0].path", "escape"),
    ('[[auth]]\npath = "/a/"\nuser = "a b"\npassword = "p"\n', "auth[0].user", "without spaces"),
    ('[[auth]]\npath = "/a/"\nuser = "anonymous"\npassword = "p"\n', "auth[0].user", "anonymous"),
    ('[[auth]]\npath = "/a/"\nuser = "u"\npassword = "scrypt:1:2"\n', "auth[0].password", "scrypt:N"),
    ('[[auth]]\npath = "/a/"\nuser = "u"\npassword = "p"\n[[auth]]\npath = "/b/"\nuser = "u"\npassword = "q"\n',
     "auth[1].user", "already"),
    ('[tftp]\nupload_dir = "uploads"\n', "tftp.upload_dir", "[provisioning] uploads = true"),
    ('[tftp]\nupload_dir_max_size = 5\n', "tftp.upload_dir_max_size", "provisioning.upload_total_max_size"),
    ('[http]\ntls_cert = "/nonexistent.pem"\ntls_key = "/nonexistent.key"\n', "http.tls_cert", "no such file"),
    ('[http]\ntls_cert = "/etc/hostname"\n', "http.tls_key", "go together"),
    ('[ftp]\npassive_ports = "30000"\n', "ftp.passive_ports", "range"),
])
def test_errors_name_file_line_and_key(extra: str, key: str, message: str) -> None:
    text = BASE + extra
    with pytest.raises(ConfigError) as info:
        loads(text, "f.toml")
    assert info.value.key == key and message in info.value.message, info.value
    assert info.value.line is not None and info.value.line > 4


def test_defaults_and_warnings() -> None:
    settings = loads(BASE + '[[auth]]\npath = "T46U_1"\nuser = "floor3"\npassword = "plain"\n', "f.toml")
    assert settings.provisioning.mac_files == "any"  # no DHCP of ours: nobody to own a MAC
    assert settings.auth[0].prefix == ("T46U_1",)
    assert settings.warnings == ("f.toml:8: auth[0].password: is plain text: store a hash from "
                                 "`bootstrapd hash-password` instead",)
    with_dhcp = loads('[server]\ninterface = "eth1"\n[dhcp4]\nrange = "10.0.0.10-10.0.0.20"\n')
    assert with_dhcp.provisioning.mac_files == "owner" and with_dhcp.warnings == ()
    assert loads(BASE + "[provisioning]\nupload_max_size = 5000\n").tftp.upload_max_size == 5000


def test_hash_password_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "bootstrapd", "hash-password"], input="floor3-pw\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert check_password(stored, "floor3-pw") and "floor3-pw" not in stored
    empty = subprocess.run([sys.executable, "-m", "bootstrapd", "hash-password"], input="\n", capture_output=True,
                           text=True, timeout=60)
    assert empty.returncode == 2
    config = tmp_path / "b.toml"
    config.write_text(BASE + f'[[auth]]\npath = "/a/"\nuser = "u"\npassword = "{stored}"\n[[auth]]\npath = "/b/"\n'
                             'user = "v"\npassword = "plain"\n')
    check = subprocess.run([sys.executable, "-m", "bootstrapd", "check-config", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "OK" in check.stdout
    assert "auth[1].password: is plain text" in check.stderr and "auth[0]" not in check.stderr


def test_uploads_received_at_once_are_capped(tmp_path: Path) -> None:
    # Each HTTP/FTP upload is held in memory until stored: the number received at once is what bounds that memory.
    store = UploadStore(tmp_path / "uploads", max_receiving=2)
    assert store.begin() and store.begin() and not store.begin()
    store.end()
    assert store.begin() and store.receiving == 2
    assert loads(BASE + "[provisioning]\nmax_uploads = 3\n").provisioning.max_uploads == 3
