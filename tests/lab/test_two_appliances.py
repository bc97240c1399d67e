"""Two appliances on one bridge sharing one real PostgreSQL (issue #15).

Both serve one range at once (perfdhcp against each, dhclient and udhcpc broadcasting to both): no address is held
by two clients, in the database or as the clients saw it. ``kill -9`` of one during perfdhcp: the other answers
every rebinding of the dead one's clients with the same address, INIT-REBOOT too, and serves new clients. A phone
served by one appliance, then by the other: its whole journey (both appliances' steps, by time) through either
one's status API and ``bootstrapd status``. PostgreSQL stopped and started during traffic: nothing ACKed is lost,
service resumes by itself, and ``/metrics``, the API and ``bootstrapd status`` say the store was down and since when.
"""

from __future__ import annotations

import ast
import concurrent.futures
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import init_schema, require_tools
from tests.lab import perfdhcp
from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient, udhcpc
from tests.lab.netns import Lab, Node
from tests.lab.test_status_page import _chromium
from tests.pgserver import PostgresServer

CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
url = "tftp://{{ipv4}}/"

[dhcp4]
range = "10.77.0.100-10.77.7.250"
lease_time = 3600
rate_limit = 50.0

[dhcp4.options]
66 = "tftp://{{ipv4}}/"

[store]
backend = "postgresql"
dsn = "{dsn}"
"""

# The journal's records in the database, and the status API (on a port of its own: no HTTP service here).
STATUS = """
[tftp]
enabled = true

[journal]
flush_interval = 0.1

