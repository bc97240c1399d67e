#!/usr/bin/env bash
# The appliance VM: its lab NIC becomes eth1 with 10.77.0.1/24 and fd77::1/64 (what configs/lab.toml serves), then
# scripts/install.sh installs bootstrapd from the synced checkout exactly as on a real box, with configs/lab.toml
# and configs/tree, and starts the unit.
# Usage (by the Vagrantfile): appliance.sh SRC MAC install
set -euo pipefail
SRC=${1:?the synced checkout}
MAC=${2:?the lab NIC MAC}
# shellcheck source=vagrant/provision/lab-nic.sh
. "$SRC/vagrant/provision/lab-nic.sh"

nic=$(lab_nic "$MAC")
if [ "$nic" != eth1 ]; then
  # configs/lab.toml serves eth1: give the lab NIC that name, now and (systemd .link file) at every boot.
  printf '[Match]\nMACAddress=%s\n[Link]\nName=eth1\n' "$(colons "$MAC")" > /etc/systemd/network/10-bootstrapd-lab.link
  ip link set dev "$nic" down
  ip link set dev "$nic" name eth1
fi
cat > /etc/network/interfaces.d/bootstrapd-lab <<'CONF'
# The provisioning LAN of the bootstrapd lab (vagrant/provision/appliance.sh).
auto eth1
iface eth1 inet static
    address 10.77.0.1/24
iface eth1 inet6 static
    address fd77::1/64
    dad-attempts 0
CONF
ifdown eth1 >/dev/null 2>&1 || true
ifup eth1

apt_install tcpdump   # captures on the lab LAN: tcpdump -ni eth1 port 67 or port 69 or port 5060
# The inventory: configs/phones.csv (phone-dhclient is its 00:15:65:77:00:01) and phone-sim's 20 simulated desks.
inventory=$(mktemp -d)
trap 'rm -rf "$inventory"' EXIT
{ cat "$SRC/configs/phones.csv"; tail -n +2 "$SRC/vagrant/sim-phones.csv"; } > "$inventory/phones.csv"
"$SRC/scripts/install.sh" --source "$SRC" --config "$SRC/configs/lab.toml" --tree "$SRC/configs/tree" \
  --inventory "$inventory/phones.csv" "${WHEELS[@]}"
