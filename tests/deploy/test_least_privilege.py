"""Least privilege, proven: ``bootstrapd run`` as an unprivileged user with exactly the unit's capabilities serves
real clients on every service; without one of them it refuses to start, naming what is missing.

The daemon is the one ``scripts/install.sh`` installs (staged, from Debian's python3), started in the lab's
appliance namespace through ``setpriv`` with a uid that has no account (as the unit's DynamicUser= has none on
disk), no supplementary groups, no_new_privs, and the capabilities and bounding set parsed from
``systemd/bootstrapd.service`` itself, so the test and the unit cannot drift apart. The configuration is
``configs/lab.toml`` (every service on) plus HTTPS with a certificate made by the test, its key handed over as the
unit does it: ``tls_key = "credential:tls.key"`` in a ``$CREDENTIALS_DIRECTORY`` readable by the daemon's user only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from bootstrapd import config, privileges
from tests.conftest import require_tools
from tests.deploy.unitfile import REPO, UNIT, capabilities, setpriv
from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient, udhcpc
from tests.lab.netns import Lab
from tests.lab.sipphone import body, first_notify, run_phone
from tests.lab.tls import make_certificate

pytestmark = pytest.mark.lab

LAB_CONFIG = (REPO / "configs" / "lab.toml").read_text()
CONFIG = LAB_CONFIG.replace('root = "/srv/bootstrapd"', 'root = "@ROOT@"').replace(
    'state_dir = "/var/lib/bootstrapd"', 'state_dir = "@STATE@"')
assert "\n[http]\n" in CONFIG
PHONE_MAC = "001565770001"
DHCLIENT_CONF = """option custom-160 code 160 = text;
request subnet-mask, tftp-server-name, custom-160;
also request dhcp6.bootfile-url;
"""


def _free_uid() -> int:
    """A uid in systemd's DynamicUser= range that no account and no process uses."""
    used = {int(line.split()[0]) for line in os.popen("ps -eo uid=").read().splitlines() if line.strip()}
    for uid in range(61875, 65519):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in used:
                return uid
    raise AssertionError("no free uid")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the unprivileged daemon can reach (pytest's temporary folders are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="bootstrapd-lp-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _appliance(lab: Lab, workdir: Path, uid: int) -> tuple[Appliance, dict[str, str]]:
    """The appliance, and the environment systemd would give the daemon: ``$CREDENTIALS_DIRECTORY`` holding the
    HTTPS key (LoadCredential=), owned by the daemon's user, 0500/0400 as systemd makes it."""
    node = lab.add_appliance()
    _, cert, key = make_certificate(workdir, ["10.77.0.1", "fd77::1"])
    cert.chmod(0o644)
    credentials = workdir / "credentials"
    credentials.mkdir()
    shutil.copy(key, credentials / "tls.key")
    key.unlink()  # only the credential copy is left, readable by the daemon's user alone
    os.chown(credentials / "tls.key", uid, uid)
    (credentials / "tls.key").chmod(0o400)
    os.chown(credentials, uid, uid)
    credentials.chmod(0o500)
    app = Appliance(node, workdir, CONFIG.replace(
        "\n[http]\n", f'\n[http]\ntls_cert = "{cert}"\ntls_key = "credential:tls.key"\n'))
    shutil.copytree(REPO / "configs" / "tree", app.root, dirs_exist_ok=True)
    shutil.copy(REPO / "configs" / "phones.csv", workdir / "phones.csv")  # the inventory, beside the config file
    app.state.mkdir()
    os.chown(app.state, uid, uid)  # what StateDirectory= does for the dynamic user
    app.state.chmod(0o750)
    return app, {"CREDENTIALS_DIRECTORY": str(credentials)}


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _mask(names: list[str]) -> int:
    return sum(1 << privileges.CAPABILITY_BITS[name] for name in names)


def test_the_units_privileges_serve_every_service(lab: Lab, shared_dir: Path, staged: Path) -> None:
    require_tools("setpriv", "dhclient", "busybox", "sipp", "curl", "lftp")
    uid = _free_uid()
    unit = UNIT.read_text()
    app, environment = _appliance(lab, shared_dir, uid)
    phone = lab.add_phone(mac="00:15:65:77:00:01")
    yealink = lab.add_phone(mac="80:5e:c0:77:00:02")
    pnp_phone = lab.add_phone(ipv4="10.77.0.21/24")
    for node in (app.node, phone):
        lab.wait_link_local(node)
    app.start(command=[*setpriv(unit, uid, uid), str(staged / "opt/bootstrapd/bin/bootstrapd")], env=environment)
    assert app.proc is not None

    # The daemon runs as that uid with the unit's capabilities and nothing else.
    status = _status(app.proc.pid)
    assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(uid)] * 4
    assert status["Groups"] == ""
    granted = _mask(capabilities(unit))
    assert int(status["CapEff"], 16) == granted and int(status["CapPrm"], 16) == granted
    assert int(status["CapBnd"], 16) == _mask(capabilities(unit, "CapabilityBoundingSet"))
    assert status["NoNewPrivs"] == "1"

    # DHCPv4: dhclient (unicast OFFER/ACK: the packet socket needs CAP_NET_RAW) and udhcpc as a Yealink.
    got = Dhclient(phone, shared_dir, "v4", DHCLIENT_CONF).obtain()
    assert IPv4Address("10.77.0.100") <= IPv4Address(got["new_ip_address"]) <= IPv4Address("10.77.0.199")
    assert got["new_tftp_server_name"] == "tftp://10.77.0.1/"
    assert got["new_custom_160"] == "http://10.77.0.1/"
    bound = udhcpc(yealink, shared_dir, "yealink", "-V", "yealink", "-O", "43")
    assert bytes.fromhex(bound["opt43"]).decode() == "http://10.77.0.1/yealink/"

    # DHCPv6: dhclient -6, an address of the range and option 59.
    got6 = Dhclient(phone, shared_dir, "v6", DHCLIENT_CONF).obtain("-6")
    assert IPv6Address("fd77::100") <= IPv6Address(got6["new_ip6_address"]) <= IPv6Address("fd77::1ff")
    assert got6["new_dhcp6_bootfile_url"] == "tftp://[fd77::1]/"

    # SIP PnP: sipp's Yealink SUBSCRIBE to 224.0.1.75 gets the 200 and the NOTIFY with pnp.url.
    code, messages, output = run_phone(pnp_phone, "yealink-w52p", shared_dir)
    assert code == 0, output
    assert body(first_notify(messages)) == "tftp://10.77.0.1/"

    # TFTP over IPv4 and IPv6, byte for byte.
    for url, name in (("tftp://10.77.0.1/sip.cfg", "sip.cfg"), ("tftp://[fd77::1]/y000000000000.boot",
                                                                     "y000000000000.boot")):
        out = shared_dir / f"got-{name}"
        result = phone.run(["curl", "-sS", "-g", "--max-time", "20", "-o", str(out), url])
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == (REPO / "configs" / "tree" / name).read_bytes()

    # HTTP (80) and HTTPS (443, the key read from the credential), IPv4 and IPv6, byte for byte; FTP (21) in
    # passive mode (the range above 1024 needs no capability) with curl and lftp.
    ca = shared_dir / "ca.pem"
    for url, name in (("http://10.77.0.1/sip.cfg", "sip.cfg"), ("https://10.77.0.1/sip.cfg", "sip.cfg"),
                      ("https://[fd77::1]/y000000000000.boot", "y000000000000.boot"),
                      ("ftp://10.77.0.1/sip.cfg", "sip.cfg")):
        out = shared_dir / "got"
        out.unlink(missing_ok=True)
        result = phone.run(["curl", "-sS", "-g", "--fail", "--max-time", "20", "--cacert", str(ca), "-o", str(out),
                            url])
        assert result.returncode == 0, (url, result.stderr)
        assert out.read_bytes() == (REPO / "configs" / "tree" / name).read_bytes(), url
    out = shared_dir / "lftp-got"
    result = phone.run(["lftp", "-c", "set ftp:passive-mode on; set net:max-retries 1; set net:timeout 10; "
                        f"set cmd:fail-exit yes; open -u anonymous,phone@ ftp://10.77.0.1; "
                        f"get y000000000000.boot -o {out}"], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == (REPO / "configs" / "tree" / "y000000000000.boot").read_bytes()
    # The phone's own rendered, encrypted file over HTTPS, and an upload of its own (the phone holds the lease):
    # written into the state directory, as the unit's user.
    result = phone.run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert", str(ca), "-o", "/dev/null",
                        f"https://10.77.0.1/{PHONE_MAC}.cfg"])
    assert result.returncode == 0, result.stderr
    local = shared_dir / "local.cfg"
    local.write_text("#!version:1.0.0.1\nlang.gui = English\n")
    local.chmod(0o644)
    result = phone.run(["curl", "-sS", "--fail", "--max-time", "20", "-T", str(local),
                        f"http://10.77.0.1/{PHONE_MAC}-local.cfg"])
    assert result.returncode == 0, result.stderr
    stored = app.state / "uploads" / PHONE_MAC / f"{PHONE_MAC}-local.cfg"
    assert stored.read_bytes() == local.read_bytes() and stored.stat().st_uid == uid

    assert app.stop() == 0
    assert "running as root" not in app.log()
    # State written as the unit's user would: the lease database belongs to it.
    assert (app.state / "leases.sqlite3").stat().st_uid == uid


