"""The provisioning model in the real daemon: rendered, encrypted per-phone files and their key files over TFTP,
HTTP, HTTPS and FTP with real clients (curl, tftp-hpa), byte-identical whichever protocol and client fetched them
and decrypting to the rendered text; only the phone holding the lease gets them (``<mac>_Security.enc`` is that
phone's file too); an inventory change applied by SIGHUP is served at once on every protocol, and one written to
disk is picked up without a signal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootstrapd.provisioning import yealink_aes
from tests.conftest import require_root, require_tools
from tests.lab.appliance import Appliance
from tests.lab.clients import udhcpc
from tests.lab.netns import Lab, Node
from tests.lab.tls import make_certificate

MAC = "001565770041"
SERVER = "10.77.0.1"
SCHEMES = ("tftp", "http", "https", "ftp")
TEMPLATE = ("#!version:1.0.0.1\naccount.1.user_name = {{ phone.extension }}\n"
            "account.1.password = {{ phone.password }}\n")
CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
url = "tftp://{{ipv4}}/"

[dhcp4]
enabled = true
range = "10.77.0.100-10.77.0.199"

[tftp]
enabled = true
rate_limit = 0

[http]
enabled = true
tls_cert = "{cert}"
tls_key = "{key}"

[ftp]
enabled = true
passive_ports = "30000-30009"

[provisioning]
inventory = "{inventory}"
watch_interval = 0.2
mac_files = "owner"

[provisioning.encrypt]
mac = true
"""


def rendered(extension: str, password: str) -> bytes:
    return f"#!version:1.0.0.1\naccount.1.user_name = {extension}\naccount.1.password = {password}\n".encode()


@dataclass
class Env:
    lab: Lab
    app: Appliance
    phone: Node  # holds bootstrapd's lease for MAC
    intruder: Node  # a static address, no lease
    inventory: Path
    out: Path
    ca: Path

    def get(self, name: str, scheme: str = "tftp", node: Node | None = None) -> bytes | None:
        """The file as curl fetched it (FTP: anonymous, passive), or None when it was refused."""
        dest = self.out / f"{scheme}-{name}"
        dest.unlink(missing_ok=True)
        result = (node or self.phone).run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert", str(self.ca),
                                           "-o", str(dest), f"{scheme}://{SERVER}/{name}"], timeout=40)
        if result.returncode != 0:
            assert not dest.exists() or dest.read_bytes() == b"", "a refused file was sent anyway"
            return None
        return dest.read_bytes()

    def curl(self, name: str, scheme: str = "tftp") -> bytes:
        data = self.get(name, scheme)
        assert data is not None, f"{scheme}://{SERVER}/{name} was refused"
        return data

    def tftp_hpa(self, name: str) -> bytes:
        dest = self.out / f"hpa-{name}"
        dest.unlink(missing_ok=True)
        result = self.phone.run(["tftp", "-m", "octet", SERVER, "-c", "get", name, str(dest)], timeout=30)
        assert result.returncode == 0 and dest.exists(), result.stderr + result.stdout
        return dest.read_bytes()

    def events(self) -> list[dict[str, Any]]:
        """The daemon's events so far (its --debug JSON log)."""
        records = []
        for line in self.app.log().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return [r for r in records if isinstance(r, dict)]

    def plain(self, scheme: str = "tftp") -> bytes:
        key = yealink_aes.decrypt_key(self.curl(f"{MAC}_Security.enc", scheme))
        return yealink_aes.decrypt(self.curl(f"{MAC}.cfg", scheme), key).rstrip(b" ")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_root()
    require_tools("curl", "tftp", "busybox")
    from tests.lab.netns import lab

    work = tmp_path_factory.mktemp("provisioning")
    work.chmod(0o755)
    inventory = work / "phones.csv"
    inventory.write_text(f"mac,model,extension,password\n{MAC},T46U,4001,first-Secret\n")
    ca, cert, key = make_certificate(work, [SERVER])
    with lab() as the_lab:
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone(mac=":".join(MAC[i:i + 2] for i in range(0, 12, 2)))
        intruder = the_lab.add_phone(ipv4="10.77.0.9/24")
        app = Appliance(ap, work, CONFIG.format(cert=cert, key=key, inventory=inventory))
        (app.root / "{mac}.cfg.j2").write_text(TEMPLATE)
        (app.root / "sip.cfg").write_text("#!version:1.0.0.1\nstatic.auto_provision.aes_key_in_file = 1\n")
        out = work / "out"
        out.mkdir()
        out.chmod(0o777)
        app.start("--debug", "--log-format", "json")  # every request's event in the log
        try:
            lease = udhcpc(phone, work, "phone")  # the phone's address is now leased to its MAC
            assert lease["ip"].startswith("10.77.0.1"), lease
            yield Env(the_lab, app, phone, intruder, inventory, out, ca)
        finally:
            app.stop()


