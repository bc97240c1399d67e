#!/usr/bin/env bash
# Installs the real peer tools the lab tests and benchmarks run against (Debian packages), once.
# Services these packages ship (tftpd-hpa, kea) are kept from starting: a DHCP or TFTP server must never run on
# this machine's real interfaces. The lab starts its own copies inside network namespaces.
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
echo "install-peers: installing ${missing[*]}"
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
fi
trap '[ $created -eq 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# Belt and braces: stop anything the packages started anyway.
for svc in tftpd-hpa kea-dhcp4-server kea-dhcp6-server kea-ctrl-agent isc-kea-dhcp4-server prometheus prometheus-node-exporter; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
pkill -x in.tftpd 2>/dev/null || true
pkill -x kea-dhcp4 2>/dev/null || true
pkill -x kea-dhcp6 2>/dev/null || true
