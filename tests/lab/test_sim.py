"""``bootstrapd sim`` against the real daemon in the lab: 100 simulated phones provisioned over TFTP from the example
tree (rendered, encrypted <mac>.cfg with its key file), each one's configuration equal to ``explain``'s, the daemon's
own events and leases agreeing with what the phones report; a second boot where the MD5 check finds nothing changed;
phones that cannot be provisioned (a missing include, a model PnP refuses), each with the right reason.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.lab.appliance import Appliance
from tests.lab.netns import Lab
from tests.lab.simphones import (
    add_sim_node,
    counters,
    events,
    explained,
    fetched,
    inventory,
    lab_macs,
    retried,
    run_sim,
    served,
)

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "configs" / "tree"
PROBE = "10.77.0.21"  # a client that holds no lease

CONFIG = """
[server]
interface = "eth1"
root = "{root}"
state_dir = "@STATE@"
url = "{scheme}://{{ipv4}}/"

[dhcp4]
enabled = true
range = "10.77.0.100-10.77.0.250"
router = "10.77.0.1"
rate_limit = 1000.0
rate_burst = 1000
{dhcp_extra}

[pnp]
enabled = true
url = "{scheme}://{{ipv4}}/"
{pnp_extra}

[tftp]
enabled = true

[http]
enabled = true
{http_extra}

[ftp]
enabled = true
passive_ports = "30000-30199"
{extra}

[provisioning]
inventory = "{inventory}"
{provisioning_extra}