def test_rendered_encrypted_file_and_key_file_over_every_protocol(env: Env) -> None:
    by_hpa = env.tftp_hpa(f"{MAC}.cfg")
    key_hpa = env.tftp_hpa(f"{MAC}_Security.enc")
    for scheme in SCHEMES:
        assert env.curl(f"{MAC}.cfg", scheme) == by_hpa, scheme
        assert env.curl(f"{MAC}_Security.enc", scheme) == key_hpa, scheme
    assert len(key_hpa) == 16
    expected = rendered("4001", "first-Secret")
    assert by_hpa != expected and b"first-Secret" not in by_hpa  # it left encrypted
    plain = yealink_aes.decrypt(by_hpa, yealink_aes.decrypt_key(key_hpa))
    assert plain == yealink_aes.pad(expected)
    for scheme in SCHEMES:
        assert env.curl("sip.cfg", scheme).startswith(b"#!version")  # common files stay plain (common = false)
    assert "first-Secret" not in env.app.log()  # nothing rendered is ever logged


def test_a_phones_rendered_file_and_key_file_go_only_to_that_phone(env: Env) -> None:
    # The owner rule: <mac>.cfg and <mac>_Security.enc (named after the phone) only to the address leased to it.
    for scheme in SCHEMES:
        assert env.get(f"{MAC}.cfg", scheme, env.intruder) is None, scheme
        assert env.get(f"{MAC}_Security.enc", scheme, env.intruder) is None, scheme
        assert env.get("sip.cfg", scheme, env.intruder) == env.curl("sip.cfg", scheme)  # common files to anyone
    # Refused for that reason, over every protocol (FTP: curl's SIZE gets the 550 before any RETR; a refused SIZE is
    # an ftp.transfer event like a refused RETR).
    refused = {(r["message"], r.get("file") or r.get("path")) for r in env.events() if r.get("outcome") == "not_owner"}
    assert {kind for kind, _ in refused} == {"tftp.transfer", "http.request", "ftp.transfer"}
    assert {name.rsplit("/", 1)[-1] for _, name in refused if name} == {f"{MAC}.cfg", f"{MAC}_Security.enc"}


def test_the_template_itself_is_not_served(env: Env) -> None:
    for scheme in SCHEMES:
        assert env.get("{mac}.cfg.j2", scheme) is None, scheme


def test_an_inventory_change_applied_by_sighup_is_served_at_once(env: Env) -> None:
    before = env.curl(f"{MAC}.cfg")
    assert env.curl(f"{MAC}.cfg") == before  # unchanged inputs: byte-identical
    env.inventory.write_text(f"mac,model,extension,password\n{MAC},T46U,4001,second-Secret\n")
    env.app.reload()
    env.app.wait_notify("READY=1", timeout=30)
    for scheme in SCHEMES:
        assert env.plain(scheme) == rendered("4001", "second-Secret"), scheme


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
