"""DHCPv6 against real clients: ISC dhclient -6 (stateful and stateless), perfdhcp -6, and hostile datagrams."""

from __future__ import annotations

import json
import sys
import time
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_tools
from tests.lab import perfdhcp
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.clients import Dhclient
from tests.lab.netns import Lab, Node

# Every test runs against both store backends (SQLite, and PostgreSQL from the session's server), so the two
# cannot drift.
pytestmark = pytest.mark.usefixtures("store_backend")

DHCLIENT6_CONF = "also request dhcp6.bootfile-url;\n"
URL = "tftp://[fd77::1]/phones/"


def _config(workdir: Path, body: str = "") -> str:
    return BASE_CONFIG.format(root=workdir / "root", state=workdir / "state") + f"""
[dhcp6]
enabled = true
bootfile_url = "tftp://[{{ipv6}}]/phones/"
{body}
"""


def _start(lab: Lab, workdir: Path, body: str = "", phones: int = 1) -> tuple[Appliance, list[Node]]:
    node = lab.add_appliance()
    nodes = [lab.add_phone() for _ in range(phones)]
    for n in [node, *nodes]:
        lab.wait_link_local(n)
    app = Appliance(node, workdir, _config(workdir, body))
    app.start()
    return app, nodes


def _leases(app: Appliance, *extra: str) -> list[dict[str, Any]]:
    result = app.cli("leases", "--json", "--config", str(app.config), *extra)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["dhcp6"]
    return rows


def _in_range(address: str) -> bool:
    return int(IPv6Address("fd77::100")) <= int(IPv6Address(address)) <= int(IPv6Address("fd77::1ff"))


def test_stateful_and_stateless(lab: Lab, workdir: Path) -> None:
    require_tools("dhclient")
    app, [phone] = _start(lab, workdir)
    client = Dhclient(phone, workdir, "c6", DHCLIENT6_CONF)
    bound = client.obtain("-6")
    assert bound["reason"] == "BOUND6"
    assert _in_range(bound["new_ip6_address"])
    assert bound["new_dhcp6_bootfile_url"] == URL
    [lease] = _leases(app)
    assert lease["address"] == bound["new_ip6_address"]
    assert lease["mac"] == phone.mac and lease["state"] == "active"  # MAC from the DUID-LLT dhclient made

    stateless = Dhclient(phone, workdir, "s6", DHCLIENT6_CONF)
    result = phone.run(stateless._argv("-6", "-S", "-1"), timeout=30)
    assert result.returncode == 0, result.stderr
    [info] = [r for r in stateless.records() if "new_dhcp6_bootfile_url" in r]
    assert info["new_dhcp6_bootfile_url"] == URL
    assert "new_ip6_address" not in info
    assert len(_leases(app)) == 1  # stateless: no lease
    assert app.stop() == 0


def test_forced_bootfile_url_without_request(lab: Lab, workdir: Path) -> None:
    require_tools("dhclient")
    app, [phone] = _start(lab, workdir, "force_bootfile_url = true")
    # No "also request": dhclient's ORO lacks option 59, the server sends it anyway and dhclient records it.
    client = Dhclient(phone, workdir, "c6", "")
    bound = client.obtain("-6")
    assert bound["new_dhcp6_bootfile_url"] == URL
    assert app.stop() == 0


def _records(client: Dhclient, reason: str) -> list[dict[str, str]]:
    return [r for r in client.records() if r.get("reason") == reason]


