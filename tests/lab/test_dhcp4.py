"""DHCPv4 against real clients in the namespace lab: dhclient, busybox udhcpc, perfdhcp, and hostile datagrams."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import dhcppython.packet
import pytest

from tests.conftest import require_tools
from tests.lab import perfdhcp
from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient, udhcpc
from tests.lab.netns import Lab

# Every test runs against both store backends (SQLite, and PostgreSQL from the session's server), so the two
# cannot drift.
pytestmark = pytest.mark.usefixtures("store_backend")

CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
url = "tftp://{ipv4}/"

[dhcp4]
range = "10.77.0.100-10.77.0.199"
lease_time = 3600
router = "10.77.0.1"
dns = ["10.77.0.1"]

[dhcp4.options]
66 = "tftp://10.77.0.1/boot/"
160 = "http://10.77.0.1/p160/"

[dhcp4.class.yealink.options]
43 = "http://10.77.0.1/yealink43/"
160 = "http://10.77.0.1/yealink160/"

[[dhcp4.host]]
mac = "00:15:65:aa:bb:cc"
address = "10.77.0.50"
"""

DHCLIENT_CONF = """
option custom-160 code 160 = text;
request subnet-mask, routers, domain-name-servers, tftp-server-name, custom-160;
"""


@pytest.fixture
def appliance(lab: Lab, workdir: Path, store_backend: str) -> Iterator[Appliance]:
    require_tools("dhclient", "busybox")
    node = lab.add_appliance()
    app = Appliance(node, workdir, CONFIG)
    app.start()
    yield app
    if app.proc and app.proc.poll() is None:
        app.stop()


def leases(app: Appliance, *extra: str) -> list[dict[str, object]]:
    result = app.cli("leases", "--config", str(app.config), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["dhcp4"])


def in_range(address: str) -> bool:
    return IPv4Address("10.77.0.100") <= IPv4Address(address) <= IPv4Address("10.77.0.199")


def test_dhclient_gets_address_and_provisioning_options(lab: Lab, appliance: Appliance, workdir: Path) -> None:
    phone = lab.add_phone(mac="02:10:00:00:00:01")
    got = Dhclient(phone, workdir, "dh", DHCLIENT_CONF).obtain()
    assert in_range(got["new_ip_address"])
    assert got["new_tftp_server_name"] == "tftp://10.77.0.1/boot/"
    assert got["new_custom_160"] == "http://10.77.0.1/p160/"
    assert got["new_routers"] == "10.77.0.1"
    assert got["new_dhcp_server_identifier"] == "10.77.0.1"
    assert got["new_dhcp_lease_time"] == "3600"
    [lease] = leases(appliance)
    assert lease["mac"] == "02:10:00:00:00:01" and lease["address"] == got["new_ip_address"]


def test_udhcpc_yealink_gets_the_class_options(lab: Lab, appliance: Appliance, workdir: Path) -> None:
    phone = lab.add_phone(mac="80:5e:c0:12:34:56")
    got = udhcpc(phone, workdir, "yl", "-V", "yealink", "-O", "43", "-O", "160")
    assert in_range(got["ip"])
    assert bytes.fromhex(got["opt43"]) == b"http://10.77.0.1/yealink43/"
    assert bytes.fromhex(got["opt160"]) == b"http://10.77.0.1/yealink160/"  # the class overrides the global 160
    # busybox reports option 66 as "bad" because it holds a URL, not a host name: a client quirk (protocols.md 4).
    assert got.get("tftp") in ("bad", "tftp://10.77.0.1/boot/")
    [lease] = leases(appliance)
    assert lease["vendor_class"] == "yealink"


def test_non_yealink_udhcpc_gets_only_global_options(lab: Lab, appliance: Appliance, workdir: Path) -> None:
    phone = lab.add_phone(mac="02:10:00:00:00:02")
    got = udhcpc(phone, workdir, "other", "-V", "acme", "-O", "43", "-O", "160")
    assert "opt43" not in got
    assert bytes.fromhex(got["opt160"]) == b"http://10.77.0.1/p160/"


def test_reservation_is_honoured(lab: Lab, appliance: Appliance, workdir: Path) -> None:
    phone = lab.add_phone(mac="00:15:65:aa:bb:cc")
    got = Dhclient(phone, workdir, "res", DHCLIENT_CONF).obtain()
    assert got["new_ip_address"] == "10.77.0.50"


