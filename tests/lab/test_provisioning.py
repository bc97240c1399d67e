"""The provisioning model in the real daemon: rendered, encrypted per-phone files and their key files over TFTP with
real clients (curl, tftp-hpa), byte-identical between clients and decrypting to the rendered text; an inventory
change applied by SIGHUP is served at once, and one written to disk is picked up without a signal.

HTTP joins these tests once the HTTP server is on main (the same files through the same tree).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootstrapd.provisioning import yealink_aes
from tests.conftest import require_root, require_tools
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import Lab, Node

MAC = "001565770041"
TEMPLATE = ("#!version:1.0.0.1\naccount.1.user_name = {{ phone.extension }}\n"
            "account.1.password = {{ phone.password }}\n")


def rendered(extension: str, password: str) -> bytes:
    return f"#!version:1.0.0.1\naccount.1.user_name = {extension}\naccount.1.password = {password}\n".encode()


@dataclass
class Env:
    lab: Lab
    app: Appliance
    phone: Node
    inventory: Path
    out: Path

    def curl(self, name: str) -> bytes:
        dest = self.out / f"curl-{name}"
        dest.unlink(missing_ok=True)
        result = self.phone.run(["curl", "-sS", "--max-time", "20", "-o", str(dest), f"tftp://10.77.0.1/{name}"])
        assert result.returncode == 0, result.stderr
        return dest.read_bytes()

    def tftp_hpa(self, name: str) -> bytes:
        dest = self.out / f"hpa-{name}"
        dest.unlink(missing_ok=True)
        result = self.phone.run(["tftp", "-m", "octet", "10.77.0.1", "-c", "get", name, str(dest)], timeout=30)
        assert result.returncode == 0 and dest.exists(), result.stderr + result.stdout
        return dest.read_bytes()

    def plain(self) -> bytes:
        key = yealink_aes.decrypt_key(self.curl(f"{MAC}_Security.enc"))
        return yealink_aes.decrypt(self.curl(f"{MAC}.cfg"), key).rstrip(b" ")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_root()
    require_tools("curl", "tftp")
    from tests.lab.netns import lab

    work = tmp_path_factory.mktemp("provisioning")
    work.chmod(0o755)
    inventory = work / "phones.csv"
    inventory.write_text(f"mac,model,extension,password\n{MAC},T46U,4001,first-Secret\n")
    config = BASE_CONFIG.format(root=work / "root", state=work / "state") + (
        f'[tftp]\nenabled = true\n[provisioning]\ninventory = "{inventory}"\nwatch_interval = 0.2\n'
        f'[provisioning.encrypt]\nmac = true\n')
    with lab() as the_lab:
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone(ipv4="10.77.0.41/24")
        app = Appliance(ap, work, config)
        (app.root / "{mac}.cfg.j2").write_text(TEMPLATE)
        (app.root / "sip.cfg").write_text("#!version:1.0.0.1\nstatic.auto_provision.aes_key_in_file = 1\n")
        out = work / "out"
        out.mkdir()
        out.chmod(0o777)
        app.start()
        try:
            yield Env(the_lab, app, phone, inventory, out)
        finally:
            app.stop()


def test_rendered_encrypted_file_and_key_file_over_tftp(env: Env) -> None:
    by_curl = env.curl(f"{MAC}.cfg")
    by_hpa = env.tftp_hpa(f"{MAC}.cfg")
    key_curl = env.curl(f"{MAC}_Security.enc")
    key_hpa = env.tftp_hpa(f"{MAC}_Security.enc")
    assert by_curl == by_hpa and key_curl == key_hpa and len(key_curl) == 16
    expected = rendered("4001", "first-Secret")
    assert by_curl != expected and b"first-Secret" not in by_curl  # it left encrypted
    plain = yealink_aes.decrypt(by_curl, yealink_aes.decrypt_key(key_curl))
    assert plain == yealink_aes.pad(expected)
    assert env.curl("sip.cfg").startswith(b"#!version")  # common files stay plain (common = false)
    assert "first-Secret" not in env.app.log()  # nothing rendered is ever logged


def test_the_template_itself_is_not_served(env: Env) -> None:
    result = env.phone.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "tftp://10.77.0.1/{mac}.cfg.j2"])
    assert result.returncode != 0


def test_an_inventory_change_applied_by_sighup_is_served_at_once(env: Env) -> None:
    before = env.curl(f"{MAC}.cfg")
    assert env.curl(f"{MAC}.cfg") == before  # unchanged inputs: byte-identical
    env.inventory.write_text(f"mac,model,extension,password\n{MAC},T46U,4001,second-Secret\n")
    env.app.reload()
    env.app.wait_notify("READY=1", timeout=30)
    assert env.plain() == rendered("4001", "second-Secret")


def test_an_inventory_change_on_disk_is_picked_up_without_a_signal(env: Env) -> None:
    env.inventory.write_text(f"mac,model,extension,password\n{MAC},T46U,4002,third-Secret\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if env.plain() == rendered("4002", "third-Secret"):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the new inventory was not served within 60 s")


def test_a_broken_inventory_keeps_the_files_in_force(env: Env) -> None:
    good = env.plain()
    env.inventory.write_text(f"mac,model,extension,password\n{MAC},T46U,4003,\"bad\nline\"\n")
    env.app.reload()
    env.app.wait_notify("READY=1", timeout=30)
    deadline = time.monotonic() + 30
    while "line break" not in env.app.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "line break or control character" in env.app.log()
    assert env.plain() == good
