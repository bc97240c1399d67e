"""The lab the HTTP and FTP tests share: an appliance with DHCPv4, TFTP, HTTP, HTTPS and FTP on, a phone that holds
a lease, an intruder with a static address, and a tree with common files, a MAC file, an [[auth]] folder, a large
file, a symlink out of the tree and a FIFO. A canary outside the tree tells whether anything read or wrote there."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootstrapd.provisioning.auth import hash_password
from tests.conftest import require_root, require_tools
from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient
from tests.lab.netns import Lab, Node, lab
from tests.lab.tls import make_certificate

V4, V6 = "10.77.0.1", "fd77::1"
PHONE_MAC = "00:15:65:aa:00:01"
MAC = PHONE_MAC.replace(":", "")
OTHER_MAC = "001565bb0002"
USER, PASSWORD = "floor3", "s3cret-activation"

CONFIG = """
[server]
interface = "eth1"
root = "@ROOT@"
state_dir = "@STATE@"
url = "http://{{ipv4}}/"

[dhcp4]
enabled = true
range = "10.77.0.100-10.77.0.199"
lease_time = 3600

[tftp]
enabled = true
rate_limit = 0

[http]
enabled = true
tls_cert = "{cert}"
tls_key = "{key}"
head_timeout = 2.0
keepalive_timeout = 5.0
send_timeout = 2.0
max_connections_per_client = 16
rate_limit = 200.0
rate_burst = 400

[ftp]
enabled = true
passive_ports = "30000-30019"
idle_timeout = 20.0
data_timeout = 10.0
max_connections_per_client = 4
login_fail_delay = 0.2

[provisioning]
mac_files = "owner"
uploads = true
upload_max_size = 65536

[[auth]]
path = "/T46U_1/"
user = "{user}"
password = "{password}"
"""


@dataclass
class Env:
    lab: Lab
    app: Appliance
    phone: Node  # holds bootstrapd's lease for PHONE_MAC
    intruder: Node  # a static address, no lease
    work: Path
    root: Path
    out: Path
    files: dict[str, bytes]
    ca: Path
    watch_log: Path

    def curl(self, node: Node, url: str, *args: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        """(status, headers of the last response, body) of one curl run."""
        headers = self.out / f"h{random.randrange(1 << 30)}"
        body = self.out / f"b{random.randrange(1 << 30)}"
        result = node.run(["curl", "-sS", "--max-time", str(int(timeout)), "--cacert", str(self.ca), "-D",
                           str(headers), "-o", str(body), "-w", "%{http_code}", *args, url], timeout=timeout + 10)
        status = int(result.stdout.strip() or 0)
        blocks = headers.read_bytes().decode("latin-1").split("\r\n\r\n") if headers.exists() else [""]
        last = [b for b in blocks if b.strip()][-1:] or [""]
        parsed: dict[str, str] = {}
        for line in last[0].split("\r\n")[1:]:
            key, _, value = line.partition(":")
            parsed[key.strip().lower()] = value.strip()
        data = body.read_bytes() if body.exists() else b""
        headers.unlink(missing_ok=True)
        body.unlink(missing_ok=True)
        return status, parsed, data

    def raw(self, node: Node, host: str, port: int, mode: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        """Run tests/lab/rawclient.py in ``node``: send hostile bytes, report what came back."""
        stdin = next((a for a in args if len(a) > 4096), None)
        args = tuple("-" if a is stdin else a for a in args)  # long payloads go on stdin, not the command line
        result = node.run([sys.executable, "-m", "tests.lab.rawclient", host, str(port), mode, *args],
                          timeout=timeout, input=stdin)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def healthy(self, node: Node | None = None) -> None:
        """A normal download after something hostile: the service still serves."""
        status, _, body = self.curl(node or self.phone, f"http://{V4}/common.cfg")
        assert status == 200 and body == self.files["common.cfg"]

    def outside_untouched(self) -> None:
        """Nothing outside the tree and the upload store was opened, read or written: inotifywait watches the
        folder the tree's symlinks point into, and the folder holding the tree (for files created beside it)."""
        time.sleep(0.2)
        for log, what in ((self.watch_log, "outside the tree"), (Path(str(self.watch_log) + ".tree"), "in the tree")):
            seen = log.read_text() if log.exists() else ""
            assert seen == "", f"something touched files {what}:\n{seen}"


def build(work: Path) -> Iterator[Env]:
    require_root()
    require_tools("curl", "lftp", "dhclient")
    with lab() as the_lab:
        ap = the_lab.add_appliance()
        phone = the_lab.add_phone(mac=PHONE_MAC, ipv6="fd77::10/64")
        intruder = the_lab.add_phone(mac="00:15:65:bb:00:02", ipv4="10.77.0.20/24", ipv6="fd77::20/64")
        ca, cert, key = make_certificate(work, [V4, V6])
        config = CONFIG.format(cert=cert, key=key, user=USER, password=hash_password(PASSWORD))
        app = Appliance(ap, work, config)
        root = app.root
        rng = random.Random(9)
        files = {
            "common.cfg": b"#!version:1.0.0.1\nauto_provision.server.url = http://10.77.0.1/\n" * 20,
            "y000000000000.boot": b"#!version:1.0.0.1\ninclude:config <common.cfg>\n",
            "fw.rom": rng.randbytes(3 * 1024 * 1024 + 17),  # above large_file_size: streamed from its descriptor
            "T46U_1/y000000000000.cfg": b"#!version:1.0.0.1\naccount.1.user_name = floor3\n",
            f"{MAC.upper()}.cfg": b"#!version:1.0.0.1\naccount.1.password = phone-secret\n",
            f"{OTHER_MAC}.cfg": b"#!version:1.0.0.1\naccount.1.password = other-secret\n",
            "dir/sub.cfg": b"in a folder\n",
        }
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        outside = work / "outside"
        outside.mkdir()
        (outside / "secret.cfg").write_bytes(b"secret")
        canary = outside / "canary.cfg"
        canary.write_bytes(b"canary")
        (root / "link.cfg").symlink_to(canary)
        (root / "linkdir").symlink_to(outside)
        os.mkfifo(root / "fifo.cfg")
        out = work / "out"
        out.mkdir()
        out.chmod(0o777)
        app.start()
        watch_log = work / "inotify.log"
        watcher = subprocess.Popen(["inotifywait", "-m", "-q", "-r", "-e", "open,access,modify,create,delete,moved_to",
                                    "--format", "%w%f %e", "-o", str(watch_log), str(outside)])
        # The tree itself is read, never written: any change to it is a finding too.
        tree_watcher = subprocess.Popen(["inotifywait", "-m", "-q", "-r", "-e", "modify,create,delete,moved_to,attrib",
                                         "--format", "%w%f %e", "-o", str(watch_log) + ".tree", str(root)])
        try:
            time.sleep(0.5)  # inotifywait sets its watches
            client = Dhclient(phone, work, "phone", "")
            client.obtain()
            yield Env(the_lab, app, phone, intruder, work, root, out, files, ca, watch_log)
        finally:
            for proc in (watcher, tree_watcher):
                proc.terminate()
                proc.wait(timeout=10)
            app.stop()
