"""``make demo``: a floor of phones powers on at once against bootstrapd, then everything is torn down.

Builds a LAN in network namespaces (nothing touches this machine's interfaces), runs ``bootstrapd run`` with
``configs/lab.toml`` and the example tree of ``configs/tree`` in the appliance namespace, then powers on at once:
50 simulated Yealink phones (``bootstrapd sim``: DHCP, PnP, the guide's download algorithm over TFTP, the T5x
models over HTTP as a PnP rule of the configuration says, their own rendered and encrypted ``<mac>.cfg`` decrypted
with its key file) and the real clients (ISC dhclient, busybox udhcpc
posing as a Yealink, sipp replaying real PnP SUBSCRIBEs). Two of the simulated phones are not in the inventory, so
the run also shows what a failure looks like. A live view follows the phones until each is provisioned or has
failed with its reason; then a table of every phone, what the real clients received, the same tree over HTTP and
FTP (curl: a phone's own encrypted file, byte-identical to TFTP's, and another phone's, refused), and the teardown.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient, udhcpc
from tests.lab.netns import Lab, Node, lab
from tests.lab.simphones import add_sim_node, lab_macs
from tests.lab.sipphone import body, first_notify, run_phone

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "lab.toml"
INVENTORY = REPO / "configs" / "phones.csv"
SIMULATED = 50
IN_INVENTORY = 48  # the other two simulated phones are new to the inventory: they fail, with the reason

DHCLIENT_CONF = """
option custom-160 code 160 = text;
request subnet-mask, routers, domain-name-servers, tftp-server-name, custom-160;
"""


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(label: str, value: object) -> None:
    print(f"   {label:30} {value}")


def demo_inventory(workdir: Path) -> tuple[Path, Path]:
    """The server's inventory (configs/phones.csv plus 48 desks) and the simulator's (the 48 desks)."""
    desks = [f"{mac},{model},{3100 + i},Desk {i + 1},desk-Secret-{i + 1},{'floor3' if i % 2 else 'hq'}"
             for i, (mac, model) in enumerate(lab_macs(IN_INVENTORY, ("T46U", "T54W", "T48U", "T57W")))]
    served = workdir / "phones.csv"
    served.write_text(INVENTORY.read_text().rstrip("\n") + "\n" + "\n".join(desks) + "\n")
    simulated = workdir / "simulated.csv"
    simulated.write_text(INVENTORY.read_text().splitlines()[0] + "\n" + "\n".join(desks) + "\n")
    return served, simulated


def real_dhclient(node: Node, workdir: Path, name: str) -> list[tuple[str, object]]:
    got = Dhclient(node, workdir, name, DHCLIENT_CONF).obtain()
    return [("address", got.get("new_ip_address")), ("option 66", got.get("new_tftp_server_name")),
            ("option 160", got.get("new_custom_160")), ("lease time", got.get("new_dhcp_lease_time"))]


def real_udhcpc(node: Node, workdir: Path, name: str) -> list[tuple[str, object]]:
    got = udhcpc(node, workdir, name, "-V", "yealink", "-O", "43", "-O", "160")
    opt43 = bytes.fromhex(got["opt43"]).decode(errors="replace") if got.get("opt43") else "-"
    return [("address", got.get("ip")), ("option 43 (yealink class)", opt43)]


def real_sipp(node: Node, workdir: Path, scenario: str) -> list[tuple[str, object]]:
    code, messages, output = run_phone(node, scenario, workdir)
    if code != 0:
        return [("sipp failed", output[-300:])]
    replies = [m.replace("\r\n", "\n").split("\n", 1)[0] for d, m in messages if d == "received"]
    return [("answers", " / ".join(replies)), ("NOTIFY body (URL)", body(first_notify(messages)))]


def real_dhcp6(the_lab: Lab, node: Node, workdir: Path) -> list[tuple[str, object]]:
    the_lab.wait_link_local(node)
    got = Dhclient(node, workdir, "phone3v6", "also request dhcp6.bootfile-url;\n").obtain("-6")
    return [("IPv6 address (IA_NA)", got.get("new_ip6_address")),
            ("option 59", got.get("new_dhcp6_bootfile_url"))]


def real_http(node: Node, workdir: Path, own_mac: str, other_mac: str) -> list[tuple[str, object]]:
    """The tree over HTTP and FTP (option 160 hands out http://10.77.0.1/): the boot file, the phone's own rendered,
    encrypted <mac>.cfg and its key file (the same bytes as over TFTP, decrypted here), another phone's file."""
    from bootstrapd.provisioning import yealink_aes

    def get(url: str) -> tuple[str, bytes]:
        dest = workdir / f"get-{len(os.listdir(workdir))}"
        result = node.run(["curl", "-sS", "-o", str(dest), "-w", "%{response_code}", url])
        data = dest.read_bytes() if dest.exists() else b""
        return result.stdout.strip() or f"curl exit {result.returncode}", data

    lines: list[tuple[str, object]] = []
    status, boot = get("http://10.77.0.1/y000000000000.boot")
    lines.append(("GET /y000000000000.boot", f"{status}, {len(boot)} bytes"))
    status, cfg = get(f"http://10.77.0.1/{own_mac}.cfg")
    _, key = get(f"http://10.77.0.1/{own_mac}_Security.enc")
    _, by_tftp = get(f"tftp://10.77.0.1/{own_mac}.cfg")
    _, by_ftp = get(f"ftp://10.77.0.1/{own_mac}.cfg")
    try:
        plain = yealink_aes.decrypt(cfg, yealink_aes.decrypt_key(key)).decode().rstrip(" ")
        user = next((line for line in plain.splitlines() if line.startswith("account.1.user_name")), "-")
        verdict = f"{status}, {len(cfg)} bytes, encrypted; decrypted with its _Security.enc: {user}"
    except (yealink_aes.AesError, UnicodeDecodeError) as exc:
        verdict = f"{status}, cannot decrypt: {exc}"
    lines.append((f"GET /{own_mac}.cfg", verdict))
    lines.append(("  over TFTP and FTP", "the same bytes" if cfg == by_tftp == by_ftp and cfg else "DIFFERENT"))
    status, _ = get(f"http://10.77.0.1/{other_mac}.cfg")
    lines.append((f"GET /{other_mac}.cfg", f"{status}: another phone's file (provisioning.mac_files)"))
    return lines


def checkout_config(state_dir: Path) -> str:
    """configs/lab.toml as it runs from this checkout: the example tree and inventory in place, the state elsewhere.

    The file itself names the paths scripts/install.sh installs to (the Vagrant appliance runs it as it is).
    """
    text = CONFIG.read_text().replace('root = "/srv/bootstrapd"', f'root = "{REPO / "configs" / "tree"}"')
    text = text.replace('state_dir = "/var/lib/bootstrapd"', f'state_dir = "{state_dir}"')
    return text.replace('inventory = "phones.csv"', f'inventory = "{INVENTORY}"')


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root: it builds network namespaces", file=sys.stderr)
        return 2
    for tool in ("dhclient", "busybox", "sipp", "curl"):
        if not shutil.which(tool):
            print(f"missing {tool}: run `make peers`", file=sys.stderr)
            return 2
    settings = tomllib.loads(CONFIG.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="bootstrapd-demo-"))
    workdir.chmod(0o755)
    served, simulated = demo_inventory(workdir)
    text = checkout_config(workdir / "state").replace(f'inventory = "{INVENTORY}"', f'inventory = "{served}"')
    if str(workdir / "state") not in text or str(served) not in text:  # the demo writes only its own directory
        print(f"{CONFIG}: server.state_dir is not the expected line", file=sys.stderr)
        shutil.rmtree(workdir)
        return 2
    started = time.monotonic()
    code = 0
    try:
        with lab() as the_lab:
            step(f"lab {the_lab.prefix}: appliance 10.77.0.1/24 + fd77::1/64 on eth1, phones on a bridge")
            app = Appliance(the_lab.add_appliance(), workdir, text)
            app.start()
            enabled = [name for name in ("dhcp4", "dhcp6", "pnp", "tftp", "http", "ftp")
                       if settings.get(name, {}).get("enabled")]
            step(f"bootstrapd running ({', '.join(enabled)}), READY=1 received; example tree configs/tree, "
                 f"{IN_INVENTORY + 3} phones in the inventory")
            sim = add_sim_node(the_lab)
            phone1 = the_lab.add_phone(mac="00:15:65:77:00:01")
            phone2 = the_lab.add_phone(mac="80:5e:c0:77:00:02")
            phone3 = the_lab.add_phone(mac="00:15:65:77:00:03")
            pnp_phone = the_lab.add_phone(ipv4="10.77.0.21/24")
            step(f"power on: {SIMULATED} simulated phones (bootstrapd sim; T46U and T48U over TFTP, T54W and T57W "
                 "over HTTP), dhclient, udhcpc and sipp, all at once")
            with ThreadPoolExecutor(4) as pool:
                real: dict[str, Future[list[tuple[str, object]]]] = {
                    "00:15:65:77:00:01 ISC dhclient": pool.submit(real_dhclient, phone1, workdir, "phone1"),
                    "80:5e:c0:77:00:02 busybox udhcpc -V yealink": pool.submit(real_udhcpc, phone2, workdir,
                                                                               "phone2"),
                    "00:15:65:77:00:03 ISC dhclient": pool.submit(real_dhclient, phone3, workdir, "phone3"),
                    "10.77.0.21 sipp (a real Yealink SUBSCRIBE)": pool.submit(real_sipp, pnp_phone, workdir,
                                                                              "yealink-w52p"),
                }
                proc = sim.popen([sys.executable, "-m", "bootstrapd", "sim", "--interface", sim.ifname,
                                  "--count", str(SIMULATED), "--inventory", str(simulated),
                                  "--models", "T46U,T54W", "--pnp-wait", "3", "--table",
                                  "--json", str(workdir / "sim.json")], stdout=None, stderr=None)
                sim_code = proc.wait(timeout=300)
                results: dict[str, Any] = {}
                for label, future in real.items():
                    try:
                        results[label] = future.result(timeout=120)
                    except Exception as exc:  # a client that failed is shown, not hidden
                        results[label] = [("failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)]
            step("the real clients")
            for label, lines in results.items():
                print(f"   {label}")
                for key, value in lines:
                    show(f"  {key}", value)
            if "http" in enabled:
                step("phone 00:15:65:77:00:01 fetches over HTTP (curl), as option 160 tells it")
                for key, value in real_http(phone1, workdir, "001565770001", "001565770003"):
                    show(key, value)
            if "dhcp6" in enabled:
                step("phone 00:15:65:77:00:03 asks DHCPv6 too (ISC dhclient -6)")
                for key, value in real_dhcp6(the_lab, phone3, workdir):
                    show(key, value)
            leases = app.cli("leases", "--config", str(app.config), "--json").stdout
            import json

            listed = json.loads(leases) if leases.strip().startswith("{") else {"dhcp4": [], "dhcp6": []}
            step(f"bootstrapd leases: {len(listed['dhcp4'])} DHCPv4, {len(listed['dhcp6'])} DHCPv6")
            code = app.stop()
            step(f"bootstrapd stopped (exit {code}); tearing the lab down")
            if sim_code not in (0, 1):
                print(f"bootstrapd sim exited with {sim_code}", file=sys.stderr)
                code = 1
    except (OSError, subprocess.SubprocessError, RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        code = 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s: no namespace, process or socket is left behind.")
    return 1 if code else 0


if __name__ == "__main__":
    raise SystemExit(main())
