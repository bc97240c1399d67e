"""``bootstrapd trace``: hand-made captures (crafted with scapy), one per diagnosis; and the capture files we write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

from bootstrapd.journal.diagnose import Ev, diagnose
from bootstrapd.journal.pcapfile import RotatingWriter
from bootstrapd.journal.recorder import Selector
from bootstrapd.journal.tracing import read_capture

PHONE = "00:15:65:aa:bb:cc"
SERVER_MAC = "02:77:00:00:00:01"
ROGUE_MAC = "02:66:00:00:00:66"
SERVER, ADDRESS = "10.77.0.1", "10.77.0.100"


def dhcp(kind: str, *, server: str = SERVER, server_mac: str = SERVER_MAC, options: list[Any] | None = None,
         prl: list[int] | None = None) -> Packet:
    chaddr = bytes.fromhex(PHONE.replace(":", "")) + b"\0" * 10
    if kind in ("discover", "request"):
        opts: list[Any] = [("message-type", kind), ("param_req_list", prl or [1, 3, 66])]
        return (Ether(src=PHONE, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") /
                UDP(sport=68, dport=67) / BOOTP(op=1, xid=7, chaddr=chaddr) / DHCP(options=[*opts, "end"]))
    opts = [("message-type", kind), ("server_id", server), ("subnet_mask", "255.255.255.0"), *(options or [])]
    return (Ether(src=server_mac, dst=PHONE) / IP(src=server, dst=ADDRESS) / UDP(sport=67, dport=68) /
            BOOTP(op=2, xid=7, yiaddr=ADDRESS, chaddr=chaddr) / DHCP(options=[*opts, "end"]))


TFTP_URL = [("tftp_server_name", b"tftp://10.77.0.1/")]


def lease() -> list[Packet]:
    return [dhcp("discover"), dhcp("offer", options=TFTP_URL), dhcp("request"), dhcp("ack", options=TFTP_URL)]


def udp(payload: bytes, *, from_phone: bool, sport: int, dport: int) -> Packet:
    if from_phone:
        return Ether(src=PHONE, dst=SERVER_MAC) / IP(src=ADDRESS, dst=SERVER) / UDP(sport=sport, dport=dport) / \
            Raw(payload)
    return Ether(src=SERVER_MAC, dst=PHONE) / IP(src=SERVER, dst=ADDRESS) / UDP(sport=sport, dport=dport) / \
        Raw(payload)


def rrq(name: str, port: int, **options: str) -> Packet:
    opts = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in options.items())
    return udp(b"\0\1" + name.encode() + b"\0octet\0" + opts, from_phone=True, sport=port, dport=69)


def tftp_error(code: int, message: str, port: int) -> Packet:
    return udp(b"\0\5" + code.to_bytes(2, "big") + message.encode() + b"\0", from_phone=False, sport=40000,
               dport=port)


def data(block: int, size: int, port: int) -> Packet:
    return udp(b"\0\3" + block.to_bytes(2, "big") + b"x" * size, from_phone=False, sport=40001, dport=port)


def ack(block: int, port: int) -> Packet:
    return udp(b"\0\4" + block.to_bytes(2, "big"), from_phone=True, sport=port, dport=40001)


def tcp(payload: bytes, *, from_phone: bool, port: int = 80) -> Packet:
    if from_phone:
        return Ether(src=PHONE, dst=SERVER_MAC) / IP(src=ADDRESS, dst=SERVER) / \
            TCP(sport=50000, dport=port, flags="PA") / Raw(payload)
    return Ether(src=SERVER_MAC, dst=PHONE) / IP(src=SERVER, dst=ADDRESS) / \
        TCP(sport=port, dport=50000, flags="PA") / Raw(payload)


SUBSCRIBE = ("SUBSCRIBE sip:MAC001565aabbcc@224.0.1.75 SIP/2.0\r\nVia: SIP/2.0/UDP 10.77.0.100:5060;branch=z9hG4bK1\r\n"
             "From: <sip:MAC001565aabbcc@224.0.1.75>;tag=1\r\nTo: <sip:MAC001565aabbcc@224.0.1.75>\r\n"
             "Call-ID: c1@10.77.0.100\r\nCSeq: 1 SUBSCRIBE\r\nEvent: ua-profile;profile-type=\"device\";"
             "vendor=\"yealink\";model=\"T46U\"\r\nContent-Length: 0\r\n\r\n")
NOTIFY = ("NOTIFY sip:MAC001565aabbcc@10.77.0.100:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.77.0.1:5070;branch=z9hG4bK2\r\n"
          "From: <sip:pnp@10.77.0.1>;tag=2\r\nTo: <sip:MAC001565aabbcc@224.0.1.75>;tag=1\r\nCall-ID: c1@10.77.0.100"
          "\r\nCSeq: 2 NOTIFY\r\nEvent: ua-profile\r\nContent-Type: application/url\r\nContent-Length: 19\r\n\r\n"
          "http://10.77.0.1/\r\n")


def ok_for(method: str, cseq: int) -> str:
    return (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.77.0.1:5070;branch=z9hG4bK2\r\nCall-ID: c1@10.77.0.100\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n")


def pnp(acknowledged: bool) -> list[Packet]:
    packets = [udp(SUBSCRIBE.encode(), from_phone=True, sport=5060, dport=5060),
               udp(ok_for("SUBSCRIBE", 1).encode(), from_phone=False, sport=5060, dport=5060)]
    packets += [udp(NOTIFY.encode(), from_phone=False, sport=5070, dport=5060)] * (1 if acknowledged else 3)
    if acknowledged:
        packets.append(udp(ok_for("NOTIFY", 2).encode(), from_phone=True, sport=5060, dport=5070))
    return packets


def kinds(tmp_path: Path, packets: list[Packet], ours: str | None = None) -> dict[str, str]:
    path = tmp_path / "capture.pcap"
    for i, packet in enumerate(packets):
        packet.time = 1_700_000_000 + i * 0.01
    wrpcap(str(path), packets)
    events = [e for e in read_capture(path) if e.mac == PHONE]
    return {d.kind: d.text for d in diagnose(events, ours)}


CASES: dict[str, Any] = {
    "no_offer": ([dhcp("discover")] * 3, "3 DISCOVER(s) and no OFFER"),
    "offer_missing_option": ([dhcp("discover", prl=[1, 3, 66, 160]), dhcp("offer", options=TFTP_URL)],
                             "has no option 160 (asked for in option 55)"),
    "rogue_dhcp": ([dhcp("discover"), dhcp("offer", options=TFTP_URL),
                    dhcp("offer", server="10.77.0.254", server_mac=ROGUE_MAC, options=TFTP_URL)],
                   "10.77.0.254: not ours (10.77.0.1)"),
    "idle_after_lease": (lease(), "never asked for anything after it"),
    "notify_unacknowledged": ([*lease(), *pnp(acknowledged=False)], "sent 3 time(s)"),
    "mac_boot_then_common": ([*lease(), rrq("001565aabbcc.boot", 1001), tftp_error(1, "file not found", 1001),
                              rrq("y000000000000.boot", 1002), data(1, 100, 1002), ack(1, 1002)],
                             "MAC boot file 001565aabbcc.boot not found"),
    "include_missing": ([*lease(), rrq("sip.cfg", 1003), tftp_error(1, "file not found", 1003)],
                        "sip.cfg was asked for and not found"),
    "blksize_refused": ([*lease(), rrq("y000000000000.boot", 1004, blksize="1432"), data(1, 512, 1004),
                         ack(1, 1004), data(2, 10, 1004), ack(2, 1004)], "the server ignored it"),
    "transfer_timeout": ([*lease(), rrq("fw.rom", 1005), data(1, 512, 1005), ack(1, 1005), data(2, 512, 1005),
                          data(2, 512, 1005), data(2, 512, 1005)],
                         "the phone stopped acknowledging at block 2 (sent 3 time(s))"),
    "auth_401": ([*lease(), tcp(b"GET /T46U_1/y000000000000.boot HTTP/1.1\r\nHost: x\r\n\r\n", from_phone=True),
                  tcp(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", from_phone=False)],
                 "401 on /T46U_1/: asked for T46U_1/y000000000000.boot without credentials"),
    "login_refused": ([*lease(), tcp(b"USER floor3\r\n", from_phone=True, port=21),
                       tcp(b"PASS secret\r\n", from_phone=True, port=21),
                       tcp(b"530 Login incorrect.\r\n", from_phone=False, port=21)], "530 Login incorrect"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_diagnosis_from_a_crafted_capture(tmp_path: Path, kind: str) -> None:
    packets, text = CASES[kind]
    found = kinds(tmp_path, packets, ours=SERVER if kind == "rogue_dhcp" else None)
    assert kind in found, found
    assert text in found[kind], found[kind]


def test_a_good_phone_has_no_error(tmp_path: Path) -> None:
    packets = [*lease(), *pnp(acknowledged=True), rrq("y000000000000.boot", 1010, blksize="1432"),
               udp(b"\0\6blksize\0" + b"1432\0", from_phone=False, sport=40001, dport=1010), ack(0, 1010),
               data(1, 10, 1010), ack(1, 1010)]
    assert kinds(tmp_path, packets) == {}


def test_the_server_stopping_is_told_apart_from_the_phone(tmp_path: Path) -> None:
    found = kinds(tmp_path, [*lease(), rrq("fw.rom", 1006), data(1, 512, 1006), ack(1, 1006)])
    assert "the server stopped sending after block 1" in found["transfer_timeout"]


def test_secrets_stay_out_of_the_timeline(tmp_path: Path) -> None:
    packets = [*lease(), tcp(b"PASS secret\r\n", from_phone=True, port=21),
               tcp(b"GET /a.cfg HTTP/1.1\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n", from_phone=True)]
    wrpcap(str(tmp_path / "s.pcap"), packets)
    text = " ".join(e.info for e in read_capture(tmp_path / "s.pcap"))
    assert "secret" not in text and "Zm9v" not in text and "PASS ****" in text and "Authorization sent" in text


def test_diagnose_is_pure_over_events() -> None:
    events = [Ev(1.0, PHONE, "DHCP", "0.0.0.0", "255.255.255.255", "", {"type": "DISCOVER", "prl": []})]
    assert [d.kind for d in diagnose(events)] == ["no_offer"]
    assert diagnose([]) == []


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_our_capture_files_read_back_and_rotate(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"r.{fmt}"
    writer = RotatingWriter(path, fmt, snaplen=65535, max_size=2000, max_files=3, interface="eth1")
    frames = [bytes(p) for p in lease()] * 5
    for i, frame in enumerate(frames):
        writer.write(1_700_000_000 + i / 1000, frame)
    writer.close()
    files = sorted(tmp_path.glob(f"r.{fmt}*"))
    assert [f.name for f in files] == [f"r.{fmt}", f"r.{fmt}.1", f"r.{fmt}.2"] and writer.rotations >= 2
    assert all(f.stat().st_size <= 2000 for f in files)
    events = read_capture(files[0])
    assert events and all(e.proto == "DHCP" for e in events)
    assert abs(events[0].time - (1_700_000_000 + (len(frames) - len(events)) / 1000)) < 0.001


def test_the_selector_keeps_our_services_and_their_conversations() -> None:
    selector = Selector({67, 68, 69, 5060}, {69, 5060}, {80}, [(30000, 30009)])
    assert selector.keep(bytes(dhcp("discover")), 0.0)
    assert selector.keep(bytes(rrq("a.cfg", 1234)), 0.0)
    assert selector.keep(bytes(data(1, 10, 1234)), 1.0)  # the transfer port, learned from the RRQ
    assert not selector.keep(bytes(data(1, 10, 4321)), 1.0)
    assert not selector.keep(bytes(data(1, 10, 1234)), 10_000.0)  # forgotten after the conversation's lifetime
    assert selector.keep(bytes(tcp(b"GET / HTTP/1.1\r\n\r\n", from_phone=True)), 0.0)
    assert selector.keep(bytes(tcp(b"x", from_phone=True, port=30005)), 0.0)
    assert not selector.keep(bytes(tcp(b"x", from_phone=True, port=22)), 0.0)
    assert not selector.keep(bytes(Ether() / ARP()), 0.0)
    assert not selector.keep(b"\0" * 10, 0.0)


def test_trace_command_text_and_json(tmp_path: Path) -> None:
    packets = [*lease(), rrq("sip.cfg", 1003), tftp_error(1, "file not found", 1003)]
    wrpcap(str(tmp_path / "c.pcap"), packets)
    run = [sys.executable, "-m", "bootstrapd", "trace", str(tmp_path / "c.pcap")]
    text = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "Read Request, File: sip.cfg" in text.stdout and "! include_missing" in text.stdout
    out = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True, timeout=120).stdout)
    assert out["phones"][0]["mac"] == PHONE and out["phones"][0]["diagnosis"][-1]["kind"] == "include_missing"
    bad = subprocess.run([sys.executable, "-m", "bootstrapd", "trace", str(tmp_path / "nothing.pcap")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nothing.pcap" in bad.stderr


def test_the_recorder_process_reports_what_stops_it(tmp_path: Path) -> None:
    import multiprocessing
    import os

    from bootstrapd.journal.recorder import record

    parent, child = multiprocessing.Pipe()
    (tmp_path / "file").write_text("")
    record("eth1", str(tmp_path / "file" / "c.pcap"), "pcap", 1 << 20, 2, 65535, ((67,), (), (), ()), child)
    assert parent.recv()[:2] == ("error", "file")
    record("bdtnosuch0", str(tmp_path / "c.pcap"), "pcap", 1 << 20, 2, 65535, ((67,), (), (), ()), child)
    kind, where, code, _ = parent.recv()
    assert (kind, where) == ("error", "socket")
    assert code == (19 if os.geteuid() == 0 else 1)  # ENODEV as root, EPERM (no CAP_NET_RAW) otherwise