def _wait_record(client: Dhclient, reason: str, timeout: float = 20.0, seen: int = 0) -> dict[str, str]:
    """The newest record of ``reason`` once there are more than ``seen`` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _records(client, reason)
        if len(found) > seen:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"dhclient reported no {reason}: {client.records()}")


def test_renew_keeps_address_release_frees_it(lab: Lab, workdir: Path) -> None:
    require_tools("dhclient")
    # T1 = preferred / 2 = 2 s: the running dhclient sends a real RENEW two seconds after binding.
    app, [phone] = _start(lab, workdir, "preferred_lifetime = 4\nvalid_lifetime = 600")
    client = Dhclient(phone, workdir, "c6", DHCLIENT6_CONF)
    first = client.obtain("-6")["new_ip6_address"]
    [before] = _leases(app)
    # A RENEW answered after that read: on a loaded machine the read may outlast T1, and a renewal committed before
    # it is already in `before` (its record can even land just after the count). dhclient renews every T1, so the
    # store shows a later expiry within a few renewals.
    renewed = _wait_record(client, "RENEW6", seen=len(_records(client, "RENEW6")))
    assert renewed["new_ip6_address"] == first
    deadline = time.monotonic() + 20
    while True:
        [after] = _leases(app)
        if after["expires_unix"] > before["expires_unix"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after["address"] == first and after["duid"] == before["duid"]
    assert after["expires_unix"] > before["expires_unix"]

    # A restarted client with the same lease file (same DUID, IAID, address) confirms and keeps it.
    client.stop_daemon()
    again = client.obtain("-6")
    assert again["new_ip6_address"] == first
    assert [r["address"] for r in _leases(app)] == [first]

    client.release("-6")
    assert _leases(app) == []
    [released] = _leases(app, "--all")
    assert released["address"] == first and released["state"] == "released"
    assert app.stop() == 0


def test_committed_leases_survive_kill_9(lab: Lab, workdir: Path) -> None:
    require_tools("dhclient")
    app, phones = _start(lab, workdir, phones=2)
    clients = [Dhclient(p, workdir, f"c{i}", DHCLIENT6_CONF) for i, p in enumerate(phones)]
    got = [c.obtain("-6") for c in clients]
    addresses = sorted(g["new_ip6_address"] for g in got)
    assert len(set(addresses)) == 2
    app.kill()  # SIGKILL: no clean shutdown
    assert sorted(r["address"] for r in _leases(app)) == addresses
    app.start()
    assert sorted(r["address"] for r in _leases(app)) == addresses
    # Same server DUID after the restart, and each phone keeps its address.
    clients[0].stop_daemon()
    again = clients[0].obtain("-6")
    assert again["new_ip6_address"] == got[0]["new_ip6_address"]
    assert again["new_dhcp6_server_id"] == got[0]["new_dhcp6_server_id"]
    assert app.stop() == 0


def test_perfdhcp_1000_exchanges(lab: Lab, workdir: Path) -> None:
    require_tools("perfdhcp")
    app, [phone] = _start(lab, workdir, 'range = "fd77::1000-fd77::ffff"')
    before = perfdhcp.rcvbuf_errors(phone)
    result = perfdhcp.run(phone, 6, "-r", "200", "-n", "1000", "-R", "1000", "-d", "2", "-W", "1000000",
                          timeout=90)
    client_lost = perfdhcp.rcvbuf_errors(phone) - before
    assert result.returncode == 0, result.output
    perfdhcp.sent_for(result.stats["SOLICIT-ADVERTISE"], 1000)
    sent = perfdhcp.sent_for(result.stats["REQUEST-REPLY"], 1000, client_lost)
    perfdhcp.check_all_answered(result, client_lost)
    assert len(_leases(app)) == sent  # every REPLY left only after its lease was durable
    assert app.stop() == 0


HOSTILE = r'''
import socket, struct, sys
ifindex = socket.if_nametoindex(sys.argv[1])
dest = ("ff02::1:2", 547, 0, ifindex)
duid = b"\x00\x03\x00\x01\x00\x15\x65\x99\x99\x99"
def opt(code, data, length=None):
    return struct.pack("!HH", code, len(data) if length is None else length) + data
def msg(kind, *opts):
    return bytes([kind]) + b"\x12\x34\x56" + b"".join(opts)
solicit = msg(1, opt(1, duid), opt(3, struct.pack("!III", 1, 0, 0)))
def relay(inner, depth):
    for i in range(depth):
        inner = bytes([12, i % 256]) + b"\x00" * 32 + opt(9, inner)
    return inner
packets = [
    b"", b"\x01", b"\x01\x00\x00",
    solicit[:-5],                                              # truncated option
    msg(1, opt(1, duid, 300)),                                 # option length past the end
    msg(1, opt(1, duid), opt(3, b"\x00" * 12 + opt(5, b"", 99))),  # IAADDR past the end of its IA
    msg(1, opt(1, b"\x00\x02" + b"x" * 200), opt(3, struct.pack("!III", 1, 0, 0))),  # DUID over 128 bytes
    msg(3, opt(1, duid), opt(2, b"\x00\x02" + b"y" * 129)),    # server ID over 128 bytes
    relay(solicit, 33),                                        # relay nesting 33 deep
    relay(solicit, 200),
    bytes([12, 0]) + b"\x00" * 32 + opt(9, b"", 60000),        # relay message past the end
    msg(11, opt(1, duid), opt(3, struct.pack("!III", 1, 0, 0)), opt(6, b"\x00\x3b")),  # info-request with IA
    msg(1, opt(6, b"\x00")),                                   # odd ORO, no client ID
    bytes([99, 0, 0, 0]), bytes([13]) + b"\x00" * 40,
]
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for p in packets:
    sock.sendto(p, dest)
# A relay chain exactly at the limit (32) is valid and is answered to this socket (the "relay"), port 547.
relay_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
relay_sock.bind(("::", 547, 0, ifindex))
relay_sock.settimeout(10)
relay_sock.sendto(relay(solicit, 32), dest)
data, addr = relay_sock.recvfrom(65535)
depth = 0
while data and data[0] == 13:
    depth += 1
    data = data[38:]  # 34-byte header, then option 9 (the only option we sent) header
print(depth, data[0] if data else -1)
'''


def test_hostile_input_then_normal_client(lab: Lab, workdir: Path) -> None:
    require_tools("dhclient")
    app, [attacker, phone] = _start(lab, workdir, phones=2)
    script = workdir / "hostile.py"
    script.write_text(HOSTILE)
    result = attacker.run([sys.executable, str(script), attacker.ifname], timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["32", "2"]  # 32 Relay-reply layers around an ADVERTISE
    assert app.proc is not None and app.proc.poll() is None
    bound = Dhclient(phone, workdir, "c6", DHCLIENT6_CONF).obtain("-6")
    assert _in_range(bound["new_ip6_address"])
    assert bound["new_dhcp6_bootfile_url"] == URL
    assert app.stop() == 0


def test_sighup_reload_keeps_leases(lab: Lab, workdir: Path) -> None:
    require_tools("dhclient")
    app, [phone] = _start(lab, workdir)
    client = Dhclient(phone, workdir, "c6", DHCLIENT6_CONF)
    first = client.obtain("-6")["new_ip6_address"]
    client.stop_daemon()
    app.write_config(_config(workdir).replace("/phones/", "/reloaded/"))
    app.reload()
    app.wait_notify("READY=1")
    # A new Solicit from the same DUID/IAID (fresh lease file, same dhclient DUID) keeps the address.
    client.leases.write_text("\n".join(line for line in client.leases.read_text().splitlines()
                                      if line.startswith("default-duid")) + "\n")
    bound = client.obtain("-6")
    assert bound["new_ip6_address"] == first
    assert bound["new_dhcp6_bootfile_url"] == "tftp://[fd77::1]/reloaded/"
    assert app.stop() == 0


def test_rapid_commit_with_dhclient_and_relayed_perfdhcp(lab: Lab, workdir: Path) -> None:
    require_tools("dhclient", "perfdhcp")
    app, [phone] = _start(lab, workdir, 'range = "fd77::1000-fd77::ffff"\nrapid_commit = true')
    client = Dhclient(phone, workdir, "c6", DHCLIENT6_CONF + "send dhcp6.rapid-commit;\n")
    result = phone.run(client._argv("-6", "-1"), timeout=30)
    assert result.returncode == 0, result.stderr
    # Two messages: the Solicit is answered by a Reply; dhclient never sends a Request.
    assert "RCV: Reply message" in result.stderr and "XMT: Request on" not in result.stderr, result.stderr
    [bound] = [r for r in client.records() if r.get("reason") == "BOUND6"]
    assert [r["address"] for r in _leases(app)] == [bound["new_ip6_address"]]
    # perfdhcp as a relay (-A 1): Relay-forw in, Relay-reply back to its port 547.
    relayed = perfdhcp.run(phone, 6, "-A", "1", "-r", "100", "-n", "200", "-R", "200", "-d", "2", "-W", "1000000",
                           timeout=60)
    assert relayed.returncode == 0, relayed.output
    sent = perfdhcp.sent_for(relayed.stats["REQUEST-REPLY"], 200)
    assert relayed.stats["REQUEST-REPLY"]["received packets"] == sent, relayed.output
    assert len(_leases(app)) == sent + 1
    assert app.stop() == 0