[provisioning.encrypt]
mac = true
"""


def start(lab: Lab, workdir: Path, phones: list[tuple[str, str]], *, root: Path = TREE, scheme: str = "tftp",
          dhcp_extra: str = "", pnp_extra: str = "", extra: str = "", provisioning_extra: str = "",
          http_extra: str = "") -> Appliance:
    inv = inventory(workdir / "phones.csv", phones)
    text = CONFIG.format(root=root, inventory=inv, scheme=scheme, dhcp_extra=dhcp_extra, pnp_extra=pnp_extra,
                         extra=extra, provisioning_extra=provisioning_extra, http_extra=http_extra)
    app = Appliance(lab.add_appliance(), workdir, text)
    app.start("--log-format", "json", "--debug")
    return app


def tftp_name(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1]


def agrees_with_the_server(log: str, *boots: list[dict[str, Any]]) -> None:
    """The daemon served (per protocol, per client address, per file) exactly what the phones say they fetched."""
    phones = {r["address"] for records in boots for r in records}
    everything = served(log)
    theirs = Counter({key: n for key, n in everything.items() if key[1] in phones})
    ours = fetched(*boots)
    # The daemon's own counters (logged when it stopped) count the transfers it logged until then, and one ACK per
    # phone per boot.
    count, until_stop = counters(log)
    logged = served(until_stop)
    protocols = (("tftp.transfer", ("tftp",)), ("http.request", ("http", "https")), ("ftp.transfer", ("ftp",)))
    for kind, schemes in protocols:
        assert count.get(kind, 0) == sum(n for key, n in logged.items() if key[0] in schemes), kind
    assert count["dhcp4.ack"] == sum(len(records) for records in boots)
    if not retried(*boots):
        assert theirs == ours
    else:  # a request sent again may reach the server twice: every phone's transfer is still there
        assert set(ours) <= set(theirs)


@pytest.mark.lab
@pytest.mark.parametrize(("scheme", "count"), [("tftp", 100), ("http", 100), ("ftp", 30), ("https", 20)])
def test_phones_agree_with_explain_and_with_the_server(lab: Lab, workdir: Path, scheme: str, count: int) -> None:
    """100 phones over TFTP and over HTTP, 30 over FTP, 20 over HTTPS (certificates checked against the lab's CA;
    the example tree's resource files stay on TFTP): each one provisioned from its own leased address, its own
    <mac>.cfg under the MAC-file owner rule (on by default with DHCP), twice (the second boot's MD5 check finds
    nothing changed)."""
    phones = lab_macs(count)
    tls: list[str] = []
    http_extra = ""
    if scheme == "https":
        from tests.lab.tls import make_certificate

        ca, cert, key = make_certificate(workdir, ["10.77.0.1"])
        http_extra = f'tls_port = 443\ntls_cert = "{cert}"\ntls_key = "{key}"'
        tls = ["--ca", str(ca)]
    app = start(lab, workdir, phones, scheme=scheme, http_extra=http_extra)
    sim = add_sim_node(lab)
    result, doc = run_sim(sim, workdir, "--count", str(count), "--inventory", str(workdir / "phones.csv"),
                          "--boots", "2", "--show-secrets", "--timeout", "300", *tls)
    if scheme == "http":  # the rule is on: another address asking for a phone's own file is refused
        other = lab.add_phone(ipv4=f"{PROBE}/24")
        refused = other.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             f"http://10.77.0.1/{phones[0][0]}.cfg"])
        assert refused.stdout == "403", refused
    app.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    first, second = doc["boots"]
    records: list[dict[str, Any]] = first["phones"]
    assert first["summary"]["provisioned"] == count and first["summary"]["failed"] == 0
    assert {r["mac"] for r in records} == {mac for mac, _ in phones}

    # Each phone's configuration is what explain says for it (the encrypted <mac>.cfg decrypted included).
    expected = explained(app.config, records)
    for record in records:
        assert record["configuration"] == expected[record["mac"]], record["mac"]
        assert record["configuration"]["account.1.password"].startswith("pw-Secret-")
        assert record["url_source"] == "PnP (SIP NOTIFY)" and record["url"] == f"{scheme}://10.77.0.1/"
        kinds = Counter((urlsplit(t["url"]).scheme, t["kind"]) for t in record["transfers"] if t["status"] == "ok")
        assert kinds[(scheme, "key")] == 1  # <mac>_Security.enc
        assert kinds[(scheme, "cfg")] == 4 and kinds[(scheme, "boot")] == 1  # model CFG, sip, features, <mac>.cfg
        assert kinds[("tftp", "resource")] == 2  # AutoDST.xml and contacts.xml: tftp:// URLs in the tree

    # The server saw `count` distinct clients, each at its own leased address, and served exactly what they fetched.
    log = app.log()
    by_mac = {r["mac"]: r["address"] for r in records}
    assert len(set(by_mac.values())) == count
    leased = {e["mac"].replace(":", ""): e["address"] for e in events(log, "dhcp4.ack")}
    assert leased == by_mac
    answers = events(log, "pnp.answer")
    assert Counter(e["ip"] for e in answers) == Counter(r["address"] for r in second["phones"] + records)
    agrees_with_the_server(log, records, second["phones"])
    # Each phone's own files went to that phone's address (and, over HTTP, to its own User-Agent's MAC).
    theirs = served(log)
    for mac, address in by_mac.items():
        for name in (f"{mac}.cfg", f"{mac}_Security.enc"):
            assert theirs[(scheme, address, name, True)] == 2, (mac, name)
    if scheme == "http":
        [probe] = [e for e in events(log, "http.request") if e["client"] == PROBE]
        assert probe["outcome"] == "not_owner" and probe["status"] == 403
    for event in events(log, "http.request"):
        if event["client"] == PROBE:
            continue
        assert event["mac"].replace(":", "") == next(m for m, a in by_mac.items() if a == event["client"])
    if scheme.startswith("http"):
        ok = [e for e in events(log, "http.request") if e["status"] == 200]
        assert len(ok) >= count * 2 * 6 and all(e["tls"] is (scheme == "https") for e in ok)  # boot, 4 CFG, key

    # The lease store agrees too: one active lease per phone, at the address the phone used.
    stored = json.loads(app.cli("leases", "--config", str(app.config), "--json").stdout)["dhcp4"]
    assert {lease["mac"].replace(":", ""): lease["address"] for lease in stored} == by_mac

    # Second boot: each phone asks for its address again (INIT-REBOOT: one REQUEST, ACKed), and the MD5 check finds
    # every CFG file unchanged.
    assert second["summary"]["provisioned"] == count and second["summary"]["not_updated"] == count
    assert {r["mac"]: r["address"] for r in second["phones"]} == by_mac
    assert all(r["dhcp"]["init_reboot"] == "ack" for r in second["phones"])
    assert all(r["dhcp"]["init_reboot"] is None for r in records)
    assert Counter(e["mac"].replace(":", "") for e in events(log, "dhcp4.ack")) == Counter({m: 2 for m in by_mac})
    assert all(r["updated"] is False for r in second["phones"])


FAILING_BOOT = """#!version:1.0.0.1
[T46U]include:config "y000000000108.cfg"
[T54W]include:config "t54w-extra.cfg"
include:config "sip.cfg"
include:config "$MAC.cfg"
"""


FLOOR3_BOOT = '#!version:1.0.0.1\ninclude:config "../sip.cfg"\ninclude:config "account.cfg"\n'
FAILING_RULES = """
[[pnp.rule]]
model = "T48U"
refuse = true

[[pnp.rule]]
model = "T57W"
url = "http://floor3:wrong-Secret@{ipv4}/floor3/"

[[pnp.rule]]
model = "T53W"
url = "http://floor3:floor3-Secret@{ipv4}/floor3/"
"""
FAILING_AUTH = """
[[auth]]
path = "/floor3/"
user = "floor3"
password = "{hashed}"
"""


@pytest.mark.lab
@pytest.mark.parametrize("scheme", ["tftp", "http"])
def test_phones_that_cannot_be_provisioned_are_reported_with_the_reason(lab: Lab, workdir: Path,
                                                                         scheme: str) -> None:
    """Over the scheme of the server's URL: a T54W misses an include, PnP refuses the T48U, a phone new to the
    inventory has no <mac>.cfg; over HTTP whatever the scheme: the T57W's PnP URL has the wrong password for the
    floor3 activation-code folder (401), the T53W's the right one (provisioned from the folder)."""
    from bootstrapd.provisioning.auth import hash_password

    root = workdir / "tree"
    root.mkdir()
    for name in ("sip.cfg", "y000000000108.cfg", "{mac}.cfg.j2"):
        (root / name).write_bytes((TREE / name).read_bytes())
    (root / "y000000000000.boot").write_text(FAILING_BOOT)
    (root / "floor3").mkdir()
    (root / "floor3" / "y000000000000.boot").write_text(FLOOR3_BOOT)
    (root / "floor3" / "account.cfg").write_text("#!version:1.0.0.1\naccount.1.user_name = 3100\n")
    # T46U, T54W, T48U, T57W, T53W in turn; an eleventh phone (a new MAC) is not in the inventory
    phones = lab_macs(10, ("T46U", "T54W", "T48U", "T57W", "T53W"))
    app = start(lab, workdir, phones, root=root, scheme=scheme, dhcp_extra='[dhcp4.options]\n66 = ""',
                pnp_extra=FAILING_RULES, extra=FAILING_AUTH.format(hashed=hash_password("floor3-Secret", n=1024)))
    sim = add_sim_node(lab)
    result, doc = run_sim(sim, workdir, "--count", "11", "--inventory", str(workdir / "phones.csv"), "--models",
                          "T46U", "--pnp-wait", "2", "--timeout", "120")
    app.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    records = {r["mac"]: r for r in doc["boots"][0]["phones"]}
    reasons = {mac: records[mac]["failure"] for mac, _ in phones}
    not_found = "TFTP error 1: file not found" if scheme == "tftp" else "HTTP 404 Not Found"
    for mac, model in phones:
        if model in ("T46U", "T53W"):
            assert reasons[mac] is None, reasons[mac]
        elif model == "T54W":
            assert reasons[mac] == f"t54w-extra.cfg not found ({not_found})"
        elif model == "T57W":
            assert reasons[mac] == f"floor3/{mac}.boot: HTTP 401 Unauthorized"
        else:
            assert reasons[mac] == ("no provisioning URL (PnP (SIP NOTIFY): PnP: no answer to 3 SUBSCRIBEs in 2 s; "
                                    "DHCPv4 custom option: none configured (128-254 with a URL); DHCPv4 option 66: "
                                    "not sent to this phone; DHCPv4 option 43: not sent to this phone; "
                                    "DHCPv6 option 59: no DHCPv6 reply with option 59)")
    for mac, model in phones:
        if model == "T53W":
            record = records[mac]
            assert record["url"] == "http://floor3:********@10.77.0.1/floor3/"
            assert record["configuration"]["account.1.user_name"] == "3100"
    [stray] = set(records) - {mac for mac, _ in phones}
    assert records[stray]["model"] == "T46U"
    assert records[stray]["failure"] == f"{stray}.cfg not found ({not_found})"
    summary = doc["boots"][0]["summary"]
    assert summary["provisioned"] == 4 and summary["failed"] == 7
    assert "FAILED x2: t54w-extra.cfg not found" in result.stdout
    assert "FAILED x2: floor3/<mac>.boot: HTTP 401 Unauthorized" in result.stdout
    assert "FAILED x1: <mac>.cfg not found" in result.stdout
    # The daemon's side of the 401s: refused for want of the folder's credentials, the password never logged.
    log = app.log()
    wrong = {records[mac]["address"] for mac, model in phones if model == "T57W"}
    refused = [e for e in events(log, "http.request") if e["client"] in wrong]
    assert refused and all(e["status"] == 401 for e in refused)
    assert "wrong-Secret" not in log and "floor3-Secret" not in log
    assert "wrong-Secret" not in result.stdout + result.stderr


@pytest.mark.lab
def test_dhcpv6_option_59_provisions_over_tftp_from_each_phone_s_ipv6_address(lab: Lab, workdir: Path) -> None:
    phones = lab_macs(5)
    app = start(lab, workdir, phones, dhcp_extra='[dhcp4.options]\n66 = ""\n\n[dhcp6]\nenabled = true\n'
                'range = "fd77::100-fd77::1ff"\nbootfile_url = "tftp://[{ipv6}]/"\nforce_bootfile_url = true')
    sim = add_sim_node(lab)
    lab.wait_link_local(sim)
    result, doc = run_sim(sim, workdir, "--count", "5", "--inventory", str(workdir / "phones.csv"), "--dhcp6",
                          "--no-pnp", "--timeout", "120")
    app.stop()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = doc["boots"][0]["phones"]
    assert all(r["url_source"] == "DHCPv6 option 59" and r["url"] == "tftp://[fd77::1]/" for r in records)
    addresses = {r["ipv6"] for r in records}
    assert len(addresses) == 5 and all(a.startswith("fd77::1") for a in addresses)
    # Every transfer from the phone's own address of the URL's family (the example tree's resource URLs are IPv4).
    served = Counter((e["client"], e["file"]) for e in events(app.log(), "tftp.transfer"))
    fetched = Counter((r["ipv6"] if "[" in t["url"] else r["address"], tftp_name(t["url"]))
                      for r in records for t in r["transfers"])
    assert served == fetched
    assert sum(1 for client, _ in fetched if client in addresses) >= 5 * 7
