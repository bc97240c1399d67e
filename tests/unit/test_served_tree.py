"""The served tree: rendered overlay, AES transform, key files and key store, tested directly; and the offline
``encrypt``/``decrypt`` commands round-tripping rendered files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bootstrapd.cli import main
from bootstrapd.config import Settings, loads
from bootstrapd.configfile import ConfigError
from bootstrapd.provisioning import yealink_aes
from bootstrapd.provisioning.overlays import SECRET_FILE, KeyStore, KeyStoreError
from bootstrapd.provisioning.resolver import Refused, Resolver
from bootstrapd.provisioning.settings import EncryptSettings
from bootstrapd.provisioning.tree import Provisioning, ServedTree

MAC = "001565000001"
TEMPLATE = "#!version:1.0.0.1\naccount.1.password = {{ phone.password }}\n"


def settings_for(tmp_path: Path, encrypt: str = "mac = true") -> Settings:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / "{mac}.cfg.j2").write_text(TEMPLATE)
    (root / "sip.cfg").write_text("#!version:1.0.0.1\na = 1\n")
    (root / "y000000000000.boot").write_text("#!version:1.0.0.1\n")
    (tmp_path / "phones.csv").write_text(f"mac,model,password\n{MAC},T46U,pw-1\n")
    text = (f'[server]\ninterface = "eth1"\nroot = "{root}"\nstate_dir = "{tmp_path / "state"}"\n'
            f'[dhcp4]\nenabled = false\n[tftp]\nenabled = true\n'
            f'[provisioning]\ninventory = "phones.csv"\n[provisioning.encrypt]\n{encrypt}\n')
    return loads(text, str(tmp_path / "bootstrapd.toml"))


def served(tmp_path: Path, encrypt: str = "mac = true") -> ServedTree:
    settings = settings_for(tmp_path, encrypt)
    provisioning = Provisioning(settings)
    assert provisioning.rendered.refresh() is None
    return ServedTree(Resolver(settings.server.root), provisioning)


def test_rendered_mac_file_leaves_encrypted_with_its_key_file_beside(tmp_path: Path) -> None:
    tree = served(tmp_path)
    cfg = tree.lookup(f"{MAC}.cfg")
    assert cfg.encrypted and cfg.origin == "rendered:{mac}.cfg.j2"
    key = yealink_aes.decrypt_key(tree.lookup(f"{MAC}_Security.enc").data)
    assert yealink_aes.decrypt(cfg.data, key).rstrip(b" ") == b"#!version:1.0.0.1\naccount.1.password = pw-1\n"
    assert not tree.lookup("sip.cfg").encrypted  # common files stay plain with common = false
    with pytest.raises(Refused):
        tree.lookup("sip_Security.enc")
    with pytest.raises(Refused):
        tree.lookup("{mac}.cfg.j2")  # template sources are never served
    opened = tree.open(f"/{MAC}.cfg")  # the TFTP interface, leading slash and all
    assert opened.data == cfg.data and opened.size == len(cfg.data)
    assert tree.open("y000000000000.boot").path.endswith("y000000000000.boot")  # static: the resolver's own


def test_byte_identical_across_restarts_and_the_secret_is_0600(tmp_path: Path) -> None:
    first = served(tmp_path).lookup(f"{MAC}.cfg").data
    secret = tmp_path / "state" / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert served(tmp_path).lookup(f"{MAC}.cfg").data == first  # a new process: same secret, same bytes
    assert secret.read_text().strip() not in first.decode("latin-1")


def test_per_file_keys_differ_and_given_keys_apply_per_class(tmp_path: Path) -> None:
    keys = KeyStore(EncryptSettings(common=True, mac=True), tmp_path)
    assert keys.key_for("a.cfg") != keys.key_for("b.cfg") and keys.key_for("001565000001.cfg")
    assert keys.key_for("x.boot") is None and keys.key_for("001565000001-local.cfg") is None
    given = KeyStore(EncryptSettings(common=True, mac=True, common_key="A" * 16, mac_key="B" * 16), tmp_path / "n")
    assert given.key_for("a.cfg") == "A" * 16 and given.key_for("001565000001.cfg") == "B" * 16
    assert not (tmp_path / "n").exists()  # no secret needed, none created


def test_an_unsafe_secret_file_is_refused(tmp_path: Path) -> None:
    KeyStore(EncryptSettings(mac=True), tmp_path)
    (tmp_path / SECRET_FILE).chmod(0o644)
    with pytest.raises(KeyStoreError, match="readable by others"):
        KeyStore(EncryptSettings(mac=True), tmp_path)


def test_check_and_explain_create_no_secret(tmp_path: Path) -> None:
    keys = KeyStore(EncryptSettings(mac=True), tmp_path / "state", create=False)
    assert keys.ephemeral and not (tmp_path / "state").exists()


@pytest.mark.parametrize(("encrypt", "message"), [
    ('mac = true\nmac_key = "short"', "provisioning.encrypt.mac_key: an AES key must be 16 characters"),
    ('mac = true\nkey_files = false', "is required with key_files = false"),
    ('common = true\ncommon_key = "ljB7jiDIQQ7XD88!"', r"character\(s\) outside"),
])
def test_bad_encryption_settings(tmp_path: Path, encrypt: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        settings_for(tmp_path, encrypt)
    assert "ljB7" not in str(info.value)


def test_an_inventory_inside_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ConfigError, match=r"inside server\.root"):
        loads(f'[server]\ninterface = "eth1"\nroot = "{root}"\n[dhcp4]\nenabled = false\n'
              f'[provisioning]\ninventory = "root/phones.csv"\n', str(tmp_path / "b.toml"))


def test_encrypt_and_decrypt_round_trip_a_rendered_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = served(tmp_path, "")
    plain = tree.lookup(f"{MAC}.cfg").data
    (tmp_path / f"{MAC}.cfg").write_bytes(plain)
    out = tmp_path / "enc"
    assert main(["encrypt", "--out-dir", str(out), str(tmp_path / f"{MAC}.cfg")]) == 0
    encrypted = (out / f"{MAC}.cfg").read_bytes()
    assert encrypted != plain and stat.S_IMODE((out / f"{MAC}_Security.enc").stat().st_mode) == 0o600
    back = tmp_path / "dec"
    assert main(["decrypt", "--out-dir", str(back), str(out / f"{MAC}.cfg")]) == 0
    assert (back / f"{MAC}.cfg").read_bytes() == yealink_aes.pad(plain)
    assert main(["decrypt", "--strip", "--stdout", "--key-file", str(out / f"{MAC}_Security.enc"),
                 str(out / f"{MAC}.cfg")]) == 0
    assert capsys.readouterr().out.endswith(plain.decode())


def test_encrypt_with_a_given_key_matches_the_vector(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = Path(__file__).resolve().parents[1] / "data" / "yealink-aes"
    src = tmp_path / "encrypted.cfg"
    src.write_bytes((data / "expected-plain.cfg").read_bytes())
    assert main(["encrypt", "--key", "ljB7jiDIQQ7XD888", "--out-dir", str(tmp_path / "o"), str(src)]) == 0
    assert (tmp_path / "o" / "encrypted.cfg").read_bytes() == (data / "encrypted.cfg").read_bytes()
    assert (tmp_path / "o" / "encrypted_Security.enc").read_bytes() == (data / "encrypted_Security.enc").read_bytes()
    assert main(["decrypt", "--show-key", "--key-file", str(data / "encrypted_Security.enc")]) == 0
    assert capsys.readouterr().out.strip().endswith("ljB7jiDIQQ7XD888")
    assert main(["encrypt", "--key", "ljB7jiDIQQ7XD888", "--write-key-file", str(tmp_path / "k.enc")]) == 0
    assert (tmp_path / "k.enc").read_bytes() == (data / "encrypted_Security.enc").read_bytes()


def test_encrypt_and_decrypt_usage_errors(tmp_path: Path) -> None:
    assert main(["encrypt", "--key", "short", "x"]) == 2
    assert main(["decrypt", str(tmp_path / "missing.cfg")]) == 1
    assert main(["encrypt", "--out-dir", str(tmp_path), str(tmp_path / "same.cfg")]) == 1