def test_release_frees_the_address(lab: Lab, appliance: Appliance, workdir: Path) -> None:
    phone = lab.add_phone(mac="02:10:00:00:00:03")
    client = Dhclient(phone, workdir, "rel", DHCLIENT_CONF)
    address = client.obtain()["new_ip_address"]
    assert [x["address"] for x in leases(appliance)] == [address]
    client.release()
    assert leases(appliance) == []
    [entry] = leases(appliance, "--all")
    assert entry["address"] == address and entry["state"] == "released"


def test_decline_quarantines_the_address(lab: Lab, workdir: Path) -> None:
    """udhcpc -a ARP-probes the offered address; a squatter answers; udhcpc DECLINEs; nobody gets it for a while."""
    require_tools("busybox")
    node = lab.add_appliance()
    app = Appliance(node, workdir, CONFIG.replace("10.77.0.100-10.77.0.199", "10.77.0.100-10.77.0.101"))
    app.start()
    lab.add_phone(mac="02:10:00:00:00:99", ipv4="10.77.0.100/24")  # the squatter
    phone = lab.add_phone(mac="02:10:00:00:00:04")
    got = udhcpc(phone, workdir, "dec", "-a", "-t", "6")
    assert got["ip"] == "10.77.0.101"
    states = {x["address"]: x["state"] for x in leases(app, "--all")}
    assert states == {"10.77.0.100": "declined", "10.77.0.101": "active"}
    third = lab.add_phone(mac="02:10:00:00:00:05")
    with pytest.raises(AssertionError):  # pool: one address declined, one taken: nothing to offer
        udhcpc(third, workdir, "none", "-t", "2")
    assert "pool exhausted" in app.log()
    app.stop()


def test_sighup_reload_keeps_leases_and_rejects_a_bad_file(lab: Lab, appliance: Appliance, workdir: Path) -> None:
    phone = lab.add_phone(mac="02:10:00:00:00:06")
    client = Dhclient(phone, workdir, "hup", DHCLIENT_CONF)
    first = client.obtain()
    client.stop_daemon()
    good = CONFIG.replace("tftp://10.77.0.1/boot/", "tftp://10.77.0.1/reloaded/")
    appliance.write_config(good.replace("lease_time = 3600", "lease_time = nope"))
    appliance.reload()
    appliance.wait_notify("READY=1")
    assert re.search(r"reload rejected.*dhcp4.lease_time|reload rejected.*line \d+", appliance.log())
    appliance.write_config(good)
    appliance.reload()
    appliance.wait_notify("READY=1")
    assert "configuration reloaded" in appliance.log()
    again = client.obtain()
    assert again["new_ip_address"] == first["new_ip_address"]
    assert again["new_tftp_server_name"] == "tftp://10.77.0.1/reloaded/"


def test_kill_9_keeps_every_acked_lease(lab: Lab, appliance: Appliance, workdir: Path) -> None:
    """ACK a batch, kill -9, restart: every ACKed lease is there, renewals keep their address, no address reissued."""
    phones = [lab.add_phone(mac=f"02:20:00:00:00:{n:02x}") for n in range(1, 7)]
    clients = [Dhclient(p, workdir, f"k{n}", DHCLIENT_CONF) for n, p in enumerate(phones)]
    acked = {c.node.mac: c.obtain()["new_ip_address"] for c in clients}
    for c in clients:
        c.stop_daemon()
    appliance.kill()
    appliance.start()
    stored = {x["mac"]: x["address"] for x in leases(appliance)}
    assert stored == acked
    # A renewing client (INIT-REBOOT from its lease file) keeps its address ...
    renewed = clients[0].obtain()
    assert renewed["new_ip_address"] == acked[phones[0].mac]
    # ... and new clients never get an ACKed one.
    newcomer = lab.add_phone(mac="02:20:00:00:00:99")
    fresh = Dhclient(newcomer, workdir, "new", DHCLIENT_CONF).obtain()["new_ip_address"]
    assert fresh not in acked.values()


PERF_CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"

[dhcp4]
range = "10.78.1.0-10.78.40.255"
rate_limit = 50.0