@pytest.mark.parametrize("dropped", capabilities(UNIT.read_text()))
def test_without_one_capability_it_refuses_to_start_naming_it(lab: Lab, shared_dir: Path, staged: Path,
                                                              dropped: str) -> None:
    require_tools("setpriv")
    uid = _free_uid()
    app, environment = _appliance(lab, shared_dir, uid)
    app.start(command=[*setpriv(UNIT.read_text(), uid, uid, drop=dropped),
                       str(staged / "opt/bootstrapd/bin/bootstrapd")], expect_ready=False, env=environment)
    assert app.proc is not None
    assert app.proc.wait(timeout=60) == 2
    log = app.log()
    assert f"cannot start: missing capability {dropped}: " in log
    expected = [need for need in privileges.needs(config.load(app.config)) if need.capability == dropped]
    assert expected
    for need in expected:  # each service that needs it, and what for
        assert str(need) in log
    # Refused before serving anything: systemd never heard READY=1.
    with pytest.raises(RuntimeError, match="exited with 2"):
        app.wait_notify("READY=1", timeout=5)


def test_run_as_root_it_warns_once_how_the_unit_runs_it(lab: Lab, shared_dir: Path, staged: Path) -> None:
    app, environment = _appliance(lab, shared_dir, 0)
    app.start(command=[str(staged / "opt/bootstrapd/bin/bootstrapd")], env=environment)
    assert app.stop() == 0
    warnings = [line for line in app.log().splitlines() if "running as root:" in line]
    assert len(warnings) == 1, app.log()
    assert ("systemd/bootstrapd.service runs bootstrapd as an unprivileged dynamic user with only "
            "CAP_NET_BIND_SERVICE CAP_NET_RAW") in warnings[0]
    assert "WARNING" in warnings[0]
