# shellcheck shell=bash
# Sourced by the lab's provisioning scripts: the NIC on the lab LAN, found by the MAC the Vagrantfile gives it
# (interface names differ between boxes and providers; the MAC does not).

# "001565770001" -> "00:15:65:77:00:01"
colons() {
  echo "$1" | tr 'A-F' 'a-f' | sed 's/../&:/g; s/:$//'
}

# lab_nic MAC: print the interface name, or fail.
lab_nic() {
  local want path
  want=$(colons "$1")
  for path in /sys/class/net/*; do
    if [ "$(cat "$path/address" 2>/dev/null)" = "$want" ]; then
      echo "${path##*/}"
      return 0
    fi
  done
  echo "no interface has the lab MAC $want" >&2
  return 1
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }
}

# The Vagrantfile syncs BOOTSTRAPD_WHEELHOUSE to /wheelhouse: then scripts/install.sh takes the wheels from there.
# shellcheck disable=SC2034  # used by the scripts that source this file
if [ -d /wheelhouse ]; then WHEELS=(--wheels /wheelhouse); else WHEELS=(); fi
