"""The Vagrant lab (vagrant/): Vagrant itself validates the Vagrantfile, its scripts (provisioning, the box builder,
vagrant/lab.sh) pass shellcheck, and the VMs install bootstrapd through scripts/install.sh only.

The VMs boot in `make vagrant-lab` (vagrant/lab.sh: libvirt, tens of minutes), not here: what can be checked without
booting them is checked in the test suite.
``vagrant validate --ignore-provider`` checks the machine definitions and that every provisioning script exists;
with the libvirt provider (Debian's vagrant-libvirt) Vagrant also validates the libvirt settings; VirtualBox is not
in Debian, and Vagrant asks its ``VBoxManage`` nothing but its version before validating the VirtualBox settings,
so a ``VBoxManage`` that only answers ``--version`` (the test checks it was asked nothing else) lets that run too.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from pathlib import Path

import pytest

from bootstrapd import config
from tests.conftest import require_tools
from tests.deploy.unitfile import REPO

VAGRANT = REPO / "vagrant"
PROVISION = VAGRANT / "provision"


def _validate(tmp_path: Path, *args: str, vagrantfile: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    require_tools("vagrant")
    home = tmp_path / "home"
    dot = tmp_path / "dot"
    home.mkdir(exist_ok=True)
    dot.mkdir(exist_ok=True)
    full = dict(os.environ, VAGRANT_HOME=str(home), VAGRANT_DOTFILE_PATH=str(dot), VAGRANT_CHECKPOINT_DISABLE="1",
                **(env or {}))
    if vagrantfile is not None:  # a variant beside the real one, so its relative paths resolve the same way
        variant = VAGRANT / f"Vagrantfile.test-{os.getpid()}"
        variant.write_text(vagrantfile)
        full["VAGRANT_VAGRANTFILE"] = variant.name
    try:
        return subprocess.run(["vagrant", "validate", *args], cwd=VAGRANT, env=full, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
    finally:
        if vagrantfile is not None:
            variant.unlink()


def test_the_vagrantfile_validates(tmp_path: Path) -> None:
    result = _validate(tmp_path, "--ignore-provider")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Vagrantfile validated successfully." in result.stdout
    for name in ("appliance", "phone-dhclient", "phone-sim"):
        assert f"==> {name}: " in result.stdout


def test_a_broken_vagrantfile_is_caught(tmp_path: Path) -> None:
    text = (VAGRANT / "Vagrantfile").read_text().replace('"phone-sim.sh"]', '"phone-simulator.sh"]')
    result = _validate(tmp_path, "--ignore-provider", vagrantfile=text)
    assert result.returncode == 1
    assert "`path` for shell provisioner does not exist on the host system" in result.stdout + result.stderr


def test_the_libvirt_settings_validate(tmp_path: Path) -> None:
    env = {"VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    result = _validate(tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    typo = (VAGRANT / "Vagrantfile").read_text().replace("lv.memory = memory", "lv.memroy = memory")
    result = _validate(tmp_path, vagrantfile=typo, env=env)
    assert result.returncode == 1 and "The following settings shouldn't exist: memroy" in result.stdout + result.stderr


def test_the_virtualbox_settings_validate(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "VBoxManage").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = --version ] && echo 7.0.14r161095\nexit 0\n')
    (bin_dir / "VBoxManage").chmod(0o755)
    env = {"VAGRANT_DEFAULT_PROVIDER": "virtualbox", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = _validate(tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    typo = (VAGRANT / "Vagrantfile").read_text().replace("vb.memory = memory", "vb.memroy = memory")
    result = _validate(tmp_path, vagrantfile=typo, env=env)
    assert result.returncode == 1 and "The following settings shouldn't exist: memroy" in result.stdout + result.stderr
    assert set(calls.read_text().split("\n")) <= {"--version", ""}


def test_the_lab_network_fits_the_configuration() -> None:
    """The hypervisor's own addresses on the lab LAN stay out of the appliance's address and the DHCP pool, and the
    appliance gets exactly the addresses configs/lab.toml serves."""
    text = (VAGRANT / "Vagrantfile").read_text()
    lab = config.load(REPO / "configs" / "lab.toml")
    pool = range(int(lab.dhcp4.range_start), int(lab.dhcp4.range_end) + 1)
    host = ipaddress.IPv4Address(re.findall(r'libvirt__host_ip: "([\d.]+)"', text)[0])
    placeholders = [ipaddress.IPv4Address(f"10.77.0.{250 + i}") for i in range(3)]
    assert '"10.77.0.#{250 + index}"' in text and "auto_config: false" in text
    appliance = ipaddress.IPv4Address("10.77.0.1")
    for address in (host, *placeholders):
        assert int(address) not in pool and address != appliance
    assert lab.server.interface == "eth1"
    setup = (PROVISION / "appliance.sh").read_text()
    assert "address 10.77.0.1/24" in setup and "address fd77::1/64" in setup and "Name=eth1" in setup
    assert "libvirt__dhcp_enabled: false" in text and "virtualbox__intnet:" in text


def test_the_vms_install_through_install_sh_only() -> None:
    """No second copy of the install steps: the provisioning scripts call scripts/install.sh and do none of its
    steps themselves."""
    scripts = {p.name: p.read_text() for p in PROVISION.glob("*.sh")}
    assert '"$SRC/scripts/install.sh" --source "$SRC" --config "$SRC/configs/lab.toml"' in scripts["appliance.sh"]
    assert '"$SRC/scripts/install.sh" --source "$SRC" --program-only' in scripts["phone-sim.sh"]
    for name, text in scripts.items():
        for step in ("pip ", "-m venv", "bootstrapd.service", "systemctl", "/etc/bootstrapd", "/srv/bootstrapd"):
            assert step not in text, f"{name} does {step!r} itself"


@pytest.mark.parametrize("script", sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("scripts/*.sh"),
                                                                             *VAGRANT.glob("*.sh"),
                                                                             *PROVISION.glob("*.sh")]))
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    require_tools("shellcheck")
    result = subprocess.run(["shellcheck", "-x", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_simulated_desks_are_in_the_appliance_inventory_only_once() -> None:
    """phone-sim boots the desks of vagrant/sim-phones.csv (20, the default count); the appliance's inventory is
    configs/phones.csv plus those rows, so no MAC may appear in both (nor be phone-dhclient's or phone-sim's NIC)."""
    def macs(path: Path) -> list[str]:
        lines = path.read_text().splitlines()
        assert lines[0] == (REPO / "configs/phones.csv").read_text().splitlines()[0]  # the same columns
        return [line.split(",")[0] for line in lines[1:] if line]

    desks = macs(VAGRANT / "sim-phones.csv")
    assert len(desks) == len(set(desks)) == 20
    assert not set(desks) & {*macs(REPO / "configs/phones.csv"), "00:15:65:77:00:02"}
    setup = (PROVISION / "appliance.sh").read_text()
    assert 'tail -n +2 "$SRC/vagrant/sim-phones.csv"' in setup
    assert '--inventory "$SRC/vagrant/sim-phones.csv"' in (PROVISION / "phone-sim.sh").read_text()
