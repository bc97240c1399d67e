#!/usr/bin/env bash
# Installs the real peer tools the lab tests and benchmarks run against (Debian packages), once, and leaves the
# machine's services as it found them:
# - a policy-rc.d that exits 101 keeps every service these packages ship (tftpd-hpa, kea, nginx, ...) from being
#   started by the installation: a DHCP or TFTP server must never run on this machine's real interfaces (the lab
#   starts its own copies inside network namespaces). A policy-rc.d the machine already has is used as it is;
# - the units the installation enabled (what is enabled afterwards and was not before) are disabled again, and
#   units that became active during it (possible only under a policy-rc.d of the machine's own that lets services
#   start) are stopped. Units enabled or running before are left exactly as they were;
# - it never ends a process by name: a TFTP or DHCP server the user runs for their own purposes is theirs.
set -euo pipefail

missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-peers: need root to apt-get install: ${missing[*]}" >&2
  exit 1
fi

systemd_running() { [ -d /run/systemd/system ]; }

# What starts at boot: systemd units enabled, and System V scripts with a start link (tftpd-hpa has no unit).
enabled_units() {
  if command -v systemctl >/dev/null; then
    systemctl list-unit-files --no-legend --no-pager --state=enabled,enabled-runtime 2>/dev/null |
      awk '{print "unit " $1}'
  fi
  local link
  for link in /etc/rc[2345].d/S*; do
    [ -e "$link" ] || continue
    link=${link##*/S}
    echo "sysv ${link#[0-9][0-9]}"
  done
  return 0
}

# What runs now (only systemd can say; without it nothing the packages ship is started: invoke-rc.d asks policy-rc.d).
active_units() {
  if systemd_running; then
    systemctl list-units --no-legend --no-pager --plain --state=active --type=service,socket 2>/dev/null |
      awk '{print "unit " $1}'
  fi
  return 0
}

state=$(mktemp -d)
policy=/usr/sbin/policy-rc.d
created_policy=0

restore() {
  local kind name
  enabled_units | sort -u > "$state/enabled.after"
  active_units | sort -u > "$state/active.after"
  while read -r kind name; do
    echo "install-peers: disabling $name (enabled by this installation)"
    if [ "$kind" = unit ]; then
      systemctl disable --quiet "$name" || echo "install-peers: could not disable $name" >&2
    else
      update-rc.d "$name" disable >/dev/null 2>&1 || echo "install-peers: could not disable $name" >&2
    fi
  done < <(comm -13 "$state/enabled.before" "$state/enabled.after")
  while read -r kind name; do
    echo "install-peers: stopping $name (started by this installation)"
    systemctl stop "$name" || echo "install-peers: could not stop $name" >&2
  done < <(comm -13 "$state/active.before" "$state/active.after")
  if [ "$created_policy" -eq 1 ]; then
    rm -f "$policy"
  fi
  rm -rf "$state"
}

enabled_units | sort -u > "$state/enabled.before"
active_units | sort -u > "$state/active.before"
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# bootstrapd install-peers: no service starts while it installs packages.\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  created_policy=1
fi
trap restore EXIT

echo "install-peers: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