[dhcp4.options]
66 = "tftp://10.78.0.1/"
"""


def test_perfdhcp_2000_exchanges_no_drops_no_duplicates(lab: Lab, workdir: Path) -> None:
    require_tools("perfdhcp")
    node = lab.add_appliance(ipv4="10.78.0.1/16", ipv6=None)
    app = Appliance(node, workdir, PERF_CONFIG)
    app.start()
    relay = lab.add_phone(mac="02:30:00:00:00:01", ipv4="10.78.0.2/16")
    before = perfdhcp.rcvbuf_errors(relay)
    result = perfdhcp.run(relay, 4, "-r", "250", "-n", "2000", "-R", "2000", "-W", "2000000", "-d", "2",
                          "10.78.0.1")
    client_lost = perfdhcp.rcvbuf_errors(relay) - before
    perfdhcp.sent_for(result.stats["DISCOVER-OFFER"], 2000)
    sent = perfdhcp.sent_for(result.stats["REQUEST-ACK"], 2000, client_lost)
    perfdhcp.check_all_answered(result, client_lost)
    app.stop()
    addresses = [x["address"] for x in leases(app)]
    macs = [x["mac"] for x in leases(app)]
    assert len(addresses) == sent
    assert len(set(addresses)) == sent, "an address was handed to two clients"
    assert len(set(macs)) == sent


HOSTILE = textwrap.dedent("""
    import os, random, socket, struct, sys
    sys.path.insert(0, {root!r})
    from tests.unit.test_dhcp4_codec import CRASH_PACKETS
    from tests.unit.dhcp4_helpers import message, mac
    from bootstrapd.dhcp4 import codec
    random.seed(2131)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, 25, b"eth0")  # SO_BINDTODEVICE: limited broadcast needs an interface
    s.bind(("0.0.0.0", 68))
    target = ("10.77.0.1", 67)
    sent = 0
    for data in CRASH_PACKETS.values():
        s.sendto(data, target); sent += 1
    templates = [message(k, mac(n), options={{50: bytes((10, 77, 0, 120)), 54: bytes((10, 77, 0, 1)),
                                              61: b"\\x01" + mac(n), 60: b"yealink", 55: bytes(range(1, 80))}})
                 for n, k in enumerate((1, 3, 4, 7, 8), start=1)]
    for i in range(10000):
        if i % 2:
            data = os.urandom(random.choice((0, 1, 3, 200, 240, 300, 576, 1400)))
        else:
            data = bytearray(random.choice(templates))
            for _ in range(random.randint(1, 12)):
                data[random.randrange(len(data))] = random.randrange(256)
            data = bytes(data[: random.randint(1, len(data))])
        s.sendto(data, random.choice((target, ("255.255.255.255", 67))))
        sent += 1
    print(sent)