[status]
enabled = true
port = 8080
password = "{hash}"
metrics_auth = false
"""
STATUS_PASSWORD = "lab-status-pw"

# A /21 so that two perfdhcp runs of 600 clients (and 1500 later) and the real clients fit.
SUBNET = 21
DHCLIENT_CONF = "request subnet-mask, routers, tftp-server-name;\n"


def _pair(lab: Lab, workdir: Path, dsn: str, status: bool = False) -> tuple[Appliance, Appliance]:
    nodes = [lab.add_appliance(ipv4=f"10.77.0.1/{SUBNET}", ipv6=None),
             lab.add_appliance(ipv4=f"10.77.0.2/{SUBNET}", ipv6=None, mac="02:77:00:00:00:02", suffix="ap2")]
    text = CONFIG.format(dsn=dsn)
    if status:
        from bootstrapd.provisioning.auth import hash_password

        text += STATUS.format(hash=hash_password(STATUS_PASSWORD))
    apps = []
    for name, node in zip(("a", "b"), nodes, strict=True):
        folder = workdir / name
        folder.mkdir(mode=0o755)
        apps.append(Appliance(node, folder, text))
    return apps[0], apps[1]


def _api(node: Node, server: str, path: str) -> tuple[int, Any]:
    """GET the status API of the appliance at ``server`` (the JSON document, or the text of /metrics)."""
    result = node.run(["curl", "-s", "-u", f"admin:{STATUS_PASSWORD}", "-w", "\n%{http_code}", "--max-time", "30",
                       f"http://{server}:8080{path}"], timeout=60)
    body, _, code = result.stdout.rpartition("\n")
    try:
        return int(code or 0), json.loads(body) if body.startswith("{") else body
    except ValueError:
        return int(code or 0), body


def _metric(node: Node, server: str, name: str) -> float | None:
    code, text = _api(node, server, "/metrics")
    if code != 200:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


@pytest.fixture
def shared_dsn(postgres: PostgresServer) -> Iterator[str]:
    require_tools("perfdhcp", "dhclient", "busybox")
    name = postgres.create_database("two")
    dsn = postgres.dsn(name)
    init_schema(dsn)
    yield dsn
    postgres.drop_database(name)


def _rows(app: Appliance) -> list[dict[str, Any]]:
    result = app.cli("leases", "--config", str(app.config), "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout)["dhcp4"])


def _counters(app: Appliance) -> dict[str, int]:
    match = re.findall(r"stopping counters=(\{.*\})", app.log())
    return dict(ast.literal_eval(match[-1])) if match else {}


def _relay(lab: Lab, n: int) -> Node:
    return lab.add_phone(mac=f"02:30:00:00:00:{n:02x}", ipv4=f"10.77.0.{2 + n}/{SUBNET}")


def _perf(node: Node, server: str, base: str, clients: int) -> perfdhcp.Result:
    return perfdhcp.run(node, 4, "-r", "100", "-n", str(clients), "-R", str(clients), "-W", "2000000", "-d", "2",
                        "-b", f"mac={base}", server, timeout=180)


def test_both_serve_one_range_and_no_address_is_held_twice(lab: Lab, workdir: Path, shared_dsn: str) -> None:
    a, b = _pair(lab, workdir, shared_dsn)
    a.start()
    b.start()
    relay_a, relay_b = _relay(lab, 1), _relay(lab, 2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(_perf, relay_a, "10.77.0.1", "02:40:00:00:00:00", 600),
                pool.submit(_perf, relay_b, "10.77.0.2", "02:50:00:00:00:00", 600)]
        # Real clients broadcast meanwhile: both appliances answer, the client takes one offer.
        phones = [lab.add_phone(mac=f"00:15:65:20:00:{n:02x}") for n in range(1, 5)]
        got = {p.mac: Dhclient(p, workdir, f"dh{n}", DHCLIENT_CONF).obtain() for n, p in enumerate(phones[:3])}
        busy = udhcpc(phones[3], workdir, "u1", "-V", "yealink")
        results = [r.result() for r in runs]
    for result in results:
        assert result.stats["REQUEST-ACK"]["non unique addresses"] == 0, result.output
        assert result.completed >= 0.5 * 600, result.output  # a loaded machine drops some; most complete
    a.stop()
    b.stop()
    rows = _rows(a)
    assert rows == _rows(b)  # one database: both appliances see the same leases
    addresses = [r["address"] for r in rows]
    macs = [r["mac"] for r in rows]
    assert len(set(addresses)) == len(addresses) and len(set(macs)) == len(macs)
    # From the clients' side: every ACK a client received is a distinct row (an address ACKed to two clients would
    # be two ACKs for one row).
    acks = sum(r.completed for r in results)
    assert acks <= len(rows), (acks, len(rows))
    clients = {**{mac: g["new_ip_address"] for mac, g in got.items()}, phones[3].mac: busy["ip"]}
    assert len(set(clients.values())) == len(clients)
    by_mac = {r["mac"]: r["address"] for r in rows}
    assert all(by_mac[mac] == address for mac, address in clients.items())
    served_by = {g["new_dhcp_server_identifier"] for g in got.values()}
    counters = [_counters(a), _counters(b)]
    lost = sum(c.get("dhcp4.lease_lost", 0) for c in counters)
    acked = sum(c.get("dhcp4.ack", 0) for c in counters)
    print(f"\ntwo appliances: {acked} ACKs ({counters[0].get('dhcp4.ack', 0)} + {counters[1].get('dhcp4.ack', 0)}), "
          f"{lost} commits lost to the other appliance: collision rate {lost / max(1, acked + lost):.2%}; "
          f"dhclients served by {sorted(served_by)}")
    assert counters[0].get("dhcp4.ack", 0) > 500 and counters[1].get("dhcp4.ack", 0) > 500
    assert lost <= 0.05 * acked  # offers rarely collide: each appliance allocates from its own part of the range


def test_kill_9_one_appliance_the_other_serves_its_clients(lab: Lab, workdir: Path, shared_dsn: str) -> None:
    a, b = _pair(lab, workdir, shared_dsn)
    a.start()
    b.start()
    # Clients of A: B is paused while they get their leases, so they are A's (B learns them by notification).
    assert b.proc is not None
    b.proc.send_signal(19)  # SIGSTOP
    phones = [lab.add_phone(mac=f"00:15:65:30:00:{n:02x}") for n in range(1, 5)]
    clients = [Dhclient(p, workdir, f"k{n}", DHCLIENT_CONF) for n, p in enumerate(phones)]
    acked = {c.node.mac: c.obtain() for c in clients}
    assert {g["new_dhcp_server_identifier"] for g in acked.values()} == {"10.77.0.1"}
    for c in clients:
        c.stop_daemon()
    b.proc.send_signal(18)  # SIGCONT
    relay = _relay(lab, 1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(_perf, relay, "10.77.0.1", "02:60:00:00:00:00", 1500)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(1 for r in _rows(b) if r["mac"].startswith("02:60")) < 300:
            time.sleep(0.5)
        a.kill()  # kill -9 under load
        run.result()
    rows = {r["mac"]: r for r in _rows(b)}
    dead_ones = {mac: r for mac, r in rows.items() if mac.startswith("02:60")}
    assert len(dead_ones) >= 300
    # Every one of the dead appliance's clients rebinds (broadcast, no server id) and the survivor ACKs the same
    # address, with its own server identifier.
    argv = [sys.executable, "-m", "tests.lab.dhcp4relay", relay.address]
    argv += [f"{mac}={r['address']}={r['client_id'] or ''}" for mac, r in dead_ones.items()]
    result = relay.run(argv, timeout=120)
    answers = json.loads(result.stdout or "{}")
    assert len(answers) == len(dead_ones), result.stderr
    for mac_hex, (kind, address, server) in answers.items():
        mac = ":".join(mac_hex[i:i + 2] for i in range(0, 12, 2))
        assert (kind, address, server) == ("ACK", dead_ones[mac]["address"], "10.77.0.2"), (mac, kind, address)
    # The dhclients of A reboot (INIT-REBOOT, broadcast): same address, from B.
    for c in clients:
        again = c.obtain()
        assert again["new_ip_address"] == acked[c.node.mac]["new_ip_address"]
        assert again["new_dhcp_server_identifier"] == "10.77.0.2"
    # New clients are served too, never with an address someone holds.
    newcomer = lab.add_phone(mac="00:15:65:30:00:99")
    fresh = Dhclient(newcomer, workdir, "new", DHCLIENT_CONF).obtain()["new_ip_address"]
    assert fresh not in {r["address"] for r in rows.values()}
    b.stop()
    print(f"\nfailover: {len(answers)} clients of the killed appliance rebound to the survivor with their addresses")


def _tftp(phone: Node, server: str, name: str) -> None:
    # The recording script puts the leased address on as a /24; each appliance leases from its own part of the /21.
    phone.run(["ip", "route", "replace", f"10.77.0.0/{SUBNET}", "dev", phone.ifname], check=True)
    result = phone.run(["curl", "-s", "--max-time", "20", "-o", "/dev/null", f"tftp://{server}/{name}"], timeout=60)
    assert result.returncode == 0, (server, name, result.stderr, phone.run(["ip", "addr"]).stdout,
                                    phone.run(["ip", "route"]).stdout, phone.run(["ip", "neigh"]).stdout)


def test_a_phones_whole_journey_through_either_appliance(lab: Lab, workdir: Path, shared_dsn: str) -> None:
    """A phone gets its lease and boot file from A; A stops; the phone reboots onto B and fetches its configs
    there. Both appliances' status (B's API while it runs, A's `bootstrapd status` after it stopped: they read the
    same database) show one journey: A's steps, then B's, by time, each marked with its appliance."""
    require_tools("curl")
    a, b = _pair(lab, workdir, shared_dsn, status=True)
    for app in (a, b):
        for name in ("y000000000000.boot", "sip.cfg", "001565500001.cfg"):
            (app.root / name).write_text("#!version:1.0.0.1\n")
    a.start()
    b.start()
    admin = lab.add_phone(mac="02:77:00:00:00:aa", ipv4=f"10.77.0.40/{SUBNET}")
    phone = lab.add_phone(mac="00:15:65:50:00:01")
    mac = phone.mac
    assert b.proc is not None
    b.proc.send_signal(19)  # SIGSTOP: the phone's first lease is A's
    client = Dhclient(phone, workdir, "journey", DHCLIENT_CONF)
    first = client.obtain()
    assert first["new_dhcp_server_identifier"] == "10.77.0.1"
    client.stop_daemon()
    b.proc.send_signal(18)  # SIGCONT
    _tftp(phone, "10.77.0.1", "y000000000000.boot")

    def journey(server: str) -> dict[str, Any]:
        code, document = _api(admin, server, f"/api/phones/{mac}")
        return document if code == 200 else {}

    # B did not serve the phone (it only answers, late, the DISCOVER it found queued when it woke): its API shows
    # what A recorded, from the database.
    _until(lambda: any(s.get("file") == "y000000000000.boot" for s in journey("10.77.0.2").get("steps", [])), 60,
           "B's API to show A's steps")
    on_b = journey("10.77.0.2")
    name_a = next(s["appliance"] for s in on_b["steps"] if s.get("file") == "y000000000000.boot")
    assert [s["appliance"] for s in on_b["steps"] if s["kind"] == "ack"] == [name_a]
    assert name_a in on_b["phone"]["appliances"] and on_b["phone"]["stage"] == "boot"
    a.stop()
    again = client.obtain()  # INIT-REBOOT: B answers with the same address
    assert again["new_ip_address"] == first["new_ip_address"] and again["new_dhcp_server_identifier"] == "10.77.0.2"
    client.stop_daemon()
    for name in ("sip.cfg", "001565500001.cfg"):
        _tftp(phone, "10.77.0.2", name)
    _until(lambda: journey("10.77.0.2").get("phone", {}).get("stage") == "done", 60, "the journey to be done")
    document = journey("10.77.0.2")
    steps = document["steps"]
    times = [s["time"] for s in steps]
    assert times == sorted(times)
    by = [(s["appliance"], s["proto"], s["kind"], s.get("file")) for s in steps]
    name_b = next(who for who, *_ in by if who != name_a)
    served = [(who, file) for who, proto, _, file in by if proto == "tftp"]
    assert served == [(name_a, "y000000000000.boot"), (name_b, "sip.cfg"), (name_b, "001565500001.cfg")], by
    assert [who for who, proto, kind, _ in by if (proto, kind) == ("dhcp4", "ack")] == [name_a, name_b], by
    assert document["phone"]["appliances"] == [name_a, name_b]
    assert document["phone"]["address"] == first["new_ip_address"]
    # The same from the stopped appliance's side: `bootstrapd status` reads the database, not a file of its own.
    shown = a.cli("status", "--config", str(a.config), "--mac", mac)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if " tftp " in line]
    assert [line.split()[2] for line in lines] == [name_a, name_b, name_b], shown.stdout
    assert f"seen by {name_a}, {name_b}" in shown.stdout  # the one that saw it last, last
    print(f"\n$ bootstrapd status --mac {mac}   (on the stopped appliance)\n{shown.stdout}")
    listed = json.loads(a.cli("status", "--config", str(a.config), "--json").stdout)
    assert [(p["mac"], p["stage"]) for p in listed["phones"]] == [(mac, "done")]
    b.stop()


def test_postgresql_stopped_and_started_during_traffic(lab: Lab, workdir: Path) -> None:
    require_tools("perfdhcp", "dhclient", "curl", "chromium")
    server = PostgresServer()  # its own: this test stops it
    try:
        name = server.create_database("outage")
        dsn = server.dsn(name)
        init_schema(dsn)
        a, b = _pair(lab, workdir, dsn, status=True)
        a.start()
        b.start()
        admin = lab.add_phone(mac="02:77:00:00:00:aa", ipv4=f"10.77.0.40/{SUBNET}")
        assert _metric(admin, "10.77.0.1", "bootstrapd_store_up") == 1
        relay = _relay(lab, 1)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            run = pool.submit(perfdhcp.run, relay, 4, "-r", "100", "-p", "20", "-R", "100000", "-W", "2000000",
                              "-b", "mac=02:70:00:00:00:00", "10.77.0.1", timeout=120)
            time.sleep(5)
            stopped = time.time()
            server.stop("immediate")  # a crash: no shutdown checkpoint
            # While it is down: /metrics, the API and `bootstrapd status` say so, and since when.
            _until(lambda: _metric(admin, "10.77.0.1", "bootstrapd_store_up") == 0, 30, "bootstrapd_store_up 0")
            code, state = _api(admin, "10.77.0.1", "/api/store")
            assert code == 200 and state["up"] is False and state["backend"] == "postgresql", state
            assert stopped - 5 <= state["down_since"] <= time.time() and state["error"], state
            code, phones = _api(admin, "10.77.0.1", "/api/phones")
            assert code == 503 and phones["store"]["up"] is False, phones  # the journal is in that database
            shown = a.cli("status", "--config", str(a.config))
            assert shown.returncode == 1 and "UNREACHABLE since" in shown.stderr, shown.stderr
            assert _metric(admin, "10.77.0.2", "bootstrapd_store_up") == 0  # B too
            # The page, in a real browser: its banner says so (the DOM after its script ran).
            dom = _chromium(admin, workdir, f"http://admin:{STATUS_PASSWORD}@10.77.0.1:8080/status/",
                            "--dump-dom").stdout
            assert 'data-store="down"' in dom and "is unreachable since" in dom, dom[-3000:]
            time.sleep(2)
            server.start()
            result = run.result()
        _until(lambda: _metric(admin, "10.77.0.1", "bootstrapd_store_up") == 1, 60, "bootstrapd_store_up 1")
        outages = _metric(admin, "10.77.0.1", "bootstrapd_store_outages_total")
        seconds = _metric(admin, "10.77.0.1", "bootstrapd_store_outage_seconds_total")
        assert outages == 1 and seconds is not None and seconds > 0, (outages, seconds)
        # The phones whose ACK was withheld say so in the journal (written once the database was back).
        def withheld() -> list[dict[str, Any]]:
            code, listed = _api(admin, "10.77.0.1", "/api/phones?stage=stuck")
            return [p for p in listed["phones"] if (p["error"] or "").startswith("DHCP ACK withheld")] \
                if code == 200 else []

        _until(lambda: bool(withheld()), 60, "the journal to show the withheld ACKs")
        code, document = _api(admin, "10.77.0.1", f"/api/phones/{withheld()[0]['mac']}")
        kinds = [s["kind"] for s in document["steps"]]
        assert "withheld" in kinds and kinds[kinds.index("withheld") - 1] == "ack", document
        assert "not sent" in document["steps"][kinds.index("withheld")]["text"]
        shown = a.cli("status", "--config", str(a.config))
        assert shown.returncode == 0 and "UNREACHABLE" not in shown.stdout
        # Service resumed by itself: a new client gets a lease from each appliance's side of the range.
        phone = lab.add_phone(mac="00:15:65:40:00:01")
        Dhclient(phone, workdir, "after", DHCLIENT_CONF).obtain()
        a.stop()
        b.stop()
        rows = _rows(a)
        # Every ACK a client received is in the database (none was sent for an uncommitted lease).
        assert result.completed <= len([r for r in rows if r["mac"].startswith("02:70")]), result.output
        assert result.completed > 0
        for app in (a, b):
            log = app.log()
            assert "lost PostgreSQL" in log and "is back after" in log, log[-3000:]
        counters = _counters(a)
        assert counters.get("dhcp4.commit_failed", 0) > 0  # replies were withheld while it was down
        withheld_acks = counters.get("dhcp4.withheld", 0)
        assert withheld_acks == counters["dhcp4.commit_failed"] + counters.get("dhcp4.lease_lost", 0)
        print(f"\noutage: {result.completed} ACKs received, {counters.get('dhcp4.commit_failed', 0)} replies "
              f"withheld while PostgreSQL was down ({seconds:.1f} s by bootstrapd_store_outage_seconds_total), "
              f"{len(rows)} leases in the database")
    finally:
        server.close()
