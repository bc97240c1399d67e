"""The simulated phones' HTTP client against a real web server (nginx, the boot storm's HTTP anchor): bootstrapd
hands out the URLs (DHCP, PnP with per-model rules), nginx serves the pre-rendered tree with an activation-code
directory behind basic auth. Phones with the right password are provisioned from it, the wrong password fails with
the 401, and every request carried the Yealink User-Agent of its phone, from its own leased address.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.bench.storm import make_tree, prerender
from tests.conftest import require_tools
from tests.lab.appliance import Appliance
from tests.lab.netns import Lab
from tests.lab.simphones import add_sim_node, inventory, lab_macs, run_sim

CONFIG = """
[server]
interface = "eth1"
root = "{root}"
state_dir = "@STATE@"
url = "http://{{ipv4}}/"

[dhcp4]
enabled = true
range = "10.77.0.100-10.77.0.199"

[pnp]
enabled = true
url = "http://{{ipv4}}/"

[[pnp.rule]]
model = "T48U"
url = "http://floor3:wrong-Secret@{{ipv4}}/floor3/"

[[pnp.rule]]
model = "T54W"
url = "http://floor3:floor3-Secret@{{ipv4}}/floor3/"

[provisioning]
inventory = "{inventory}"
"""


def nginx(lab_node: object, work: Path, served: Path) -> subprocess.Popen[bytes]:
    (work / "htpasswd").write_text("floor3:{PLAIN}floor3-Secret\n")
    conf = work / "nginx.conf"
    # user root: the workers read the test's temporary folder, which only root may enter.
    conf.write_text(f"""user root;
worker_processes 1;
pid {work / 'nginx.pid'};
error_log {work / 'nginx-error.log'};
events {{ worker_connections 1024; }}
http {{
  log_format phone '$remote_addr "$request" $status "$http_user_agent"';
  access_log {work / 'access.log'} phone;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  server {{
    listen 10.77.0.1:80;
    root {served};
    location /floor3/ {{ auth_basic "floor3"; auth_basic_user_file {work / 'htpasswd'}; }}
  }}
}}
""")
    proc: subprocess.Popen[bytes] = lab_node.popen(  # type: ignore[attr-defined]
        ["nginx", "-c", str(conf), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not lab_node.run(["ss", "-Hltn", "sport = :80"]).stdout.strip():  # type: ignore[attr-defined]
        assert proc.poll() is None, (work / "nginx-error.log").read_text()
        assert time.monotonic() < deadline, "nginx did not listen"
        time.sleep(0.1)
    return proc


@pytest.mark.lab
def test_phones_over_http_with_an_auth_directory(lab: Lab, workdir: Path) -> None:
    require_tools("nginx")
    tree = workdir / "tree"
    make_tree(tree)
    floor3 = tree / "floor3"  # an activation-code directory: its own boot file, the shared files one level up
    floor3.mkdir()
    (floor3 / "y000000000000.boot").write_text('#!version:1.0.0.1\ninclude:config "../sip.cfg"\n'
                                               'include:config "account.cfg"\n')
    (floor3 / "account.cfg").write_text("#!version:1.0.0.1\naccount.1.user_name = 3100\n")
    phones = lab_macs(9)  # T46U, T54W, T48U in turn
    phones_csv = inventory(workdir / "phones.csv", phones)
    served = workdir / "served"
    prerender(tree, phones_csv, served)
    ap = lab.add_appliance()
    app = Appliance(ap, workdir, CONFIG.format(root=tree, inventory=phones_csv))
    app.start()
    web = nginx(ap, workdir, served)
    sim = add_sim_node(lab)
    result, doc = run_sim(sim, workdir, "--count", "9", "--inventory", str(phones_csv), "--timeout", "120")
    web.terminate()
    web.wait(10)
    app.stop()
    records = {r["mac"]: r for r in doc["boots"][0]["phones"]}
    assert result.returncode == 1, result.stdout + result.stderr
    for mac, model in phones:
        record = records[mac]
        if model == "T46U":
            assert record["provisioned"], record["failure"]
            assert record["configuration"]["account.1.password"] == "********"
            assert [t["url"].rsplit("/", 1)[1] for t in record["transfers"] if t["status"] == "ok"] == [
                "y000000000000.boot", "y000000000108.cfg", "sip.cfg", "features.cfg", f"{mac}.cfg"]
        elif model == "T54W":
            assert record["provisioned"], record["failure"]
            assert record["url"] == "http://floor3:********@10.77.0.1/floor3/"
            assert record["configuration"]["account.1.user_name"] == "3100"
        else:
            assert record["failure"] == f"floor3/{mac}.boot: HTTP 401 Unauthorized"
    # nginx saw each phone at its own leased address, with its own Yealink User-Agent.
    log = (workdir / "access.log").read_text().splitlines()
    for mac, model in phones:
        address = records[mac]["address"]
        agents = {line.split('"')[3] for line in log if line.startswith(address + " ")}
        colons = ":".join(mac[i:i + 2] for i in range(0, 12, 2))
        assert len(agents) == 1, agents
        [agent] = agents
        vendor, product, version, hw = agent.split(" ")
        assert (vendor, product, hw) == ("Yealink", f"SIP-{model}", colons) and version.endswith(".86.0.90")
    assert "floor3-Secret" not in result.stdout + result.stderr
