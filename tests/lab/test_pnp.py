"""SIP plug-and-play and check-sync against sipp, with the real daemon in the lab's appliance namespace.

sipp plays the phones: the SUBSCRIBEs of tests/data/pnp (addresses rewritten to the lab's, tests/lab/sipp/*.xml) go
to 224.0.1.75:5060 from a phone namespace; sipp checks the 200 and the NOTIFY headers itself (``check_it``) and
answers the NOTIFY; the NOTIFY body is read from sipp's own message log. For check-sync, sipp is the phone's UAS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrapd.leases.phones import PhoneRecord
from tests.conftest import require_tools
from tests.lab.appliance import BASE_CONFIG, Appliance
from tests.lab.netns import Lab, Node
from tests.lab.sipphone import SIPP, body, first_notify, header, read_messages, run_phone

PHONE_IP = "10.77.0.20"

PNP = """
[pnp]
enabled = true
url = "tftp://{ipv4}/"

[[pnp.rule]]
model = "GRP2612W"
url = "http://{ipv4}/grandstream/"

[[pnp.rule]]
vendor = "yealink"
model = "T4*"
url = "http://{ipv4}/$PN/{mac}/"
"""

REFUSE_SNOM = """
[[pnp.rule]]
vendor = "SNOM"
refuse = true
"""

pytestmark = pytest.mark.lab


def _config(workdir: Path, body: str = PNP) -> str:
    return BASE_CONFIG.format(root=workdir / "root", state=workdir / "state") + body


@pytest.fixture
def pnp_lab(lab: Lab, workdir: Path) -> tuple[Lab, Appliance, Node]:
    require_tools("sipp")
    node = lab.add_appliance()
    phone = lab.add_phone(ipv4=f"{PHONE_IP}/24")
    app = Appliance(node, workdir, _config(workdir))
    app.start()
    return lab, app, phone


@pytest.mark.parametrize("scenario,url", [
    ("yealink-w52p", "tftp://10.77.0.1/"),
    ("grandstream-grp2612w", "http://10.77.0.1/grandstream/"),  # a rule giving a per-model URL
    ("snom-720", "tftp://10.77.0.1/"),
    ("compact", "http://10.77.0.1/$PN/001565f4f9e1/"),  # compact headers; $PN kept for the phone, {mac} filled
    ("reordered", "tftp://10.77.0.1/"),
])
def test_sipp_phone_gets_200_and_notify_with_url(pnp_lab: tuple[Lab, Appliance, Node], workdir: Path,
                                                scenario: str, url: str) -> None:
    _, app, phone = pnp_lab
    code, messages, output = run_phone(phone, scenario, workdir)
    assert code == 0, output + app.log()
    received = [m for d, m in messages if d == "received"]
    assert received[0].startswith("SIP/2.0 200 OK")
    assert header(received[0], "Expires") == "0"
    notify = first_notify(messages)
    assert body(notify) == url
    assert header(notify, "Content-Length") == str(len(url))
    sent = [m for d, m in messages if d == "sent"]
    assert sent[-1].startswith("SIP/2.0 200 OK")  # sipp confirmed the NOTIFY
    assert app.proc is not None and app.proc.poll() is None


def test_refusing_rule_gives_no_answer_and_reload_applies(pnp_lab: tuple[Lab, Appliance, Node],
                                                          workdir: Path) -> None:
    _, app, phone = pnp_lab
    app.write_config(_config(workdir, PNP + REFUSE_SNOM))
    app.reload()
    app.wait_notify("READY=1")
    code, messages, _ = run_phone(phone, "snom-720", workdir, "-recv_timeout", "1500", timeout=5)
    assert code != 0
    assert [d for d, _ in messages if d == "received"] == []
    assert len([d for d, _ in messages if d == "sent"]) >= 2  # sipp retransmitted its SUBSCRIBE: still nothing
    # Other phones are still answered.
    code, messages, output = run_phone(phone, "yealink-w52p", workdir)
    assert code == 0, output


RAW_PHONE = r"""
import json, socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
sock.bind((sys.argv[1], int(sys.argv[2])))
for payload in json.loads(sys.stdin.read()):
    sock.sendto(bytes.fromhex(payload), ("224.0.1.75", 5060))
sock.settimeout(0.3)
got = []
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    try:
        data, addr = sock.recvfrom(65535)
    except TimeoutError:
        continue
    got.append([data.hex(), addr[0], addr[1]])