""")


def test_hostile_datagrams_then_a_normal_client_still_gets_a_lease(lab: Lab, appliance: Appliance,
                                                                      workdir: Path) -> None:
    attacker = lab.add_phone(mac="02:66:00:00:00:01", ipv4="10.77.0.66/24")
    script = workdir / "hostile.py"
    script.write_text(HOSTILE.format(root=str(Path(__file__).resolve().parents[2])))
    result = attacker.run([sys.executable, str(script)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == 10000 + 18
    assert appliance.proc is not None and appliance.proc.poll() is None, appliance.log()
    phone = lab.add_phone(mac="02:10:00:00:00:42")
    got = Dhclient(phone, workdir, "after", DHCLIENT_CONF).obtain()
    assert in_range(got["new_ip_address"])
    appliance.stop()
    log = appliance.log()
    assert "Traceback" not in log and "internal_error" not in log
    dropped = re.search(r"'dhcp4.dropped': (\d+)", log)
    assert dropped and int(dropped.group(1)) > 5000, log[-2000:]


def _small_dhclient(lab: Lab, workdir: Path, urls: dict[int, str], requested: str,
                    mac: str) -> tuple[Appliance, dict[str, str]]:
    """The appliance with text options ``urls``, and what a dhclient limited to 576 bytes asking for ``requested``
    (and subnet mask, routers) receives."""
    extra = "".join(f'{code} = "{url}"\n' for code, url in urls.items())
    app = Appliance(lab.add_appliance(), workdir, CONFIG.replace("[dhcp4.options]\n", "[dhcp4.options]\n" + extra))
    app.start()
    conf = "".join(f"option custom-{code} code {code} = text;\n" for code in urls)
    conf += f"send dhcp-max-message-size 576;\nrequest subnet-mask, routers, {requested};\n"
    return app, Dhclient(lab.add_phone(mac=mac), workdir, f"small{mac[-2:]}", conf).obtain()


def test_dhclient_with_a_576_byte_limit_gets_every_option_through_overload(lab: Lab, workdir: Path) -> None:
    """Long provisioning URLs do not fit a 576-byte reply: they arrive in the file/sname fields (option 52)."""
    require_tools("dhclient")
    urls = {code: f"http://10.77.0.1/provisioning/{code}/{'p' * 12}/" for code in (161, 162, 163, 164, 165)}
    # These alone, with the header and cookie, leave no room in 576 - 28 bytes for the other options.
    assert 240 + sum(2 + len(u) for u in urls.values()) + 90 > 576 - 28  # 90: options 53-59, 1, 3, 6, 66, 160
    app, got = _small_dhclient(lab, workdir, urls, "tftp-server-name", "02:10:00:00:00:57")
    assert in_range(got["new_ip_address"])
    for code, url in urls.items():
        assert got[f"new_custom_{code}"] == url
    assert got["new_tftp_server_name"] == "tftp://10.77.0.1/boot/"
    app.stop()


def test_inform_from_dhcping_gets_the_options_without_a_lease(lab: Lab, appliance: Appliance) -> None:
    """DHCPINFORM (a phone whose address comes from elsewhere asks where to provision from): ACK unicast to ciaddr,
    the configured and class options, no lease time, no address; decoded with dhcppython, not our own codec."""
    require_tools("dhcping")
    phone = lab.add_phone(mac="00:15:65:00:00:31", ipv4="10.77.0.30/24")
    result = phone.run(["dhcping", "-i", "-V", "-t", "5", "-c", "10.77.0.30", "-s", "10.77.0.1",
                        "-h", "00:15:65:00:00:31"], timeout=30)
    assert result.returncode == 0 and "Got answer from: 10.77.0.1" in result.stdout, result.stdout + result.stderr
    answer = result.stdout.split("Got answer from: 10.77.0.1", 1)[1]
    dump = answer.split("\nop:", 1)[0]
    wire = bytes.fromhex("".join(line for line in dump.splitlines() if re.fullmatch(r"(?:[0-9a-f]{2} ?)+", line)))
    reply = dhcppython.packet.DHCPPacket.from_bytes(wire)
    options = {o.code: o.data for o in reply.options}
    assert reply.msg_type == "DHCPACK"
    assert str(reply.ciaddr) == "10.77.0.30" and str(reply.yiaddr) == "0.0.0.0"
    assert 51 not in options and 58 not in options
    assert options[66] == b"tftp://10.77.0.1/boot/"
    assert options[43] == b"http://10.77.0.1/yealink43/"  # the Yealink OUI puts it in the yealink class
    assert leases(appliance) == []  # INFORM hands out no lease


def test_reply_addressing_on_the_wire(lab: Lab, workdir: Path) -> None:
    """RFC 2131 4.1, seen by tshark on the appliance's interface: OFFER/ACK unicast to yiaddr at chaddr (a frame
    from the packet socket, no broadcast) unless the client set the broadcast flag; a NAK broadcast."""
    require_tools("tshark", "busybox")
    node = lab.add_appliance()
    app = Appliance(node, workdir, CONFIG)
    app.start()
    fields = ["-T", "fields", "-E", "separator=,", "-E", "occurrence=f", "-e", "dhcp.option.dhcp",
              "-e", "dhcp.hw.mac_addr",
              "-e", "ip.dst", "-e", "eth.dst"]
    out = workdir / "tshark.txt"
    with open(out, "wb") as sink:
        capture = node.popen(["tshark", "-n", "-l", "-i", "eth1", "-f", "udp src port 67", *fields],
                             stdout=sink, stderr=subprocess.PIPE)
        assert capture.stderr is not None
        started = b""
        while b"Capturing on" not in started:  # tshark says so once the capture runs
            line = capture.stderr.readline()
            assert line, "tshark did not start"
            started += line
        unicast = lab.add_phone(mac="02:40:00:00:00:01")
        address = udhcpc(unicast, workdir, "uni")["ip"]
        broadcast = lab.add_phone(mac="02:40:00:00:00:02")
        udhcpc(broadcast, workdir, "bcast", "-B")
        # A phone moved from another network: dhclient's INIT-REBOOT for its old address gets a NAK, then DORA.
        moved = Dhclient(lab.add_phone(mac="02:40:00:00:00:03"), workdir, "moved", DHCLIENT_CONF)
        moved.leases.write_text('lease {\n  interface "eth0";\n  fixed-address 192.168.9.9;\n'
                                '  option subnet-mask 255.255.255.0;\n  option dhcp-server-identifier 192.168.9.1;\n'
                                '  renew 4 2037/1/1 00:00:01;\n  rebind 4 2037/1/1 00:00:01;\n'
                                '  expire 4 2037/1/1 00:00:01;\n}\n')
        assert in_range(moved.obtain()["new_ip_address"])
        time.sleep(1)  # let the last datagrams reach tshark's output before stopping it
        capture.terminate()
        capture.wait(timeout=10)
    rows = [line.split(",") for line in out.read_text().splitlines() if line]
    seen = {(kind, mac): (dst, eth) for kind, mac, dst, eth in rows}
    assert seen[("2", "02:40:00:00:00:01")] == (address, "02:40:00:00:00:01")  # OFFER unicast at chaddr
    assert seen[("5", "02:40:00:00:00:01")] == (address, "02:40:00:00:00:01")  # ACK unicast at chaddr
    assert seen[("2", "02:40:00:00:00:02")] == ("255.255.255.255", "ff:ff:ff:ff:ff:ff")  # broadcast flag set
    assert seen[("5", "02:40:00:00:00:02")] == ("255.255.255.255", "ff:ff:ff:ff:ff:ff")
    assert seen[("6", "02:40:00:00:00:03")] == ("255.255.255.255", "ff:ff:ff:ff:ff:ff")  # NAK broadcast
    app.stop()


def test_default_option_66_reaches_dhclient_expanded(lab: Lab, workdir: Path) -> None:
    """No 66 under [dhcp4.options]: it is server.url ("tftp://{ipv4}/"), expanded from the interface, as dhclient
    receives it; a custom option's template too (issue #8 item 2)."""
    require_tools("dhclient")
    config = CONFIG.replace('66 = "tftp://10.77.0.1/boot/"\n', "").replace('160 = "http://10.77.0.1/p160/"',
                                                                          '160 = "http://{ipv4}/p160/"')
    assert "66 =" not in config and 'url = "tftp://{ipv4}/"' in config
    node = lab.add_appliance()
    app = Appliance(node, workdir, config)
    app.start()
    checked = app.cli("check-config", "--config", str(app.config))
    assert checked.returncode == 0 and "tftp://10.77.0.1/  (tftp://{ipv4}/)" in checked.stdout, checked.stdout
    phone = lab.add_phone(mac="02:10:00:00:00:66")
    got = Dhclient(phone, workdir, "d66", DHCLIENT_CONF).obtain()
    assert got["new_tftp_server_name"] == "tftp://10.77.0.1/"
    assert got["new_custom_160"] == "http://10.77.0.1/p160/"
    app.stop()


def test_options_that_cannot_fit_are_the_unrequested_ones_and_are_named(lab: Lab, workdir: Path) -> None:
    """RFC 2132 9.8: what dhclient asks for comes first; with a 576-byte limit what does not fit anywhere is left
    out, lowest priority first, and a warning names it (issue #8 item 3)."""
    require_tools("dhclient")
    urls = {code: f"http://10.77.0.1/{code}/{'q' * 90}" for code in (161, 162, 163, 164, 165)}
    app, got = _small_dhclient(lab, workdir, urls, "custom-165, custom-163", "02:10:00:00:00:58")
    assert got["new_custom_165"] == urls[165] and got["new_custom_163"] == urls[163]  # requested: delivered
    missing = [code for code in (161, 162, 164) if f"new_custom_{code}" not in got]
    assert missing, got  # 500 bytes of options cannot all fit 576
    app.stop()
    warning = re.search(r"option\(s\) ([\d, ]+) left out of a (OFFER|ACK)", app.log())
    assert warning, app.log()[-3000:]
    assert set(missing) <= {int(c) for c in warning.group(1).split(", ")}
