"""Unicast OFFER/ACK (RFC 2131 4.1: to yiaddr at chaddr) reach the client whatever the appliance's neighbour table
holds (issue #8 item 1): after `ip neigh flush`, after the client's entry went FAILED, and after 2,000 DISCOVERs from
distinct MACs (more than gc_thresh3, 1024). Real clients (busybox udhcpc, ISC dhclient), no broadcast flag.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import require_tools
from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient, udhcpc
from tests.lab.netns import Lab, Node
from tests.lab.test_dhcp4 import CONFIG, DHCLIENT_CONF


def _appliance(lab: Lab, workdir: Path, config: str = CONFIG, ipv4: str = "10.77.0.1/24") -> Appliance:
    require_tools("busybox", "dhclient")
    app = Appliance(lab.add_appliance(ipv4=ipv4), workdir, config)
    app.start()
    return app


def _neighbour(app: Appliance, address: str) -> str:
    return str(app.node.run(["ip", "neigh", "show", "to", address, "dev", "eth1"]).stdout.strip())


def _reboot(phone: Node) -> None:
    """The phone loses its address (a reboot after the PoE switch restarted)."""
    phone.run(["ip", "addr", "flush", "dev", phone.ifname], check=True)


def test_phone_rebooting_after_a_neighbour_flush_gets_offer_and_ack(lab: Lab, workdir: Path) -> None:
    app = _appliance(lab, workdir)
    phone = lab.add_phone(mac="02:50:00:00:00:01")
    address = udhcpc(phone, workdir, "first")["ip"]
    app.node.run(["ip", "neigh", "flush", "dev", "eth1"], check=True)
    _reboot(phone)
    # udhcpc without -B: DISCOVER and REQUEST with the broadcast flag clear, so OFFER and ACK are unicast.
    assert udhcpc(phone, workdir, "again")["ip"] == address
    app.node.run(["ip", "neigh", "flush", "dev", "eth1"], check=True)
    _reboot(phone)
    fresh = Dhclient(phone, workdir, "dh", DHCLIENT_CONF).obtain()  # no lease file: a full DORA
    assert fresh["new_ip_address"].startswith("10.77.0.")  # (no client identifier: another lease than udhcpc's)
    app.stop()


_PROBE = "import socket, sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'?', (sys.argv[1], 9))"


def test_phone_whose_neighbour_entry_went_failed_gets_offer_and_ack(lab: Lab, workdir: Path) -> None:
    app = _appliance(lab, workdir)
    phone = lab.add_phone(mac="02:50:00:00:00:02")
    address = udhcpc(phone, workdir, "first")["ip"]
    _reboot(phone)
    # The appliance talks to the address (a TFTP retransmission, say): nobody answers its ARP, the entry fails.
    deadline = time.monotonic() + 30
    while "FAILED" not in _neighbour(app, address):
        assert time.monotonic() < deadline, _neighbour(app, address)
        app.node.run([sys.executable, "-c", _PROBE, address])
        time.sleep(0.5)
    assert udhcpc(phone, workdir, "again")["ip"] == address
    app.stop()


FLOOD_CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"

[dhcp4]
range = "10.79.1.0-10.79.20.255"
"""

# 2,000 DISCOVERs from distinct MACs, paced, broadcast flag clear; a promiscuous packet socket counts the OFFERs
# that come back (unicast frames to MACs nobody has: the bridge floods them to every port).
FLOOD = textwrap.dedent("""
    import json, socket, struct, sys, time
    sys.path.insert(0, {root!r})
    from bootstrapd.dhcp4 import codec
    from tests.unit.dhcp4_helpers import message
    N = {count}
    listen = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    listen.bind(("eth0", 0x0800))
    ifindex = socket.if_nametoindex("eth0")
    listen.setsockopt(263, 1, struct.pack("IHH8s", ifindex, 1, 0, b""))  # PACKET_ADD_MEMBERSHIP, PROMISC
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    listen.setblocking(False)
    send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    send.setsockopt(socket.SOL_SOCKET, 25, b"eth0")
    send.bind(("0.0.0.0", 68))
    offers = set()

    def drain():
        while True:
            try:
                frame = listen.recv(2048)
            except BlockingIOError:
                return
            if len(frame) < 42 or frame[23] != 17 or frame[34:38] != b"\\x00\\x43\\x00\\x44":
                continue
            try:
                reply = codec.decode(frame[42:])
            except codec.Dhcp4Error:
                continue
            if reply.msg_type() == codec.OFFER and reply.flags == 0:
                offers.add(reply.mac)

    for n in range(N):
        hw = bytes((0x02, 0x51)) + n.to_bytes(4, "big")
        send.sendto(message(codec.DISCOVER, hw, xid=n), ("255.255.255.255", 67))
        if n % 50 == 49:
            time.sleep(0.05)
            drain()
    deadline = time.monotonic() + 60
    while len(offers) < N and time.monotonic() < deadline:
        time.sleep(0.1)
        drain()
    print(json.dumps({{"offers": len(offers)}}))
""")


def test_a_new_phone_gets_a_lease_after_2000_discovers_from_distinct_macs(lab: Lab, workdir: Path) -> None:
    app = _appliance(lab, workdir, FLOOD_CONFIG, ipv4="10.79.0.1/16")
    # More distinct clients than the kernel keeps neighbour entries for (the limit is global, read it here).
    assert int(Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read_text()) < 2000
    flooder = lab.add_phone(mac="02:51:ff:00:00:01")
    script = workdir / "flood.py"
    script.write_text(FLOOD.format(root=str(Path(__file__).resolve().parents[2]), count=2000))
    result = flooder.run([sys.executable, str(script)], timeout=180)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["offers"] == 2000  # every one of them got its unicast OFFER
    entries = app.node.run(["ip", "neigh", "show", "dev", "eth1"]).stdout.splitlines()
    assert len(entries) < 50, f"{len(entries)} neighbour entries"  # the replies did not go through the table
    phone = lab.add_phone(mac="02:50:00:00:00:03")
    assert udhcpc(phone, workdir, "new")["ip"].startswith("10.79.")
    app.stop()