print(json.dumps(got))
"""


def _subscribe(call_id: str, port: int, *, contact_host: str = PHONE_IP, folded: bool = False) -> bytes:
    event = 'ua-profile;profile-type="device";vendor="yealink";model="W52P";version="25.81.0.10"'
    if folded:
        event = 'ua-profile ;\r\n profile-type="device";\r\n\tvendor="yealink";model="W52P";version="25.81.0.10"'
    return (f"SUBSCRIBE sip:MAC001565f4f9e1@224.0.1.75 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.77.0.99:5099;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:MAC001565f4f9e1@224.0.1.75>;tag=1\r\nTo: <sip:MAC001565f4f9e1@224.0.1.75>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:victim@{contact_host}:9>\r\n"
            f"Event: {event}\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n").encode()


def _raw(phone: Node, datagrams: list[bytes], port: int, wait: float) -> list[tuple[bytes, str, int]]:
    result = phone.run([sys.executable, "-c", RAW_PHONE, phone.address, str(port), str(wait)],
                       input=json.dumps([d.hex() for d in datagrams]), timeout=wait + 20)
    assert result.returncode == 0, result.stderr
    return [(bytes.fromhex(h), a, p) for h, a, p in json.loads(result.stdout)]


def test_hostile_datagrams_then_normal_phone_still_answered(pnp_lab: tuple[Lab, Appliance, Node],
                                                            workdir: Path) -> None:
    _, app, phone = pnp_lab
    yealink = (Path(__file__).resolve().parent.parent / "data" / "pnp" / "yealink-w52p.sip").read_bytes()
    hostile = [
        b"",
        b"\x00\xff\x13\x37" * 100,
        bytes(range(256)) * 4,
        b"SUBSCRIBE sip:x@y SIP/2.0\r\n" + b"A" * 65000 + b"\r\n\r\n",
        yealink.replace(b"Call-ID: 1536537630@10.1.3.239\r\n", b""),
        yealink.replace(b"CSeq: 1 SUBSCRIBE\r\n", b""),
        yealink.replace(b"Via: SIP/2.0/UDP 10.1.3.239:5059;branch=z9hG4bK1536537630\r\n", b""),
        yealink.replace(b"User-Agent: Yealink", b"User-Agent: \xff\xfe\x80Yealink"),
        yealink.replace(b"Content-Length: 0", b"Content-Length: 999"),
    ]
    # Garbage gets nothing back; the non-UTF-8 User-Agent is a valid SUBSCRIBE (sent-by 10.1.3.239: answered to us).
    got = _raw(phone, hostile, 5070, wait=1.5)
    assert all(addr == "10.77.0.1" for _, addr, _ in got)
    starts = sorted(data.split(b"\r\n", 1)[0] for data, _, _ in got)
    # (We do not answer the NOTIFY here, so it may come again on Timer E; the 200 comes once.)
    assert set(starts) == {b"NOTIFY sip:MAC001565f4f9e1@10.1.3.239:5059 SIP/2.0", b"SIP/2.0 200 OK"}
    assert starts.count(b"SIP/2.0 200 OK") == 1
    # Contact and Via name other hosts: both the 200 and the NOTIFY still come back to the source only.
    got = _raw(phone, [_subscribe("evil1", 5071, contact_host="10.77.0.99"), _subscribe("fold1", 5071, folded=True)],
               5071, wait=1.5)
    by_call: dict[bytes, list[bytes]] = {}
    for data, addr, _port in got:
        assert addr == "10.77.0.1"
        call = next(line for line in data.split(b"\r\n") if line.startswith(b"Call-ID:"))
        by_call.setdefault(call, []).append(data.split(b"\r\n", 1)[0])
    assert b"NOTIFY sip:victim@10.77.0.99:9 SIP/2.0" in by_call[b"Call-ID: evil1"]
    assert b"SIP/2.0 200 OK" in by_call[b"Call-ID: evil1"]
    assert b"SIP/2.0 200 OK" in by_call[b"Call-ID: fold1"]  # a folded Event header is understood
    assert app.proc is not None and app.proc.poll() is None
    code, messages, output = run_phone(phone, "yealink-w52p", workdir)
    assert code == 0, output + app.log()
    assert body(first_notify(messages)) == "tftp://10.77.0.1/"


def test_a_flood_of_any_requests_toward_one_address_is_capped(pnp_lab: tuple[Lab, Appliance, Node],
                                                              workdir: Path) -> None:
    # Issue #8 item 13: OPTIONS (405) and replays of one SUBSCRIBE (its cached 200) count against the per-source
    # budget like NOTIFY exchanges: 8 exchanges' worth, 96 datagrams per 32 s, whatever the flood is made of.
    lab, app, phone = pnp_lab
    flood = [_subscribe("replay", 5073)] * 60 + [
        _subscribe(f"opt{n}", 5073).replace(b"SUBSCRIBE sip", b"OPTIONS sip").replace(b"1 SUBSCRIBE", b"1 OPTIONS")
        for n in range(200)]
    got = _raw(phone, flood, 5073, wait=3.0)
    starts = [data.split(b"\r\n", 1)[0] for data, _, _ in got]
    # One exchange (its 200 and the NOTIFY sent so far, 12 datagrams counted), then 84 more replies: 59 cached 200s
    # for the replays, and 25 of the 200 OPTIONS get their 405.
    assert starts.count(b"SIP/2.0 200 OK") == 60
    assert starts.count(b"SIP/2.0 405 Method Not Allowed") == 96 - 12 - 59
    assert app.proc is not None and app.proc.poll() is None
    other = lab.add_phone(ipv4="10.77.0.21/24")
    code, _, output = run_phone(other, "yealink-w52p", workdir)
    assert code == 0, output + app.log()


# -- check-sync ------------------------------------------------------------------------------------------------------


def _uas(phone: Node, workdir: Path, status: int, calls: int = 1) -> tuple[subprocess.Popen[bytes], Path]:
    """sipp as the phone's SIP stack, answering ``calls`` check-sync NOTIFYs with ``status``."""
    log = workdir / f"uas-{status}-{time.monotonic_ns()}.log"
    proc = phone.popen(["sipp", "-sf", str(SIPP / f"checksync-{status}.xml"), "-i", phone.address, "-p", "5060",
                        "-m", str(calls), "-nostdin", "-trace_msg", "-message_file", str(log),
                        "-timeout", "20s", "-timeout_error"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    phone.wait_udp_port(5060, 5.0)
    return proc, log


@pytest.fixture
def resync_lab(lab: Lab, workdir: Path) -> tuple[Lab, Appliance, Node]:
    require_tools("sipp", "ss")
    node = lab.add_appliance()
    phone = lab.add_phone(ipv4=f"{PHONE_IP}/24")
    return lab, Appliance(node, workdir, _config(workdir)), phone


def test_resync_by_ip_with_and_without_reboot(resync_lab: tuple[Lab, Appliance, Node], workdir: Path) -> None:
    _, app, phone = resync_lab
    proc, log = _uas(phone, workdir, 200, calls=2)
    first = app.cli("resync", "--config", str(app.config), PHONE_IP, "--timeout", "5")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.strip() == f"{PHONE_IP}: 200 OK"
    second = app.cli("resync", "--config", str(app.config), PHONE_IP, "--reboot", "--timeout", "5", "--json")
    assert second.returncode == 0, second.stdout + second.stderr
    report = json.loads(second.stdout)
    assert report["ok"] == 1 and report["phones"][0]["status"] == 200
    assert proc.wait(timeout=10) == 0
    notifies = [m for d, m in read_messages(log) if d == "received"]
    assert [header(m, "Event") for m in notifies] == ["check-sync;reboot=false", "check-sync;reboot=true"]
    for m in notifies:
        assert m.startswith(f"NOTIFY sip:phone@{PHONE_IP} SIP/2.0")
        assert header(m, "Max-Forwards") == "70" and header(m, "Content-Length") == "0"
        assert "10.77.0.1:" in (header(m, "Via") or "") and ";tag=" in (header(m, "From") or "")


def test_resync_rejected_with_481_exits_1(resync_lab: tuple[Lab, Appliance, Node], workdir: Path) -> None:
    _, app, phone = resync_lab
    proc, _ = _uas(phone, workdir, 481)
    result = app.cli("resync", "--config", str(app.config), PHONE_IP, "--timeout", "5")
    assert result.returncode == 1
    assert result.stdout.strip() == f"{PHONE_IP}: 481 Call/Transaction Does Not Exist"
    proc.wait(timeout=10)


def test_resync_no_answer_unknown_mac_and_bad_usage(resync_lab: tuple[Lab, Appliance, Node], workdir: Path) -> None:
    _, app, _phone = resync_lab
    result = app.cli("resync", "--config", str(app.config), PHONE_IP, "10.77.0.21", "00:15:65:00:00:99",
                     "--timeout", "1")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"{PHONE_IP}: no answer" and lines[1] == "10.77.0.21: no answer"
    assert "unknown MAC" in lines[2]
    assert lines[-1] == "0 of 3 phones answered 2xx, 3 failed"
    assert app.cli("resync", "--config", str(app.config), "not-a-phone").returncode == 2
    assert app.cli("resync", "--config", str(app.config)).returncode == 2


def _phone_record(app: Appliance, mac: str, timeout: float = 10.0) -> PhoneRecord | None:
    """The store's record of ``mac``, waiting up to ``timeout`` for the daemon's writer to put it there."""
    from bootstrapd.leases.phones import read_phone
    from bootstrapd.leases.store import connect

    deadline = time.monotonic() + timeout
    while True:
        conn = connect(app.state / "leases.sqlite3", readonly=True)
        try:
            record = read_phone(conn, mac)
        finally:
            conn.close()
        if record is not None or time.monotonic() > deadline:
            return record
        time.sleep(0.1)


def test_resync_by_mac_of_a_phone_pnp_answered(resync_lab: tuple[Lab, Appliance, Node], workdir: Path) -> None:
    # Issue #8 item 11: the record is in the store, it holds only phones that acknowledged their NOTIFY, and the
    # JSON file of older versions is imported without the entries nobody acknowledged.
    _, app, phone = resync_lab
    app.state.mkdir(exist_ok=True)
    legacy = {
        "001565000010": {"ip": PHONE_IP, "model": "T46U", "acknowledged": True, "time": time.time() - 60},
        "001565000011": {"ip": PHONE_IP, "model": "T46U", "acknowledged": False, "time": time.time() - 60},
    }
    (app.state / "pnp-phones.json").write_text(json.dumps(legacy))
    app.start()
    code, _, output = run_phone(phone, "yealink-w52p", workdir)
    assert code == 0, output
    record = _phone_record(app, "001565f4f9e1")
    assert record is not None and (record.address, record.model, record.source) == (PHONE_IP, "W52P", "pnp")
    imported = _phone_record(app, "001565000010")
    assert imported is not None and imported.model == "T46U"
    assert _phone_record(app, "001565000011", timeout=0) is None
    deadline = time.monotonic() + 10
    while (app.state / "pnp-phones.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (app.state / "pnp-phones.json").exists() and (app.state / "pnp-phones.json.imported").exists()
    never = app.cli("resync", "--config", str(app.config), "00:15:65:00:00:11", "--timeout", "1")
    assert never.returncode == 1 and "unknown MAC" in never.stdout, never.stdout + never.stderr
    proc, log = _uas(phone, workdir, 200)
    result = app.cli("resync", "--config", str(app.config), "00:15:65:F4:F9:E1", "--timeout", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"00:15:65:F4:F9:E1 ({PHONE_IP}): 200 OK"
    proc.wait(timeout=10)
    notify = next(m for d, m in read_messages(log) if d == "received")
    assert notify.startswith(f"NOTIFY sip:001565f4f9e1@{PHONE_IP} SIP/2.0")


def test_resync_by_mac_from_leases_and_all(resync_lab: tuple[Lab, Appliance, Node], workdir: Path) -> None:
    from bootstrapd.leases.store import connect

    _, app, phone = resync_lab
    conn = connect(app.state / "leases.sqlite3")  # creates the schema, as the daemon would
    now = time.time()
    for address, mac, expires in ((PHONE_IP, "001565770001", now + 3600), ("10.77.0.21", "001565770002", now - 10)):
        conn.execute("INSERT INTO lease4 (address, mac, client_id, expires, state, hostname, vendor_class, updated) "
                     "VALUES (?, ?, NULL, ?, 'active', NULL, NULL, ?)", (address, bytes.fromhex(mac), expires, now))
    conn.close()
    proc, log = _uas(phone, workdir, 200, calls=2)
    by_mac = app.cli("resync", "--config", str(app.config), "00-15-65-77-00-01", "--timeout", "5")
    assert by_mac.returncode == 0, by_mac.stdout + by_mac.stderr
    assert by_mac.stdout.strip() == f"00-15-65-77-00-01 ({PHONE_IP}): 200 OK"
    # --all: only the active, unexpired lease is a target.
    every = app.cli("resync", "--config", str(app.config), "--all", "--reboot", "--timeout", "5", "--json")
    assert every.returncode == 0, every.stdout + every.stderr
    assert [(p["mac"], p["ip"], p["status"]) for p in json.loads(every.stdout)["phones"]] == [
        ("001565770001", PHONE_IP, 200)]
    assert proc.wait(timeout=10) == 0
    received = [m for d, m in read_messages(log) if d == "received"]
    assert [header(m, "Event") for m in received] == ["check-sync;reboot=false", "check-sync;reboot=true"]
    # Expired lease: that MAC is unknown.
    gone = app.cli("resync", "--config", str(app.config), "00:15:65:77:00:02", "--timeout", "1")
    assert gone.returncode == 1 and "unknown MAC" in gone.stdout
