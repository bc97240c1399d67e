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

import pytest

from tests.lab.appliance import Appliance
from tests.lab.netns import Lab
from tests.lab.simphones import add_sim_node, events, explained, inventory, lab_macs, run_sim

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "configs" / "tree"

CONFIG = """
[server]
interface = "eth1"
root = "{root}"
state_dir = "@STATE@"
url = "tftp://{{ipv4}}/"

[dhcp4]
enabled = true
range = "10.77.0.100-10.77.0.250"
router = "10.77.0.1"
rate_limit = 1000.0
rate_burst = 1000
{dhcp_extra}

[pnp]
enabled = true
url = "tftp://{{ipv4}}/"
{pnp_extra}

[tftp]
enabled = true

[provisioning]
inventory = "{inventory}"

[provisioning.encrypt]
mac = true
"""


def start(lab: Lab, workdir: Path, phones: list[tuple[str, str]], *, root: Path = TREE, dhcp_extra: str = "",
          pnp_extra: str = "") -> Appliance:
    inv = inventory(workdir / "phones.csv", phones)
    text = CONFIG.format(root=root, inventory=inv, dhcp_extra=dhcp_extra, pnp_extra=pnp_extra)
    app = Appliance(lab.add_appliance(), workdir, text)
    app.start("--log-format", "json", "--debug")
    return app


def tftp_name(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1]


@pytest.mark.lab
def test_100_phones_over_tftp_agree_with_explain_and_with_the_server(lab: Lab, workdir: Path) -> None:
    phones = lab_macs(100)
    app = start(lab, workdir, phones)
    sim = add_sim_node(lab)
    result, doc = run_sim(sim, workdir, "--count", "100", "--inventory", str(workdir / "phones.csv"),
                          "--boots", "2", "--show-secrets", "--timeout", "300")
    app.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    first, second = doc["boots"]
    records: list[dict[str, Any]] = first["phones"]
    assert first["summary"]["provisioned"] == 100 and first["summary"]["failed"] == 0
    assert {r["mac"] for r in records} == {mac for mac, _ in phones}

    # Each phone's configuration is what explain says for it (the encrypted <mac>.cfg decrypted included).
    expected = explained(app.config, records)
    for record in records:
        assert record["configuration"] == expected[record["mac"]], record["mac"]
        assert record["configuration"]["account.1.password"].startswith("pw-Secret-")
        assert record["url_source"] == "PnP (SIP NOTIFY)"
        assert [t["kind"] for t in record["transfers"]].count("key") == 1  # <mac>_Security.enc

    # The server saw 100 distinct clients, each at its own leased address, and served exactly what they fetched.
    log = app.log()
    acks = events(log, "dhcp4.ack")
    by_mac = {r["mac"]: r["address"] for r in records}
    assert len({r["address"] for r in records}) == 100
    leased = {e["mac"].replace(":", ""): e["address"] for e in acks}
    assert leased == by_mac
    answers = events(log, "pnp.answer")
    assert Counter(e["ip"] for e in answers) == Counter(r["address"] for r in second["phones"] + records)
    served = Counter((e["client"], e["file"], e["outcome"] == "ok") for e in events(log, "tftp.transfer"))
    fetched = Counter((r["address"], tftp_name(t["url"]), t["status"] == "ok")
                      for boot in (records, second["phones"]) for r in boot for t in r["transfers"])
    if not any(t["retries"] for boot in (records, second["phones"]) for r in boot for t in r["transfers"]):
        assert served == fetched
    else:  # a retransmitted RRQ may start a second transfer on the server: every phone's file is still there
        assert set(fetched) <= set(served)
    assert sum(1 for e in events(log, "tftp.transfer") if e["outcome"] == "ok") >= 100 * 8

    # The lease store agrees too: one active lease per phone, at the address the phone used.
    stored = json.loads(app.cli("leases", "--config", str(app.config), "--json").stdout)["dhcp4"]
    assert {lease["mac"].replace(":", ""): lease["address"] for lease in stored} == by_mac

    # Second boot: the same addresses, and the MD5 check finds every CFG file unchanged.
    assert second["summary"]["provisioned"] == 100 and second["summary"]["not_updated"] == 100
    assert {r["mac"]: r["address"] for r in second["phones"]} == by_mac
    assert all(r["updated"] is False for r in second["phones"])


FAILING_BOOT = """#!version:1.0.0.1
[T46U]include:config "y000000000108.cfg"
[T54W]include:config "t54w-extra.cfg"
include:config "sip.cfg"
include:config "$MAC.cfg"
"""


@pytest.mark.lab
def test_phones_that_cannot_be_provisioned_are_reported_with_the_reason(lab: Lab, workdir: Path) -> None:
    root = workdir / "tree"
    root.mkdir()
    for name in ("sip.cfg", "y000000000108.cfg", "{mac}.cfg.j2"):
        (root / name).write_bytes((TREE / name).read_bytes())
    (root / "y000000000000.boot").write_text(FAILING_BOOT)
    phones = lab_macs(8)  # T46U, T54W, T48U in turn; a ninth phone (a new MAC) is not in the inventory
    app = start(lab, workdir, phones, root=root,
                dhcp_extra='[dhcp4.options]\n66 = ""', pnp_extra='[[pnp.rule]]\nmodel = "T48U"\nrefuse = true')
    sim = add_sim_node(lab)
    result, doc = run_sim(sim, workdir, "--count", "9", "--inventory", str(workdir / "phones.csv"), "--models",
                          "T46U", "--pnp-wait", "2", "--timeout", "120")
    app.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    records = {r["mac"]: r for r in doc["boots"][0]["phones"]}
    reasons = {mac: records[mac]["failure"] for mac, _ in phones}
    for mac, model in phones:
        if model == "T46U":
            assert reasons[mac] is None, reasons[mac]
        elif model == "T54W":
            assert reasons[mac] == "t54w-extra.cfg not found (TFTP error 1: file not found)"
        else:
            assert reasons[mac] == ("no provisioning URL (PnP (SIP NOTIFY): PnP: no answer to 3 SUBSCRIBEs in 2 s; "
                                    "DHCPv4 custom option: none configured (128-254 with a URL); DHCPv4 option 66: "
                                    "not sent to this phone; DHCPv4 option 43: not sent to this phone; "
                                    "DHCPv6 option 59: no DHCPv6 reply with option 59)")
    [stray] = set(records) - {mac for mac, _ in phones}
    assert records[stray]["model"] == "T46U"
    assert records[stray]["failure"] == f"{stray}.cfg not found (TFTP error 1: file not found)"
    summary = doc["boots"][0]["summary"]
    assert summary["provisioned"] == 3 and summary["failed"] == 6
    assert "FAILED x3: t54w-extra.cfg not found" in result.stdout
    assert "FAILED x1: <mac>.cfg not found" in result.stdout


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
