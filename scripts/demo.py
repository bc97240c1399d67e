"""``make demo``: the appliance on the built-in lab, with real phones' clients, then everything torn down.

Builds a LAN in network namespaces (nothing touches this machine's interfaces), runs ``bootstrapd run`` with
``configs/lab.toml`` in the appliance namespace, boots a few phones with real clients (ISC dhclient, busybox udhcpc
posing as a Yealink, and for every other enabled service its real client) and prints what each phone received.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

from tests.lab.appliance import Appliance
from tests.lab.clients import Dhclient, udhcpc
from tests.lab.netns import Lab, Node, lab
from tests.lab.sipphone import body, first_notify, run_phone

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "lab.toml"

DHCLIENT_CONF = """
option custom-160 code 160 = text;
request subnet-mask, routers, domain-name-servers, tftp-server-name, custom-160;
"""


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(label: str, value: object) -> None:
    print(f"   {label:28} {value}")


def phone_dhclient(the_lab: Lab, workdir: Path, mac: str, name: str) -> Node:
    phone = the_lab.add_phone(mac=mac)
    got = Dhclient(phone, workdir, name, DHCLIENT_CONF).obtain()
    step(f"phone {mac} (ISC dhclient)")
    show("address", got.get("new_ip_address"))
    show("option 66 tftp-server-name", got.get("new_tftp_server_name"))
    show("option 160", got.get("new_custom_160"))
    show("router / dns", f"{got.get('new_routers')} / {got.get('new_domain_name_servers')}")
    show("lease time", got.get("new_dhcp_lease_time"))
    return phone


def phone_udhcpc(the_lab: Lab, workdir: Path, mac: str, name: str) -> Node:
    phone = the_lab.add_phone(mac=mac)
    got = udhcpc(phone, workdir, name, "-V", "yealink", "-O", "43", "-O", "160")
    step(f"phone {mac} (busybox udhcpc -V yealink, a Yealink OUI)")
    show("address", got.get("ip"))
    for code in ("43", "160"):
        raw = got.get(f"opt{code}")
        show(f"option {code}", bytes.fromhex(raw).decode(errors="replace") if raw else "-")
    show("option 66", f"{got.get('tftp')}  (busybox calls a URL in 66 'bad': a client quirk)")
    return phone


def phone_dhcp6(the_lab: Lab, workdir: Path, phone: Node, name: str) -> None:
    the_lab.wait_link_local(phone)
    got = Dhclient(phone, workdir, name, "also request dhcp6.bootfile-url;\n").obtain("-6")
    step(f"phone {phone.mac} (ISC dhclient -6)")
    show("IPv6 address (IA_NA)", got.get("new_ip6_address"))
    show("option 59 bootfile-url", got.get("new_dhcp6_bootfile_url"))


def phone_pnp(the_lab: Lab, workdir: Path, scenario: str, address: str) -> None:
    phone = the_lab.add_phone(ipv4=f"{address}/24")
    code, messages, output = run_phone(phone, scenario, workdir)
    step(f"phone {address} (sipp replaying a real {scenario} PnP SUBSCRIBE to 224.0.1.75:5060)")
    if code != 0:
        show("sipp failed", output)
        return
    replies = [m.replace("\r\n", "\n").split("\n", 1)[0] for d, m in messages if d == "received"]
    show("answers", " / ".join(replies))
    show("provisioning URL (NOTIFY)", body(first_notify(messages)))


def phone_tftp(the_lab: Lab, workdir: Path, phone: Node) -> None:
    """The download a phone does next: its boot file over TFTP (tftp-hpa), a config over IPv6 (curl)."""
    step(f"phone {phone.mac} downloads its files over TFTP")
    boot = workdir / "boot.out"
    result = phone.run(["tftp", "-m", "octet", "10.77.0.1", "-c", "get", "y000000000000.boot", str(boot)])
    first = boot.read_text().splitlines()[0] if result.returncode == 0 and boot.exists() else result.stderr.strip()
    show("tftp-hpa y000000000000.boot", f"{boot.stat().st_size if boot.exists() else 0} bytes, {first}")
    cfg = workdir / "sip.out"
    result = phone.run(["curl", "-sS", "-o", str(cfg), "tftp://[fd77::1]/sip.cfg"])
    size = cfg.stat().st_size if result.returncode == 0 and cfg.exists() else result.stderr.strip()
    show("curl tftp://[fd77::1]/sip.cfg", f"{size} bytes")
    phone_own_file(phone, workdir)
    result = phone.run(["curl", "-sS", "--path-as-is", "-o", "/dev/null", "tftp://10.77.0.1/../../etc/passwd"])
    show("curl tftp://…/../../etc/passwd", f"refused (curl exit {result.returncode})")


def phone_own_file(phone: Node, workdir: Path) -> None:
    """Its own <mac>.cfg, rendered from {mac}.cfg.j2 and configs/phones.csv, encrypted, with its key file."""
    from bootstrapd.provisioning import yealink_aes

    mac = phone.mac.replace(":", "")
    files = {}
    for name in (f"{mac}.cfg", f"{mac}_Security.enc"):
        dest = workdir / name
        result = phone.run(["curl", "-sS", "-o", str(dest), f"tftp://10.77.0.1/{name}"])
        files[name] = dest.read_bytes() if result.returncode == 0 and dest.exists() else b""
        show(f"curl .../{name}", f"{len(files[name])} bytes")
    try:
        key = yealink_aes.decrypt_key(files[f"{mac}_Security.enc"])
        plain = yealink_aes.decrypt(files[f"{mac}.cfg"], key).decode().rstrip(" ")
    except (yealink_aes.AesError, UnicodeDecodeError) as exc:
        show("decrypted", f"failed: {exc}")
        return
    user = next((line for line in plain.splitlines() if line.startswith("account.1.user_name")), "-")
    show("decrypted with its key file", f"{len(plain.splitlines())} lines, {user}")


def checkout_config(state_dir: Path) -> str:
    """configs/lab.toml as it runs from this checkout: the example tree and inventory in place, the state elsewhere.

    The file itself names the paths scripts/install.sh installs to (the Vagrant appliance runs it as it is).
    """
    text = CONFIG.read_text().replace('root = "/srv/bootstrapd"', f'root = "{REPO / "configs" / "tree"}"')
    text = text.replace('state_dir = "/var/lib/bootstrapd"', f'state_dir = "{state_dir}"')
    return text.replace('inventory = "phones.csv"', f'inventory = "{REPO / "configs" / "phones.csv"}"')


def main() -> int:
    if os.geteuid() != 0:
        print("make demo needs root: it builds network namespaces", file=sys.stderr)
        return 2
    for tool in ("dhclient", "busybox", "sipp", "tftp", "curl"):
        if not shutil.which(tool):
            print(f"missing {tool}: run `make peers`", file=sys.stderr)
            return 2
    settings = tomllib.loads(CONFIG.read_text())
    workdir = Path(tempfile.mkdtemp(prefix="bootstrapd-demo-"))
    workdir.chmod(0o755)
    text = checkout_config(workdir / "state")
    if str(workdir) not in text:  # never let the demo write the installed daemon's state
        print(f"{CONFIG}: server.state_dir is not the expected line; the demo would not run in {workdir}",
              file=sys.stderr)
        shutil.rmtree(workdir)
        return 2
    try:
        with lab() as the_lab:
            step(f"lab {the_lab.prefix}: appliance 10.77.0.1/24 + fd77::1/64 on eth1, phones on a bridge")
            node = the_lab.add_appliance()
            app = Appliance(node, workdir, text)
            app.start()
            enabled = [name for name in ("dhcp4", "dhcp6", "pnp", "tftp") if settings.get(name, {}).get("enabled")]
            step(f"bootstrapd running ({', '.join(enabled)}), READY=1 received")
            phone_dhclient(the_lab, workdir, "00:15:65:77:00:01", "phone1")
            phone_udhcpc(the_lab, workdir, "80:5e:c0:77:00:02", "phone2")
            phone3 = phone_dhclient(the_lab, workdir, "00:15:65:77:00:03", "phone3")
            if "dhcp6" in enabled:
                phone_dhcp6(the_lab, workdir, phone3, "phone3v6")
            if "tftp" in enabled:
                phone_tftp(the_lab, workdir, phone3)
            if "pnp" in enabled:
                phone_pnp(the_lab, workdir, "yealink-w52p", "10.77.0.21")
                phone_pnp(the_lab, workdir, "snom-720", "10.77.0.22")
            step("bootstrapd leases")
            print(app.cli("leases", "--config", str(app.config)).stdout, end="")
            code = app.stop()
            step(f"bootstrapd stopped (exit {code}); tearing the lab down")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("done: no namespace, process or socket is left behind.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
