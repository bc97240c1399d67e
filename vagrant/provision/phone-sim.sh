#!/usr/bin/env bash
# A phone VM running simulated phones: bootstrapd installed by scripts/install.sh --program-only (no unit, no
# service: this VM is a client), then at every boot `bootstrapd sim` on the lab NIC: its exit status (1 when a phone
# failed) is the provisioner's.
# Usage (by the Vagrantfile): phone-sim.sh SRC MAC install|boot
set -euo pipefail
SRC=${1:?the synced checkout}
MAC=${2:?the lab NIC MAC}
STEP=${3:?install or boot}
PHONES=${BOOTSTRAPD_SIM_PHONES:-20}
# shellcheck source=vagrant/provision/lab-nic.sh
. "$SRC/vagrant/provision/lab-nic.sh"
nic=$(lab_nic "$MAC")

if [ "$STEP" = install ]; then
  "$SRC/scripts/install.sh" --source "$SRC" --program-only "${WHEELS[@]}"
  exit 0
fi

ip link set dev "$nic" up
echo "== $PHONES simulated phones on $nic"
# The desks of vagrant/sim-phones.csv, which the appliance's inventory holds too (their <mac>.cfg are rendered).
bootstrapd sim --interface "$nic" --count "$PHONES" --inventory "$SRC/vagrant/sim-phones.csv" --plain
