"""A phone's ``<mac>-local.cfg`` through the one upload store, over each scheme, and back on its next boot.

The example tree with ``static.auto_provision.custom.sync = 1`` and ``custom.protect = 1`` in its shared
``features.cfg``: each phone asks for ``<mac>-local.cfg`` (not there on the first boot) and then uploads its
personal settings to the same URL, over the scheme its PnP URL has (the per-model PnP rules put the T46U on TFTP,
the T54W on HTTP, the T48U on FTP): TFTP WRQ, HTTP PUT, FTP STOR. On the second boot the file comes back from the
store to its owner only, and the phone's effective configuration, equal to ``explain``'s, has the personal values.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.lab.netns import Lab
from tests.lab.simphones import add_sim_node, events, explained, lab_macs, run_sim
from tests.lab.test_sim import TREE, agrees_with_the_server, start

SCHEMES = {"T46U": "tftp", "T54W": "http", "T48U": "ftp"}
LOCAL = "account.1.label = My own desk\nphone_setting.backlight_time = 15"
SYNC = "\nstatic.auto_provision.custom.sync = 1\nstatic.auto_provision.custom.protect = 1\n"
RULES = "\n".join(f'[[pnp.rule]]\nmodel = "{model}"\nurl = "{scheme}://{{ipv4}}/"\n'
                  for model, scheme in SCHEMES.items())


@pytest.mark.lab
def test_local_cfg_is_uploaded_over_each_scheme_and_comes_back_on_the_second_boot(lab: Lab, workdir: Path) -> None:
    tree = workdir / "tree"
    shutil.copytree(TREE, tree)
    with (tree / "features.cfg").open("a") as features:
        features.write(SYNC)
    phones = lab_macs(12)  # T46U, T54W, T48U in turn
    app = start(lab, workdir, phones, root=tree, pnp_extra=RULES, provisioning_extra="uploads = true")
    sim = add_sim_node(lab)
    result, doc = run_sim(sim, workdir, "--count", "12", "--inventory", str(workdir / "phones.csv"), "--boots",
                          "2", "--local-cfg", LOCAL, "--show-secrets", "--timeout", "300")
    app.stop()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    first, second = (boot["phones"] for boot in doc["boots"])
    models = dict(phones)

    for record in first:
        scheme = SCHEMES[models[record["mac"]]]
        assert record["url"] == f"{scheme}://10.77.0.1/"
        local = [t for t in record["transfers"] if t["kind"] in ("local", "upload")]
        name = f"{record['mac']}-local.cfg"
        assert [(t["kind"], t["status"], urlsplit(t["url"]).scheme, t["url"].rsplit("/", 1)[1]) for t in local] == [
            ("local", "not-found", scheme, name), ("upload", "ok", scheme, name)]
        assert record["configuration"]["account.1.label"] != "My own desk"
        # In the one store, under the phone's MAC, whatever the protocol; written whole.
        stored = app.state / "uploads" / record["mac"] / name
        assert stored.read_text() == "#!version:1.0.0.1\n" + LOCAL + "\n"

    # Second boot: the file comes back to its phone and its values win (custom.protect = 1), as explain says.
    expected = explained(app.config, second)
    for record in second:
        scheme = SCHEMES[models[record["mac"]]]
        [local] = [t for t in record["transfers"] if t["kind"] == "local"]
        assert local["status"] == "ok" and urlsplit(local["url"]).scheme == scheme
        assert record["configuration"]["account.1.label"] == "My own desk"
        assert record["configuration"]["phone_setting.backlight_time"] == "15"
        assert record["configuration"]["account.1.password"].startswith("pw-Secret-")
        assert record["configuration"] == expected[record["mac"]], record["mac"]

    # The daemon's side: every upload stored, on the protocol the phone used, from the phone's own address.
    log = app.log()
    agrees_with_the_server(log, first, second)
    uploads = Counter(("tftp", e["client"]) for e in events(log, "tftp.transfer") if e.get("write")
                      and e["outcome"] == "ok")
    uploads += Counter(("http", e["client"]) for e in events(log, "http.request") if e["method"] == "PUT"
                       and e["outcome"] == "stored")
    uploads += Counter(("ftp", e["client"]) for e in events(log, "ftp.transfer") if e["command"] == "STOR"
                       and e["outcome"] == "stored")
    assert uploads == Counter((SCHEMES[models[r["mac"]]], r["address"]) for r in first + second)
