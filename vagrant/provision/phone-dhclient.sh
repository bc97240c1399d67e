#!/usr/bin/env bash
# A phone VM with the plain clients: ISC dhclient (DHCPv4, then DHCPv6) on the lab NIC, then curl downloads the
# files a phone fetches next, over TFTP (IPv4 and IPv6) and, when the appliance serves it, HTTP.
# Usage (by the Vagrantfile): phone-dhclient.sh SRC MAC install|boot
set -euo pipefail
SRC=${1:?the synced checkout}
MAC=${2:?the lab NIC MAC}
STEP=${3:?install or boot}
# shellcheck source=vagrant/provision/lab-nic.sh
. "$SRC/vagrant/provision/lab-nic.sh"
nic=$(lab_nic "$MAC")
APPLIANCE=10.77.0.1
APPLIANCE6=fd77::1
LEASES=/var/lib/dhcp/bootstrapd-lab.leases

if [ "$STEP" = install ]; then
  apt_install isc-dhcp-client curl
  # The lab NIC takes its address and the provisioning options from bootstrapd, but not the default route or the
  # DNS servers: the management NIC keeps those, so `vagrant ssh` and apt-get go on working.
  cat > /etc/dhcp/dhclient-enter-hooks.d/bootstrapd-lab <<HOOK
if [ "\$interface" = "$nic" ]; then
  unset new_routers new_domain_name_servers new_domain_name new_domain_search new_dhcp6_name_servers
  make_resolv_conf() { :; }
fi
HOOK
  cat > /etc/dhcp/bootstrapd-lab.conf <<'CONF'
option custom-160 code 160 = text;
request subnet-mask, broadcast-address, tftp-server-name, bootfile-name, vendor-encapsulated-options, custom-160;
also request dhcp6.bootfile-url;
CONF
  exit 0
fi

# boot: what a phone does at power-on. Release what an earlier boot held, then ask again.
ip link set dev "$nic" up
for family in -4 -6; do
  dhclient "$family" -r -lf "$LEASES$family" -pf "/run/dhclient-bootstrapd-lab$family.pid" "$nic" 2>/dev/null || true
done
echo "== DHCPv4 on $nic ($(colons "$MAC"))"
dhclient -4 -1 -v -cf /etc/dhcp/bootstrapd-lab.conf -lf "$LEASES-4" -pf /run/dhclient-bootstrapd-lab-4.pid "$nic"
grep -E 'fixed-address|option (tftp-server-name|custom-160|vendor-encapsulated-options|dhcp-lease-time)' \
  "$LEASES-4" | tail -5
echo "== DHCPv6 on $nic"
# dhclient -6 binds to the link-local address: wait until duplicate address detection is done with it.
for _ in $(seq 40); do
  [ -n "$(ip -6 addr show dev "$nic" scope link -tentative)" ] && break
  sleep 0.5
done
if dhclient -6 -1 -v -cf /etc/dhcp/bootstrapd-lab.conf -lf "$LEASES-6" -pf /run/dhclient-bootstrapd-lab-6.pid "$nic"
then
  grep -E 'iaaddr|bootfile-url' "$LEASES-6" | tail -2
  # DHCPv6 gives the address as a /128; the on-link prefix comes from router advertisements, and the lab LAN has no
  # router: add the route an RA for fd77::/64 would give (a phone on a real LAN gets it from the router).
  ip -6 route replace fd77::/64 dev "$nic"
else
  echo "no DHCPv6 answer (is [dhcp6] enabled in the appliance's configuration?)"
fi

echo "== downloads"
fetch() {
  local url=$1 size
  if size=$(curl -sS -g --fail --max-time 20 -o /dev/null -w '%{size_download}' "$url"); then
    echo "$url: $size bytes"
  else
    echo "$url: failed"
  fi
}
mac12=${MAC,,}
# The boot file, the common CFG file of a T46U (y000000000108.cfg) and the phone's own <mac>.cfg, as a phone asks.
fetch "tftp://$APPLIANCE/y000000000000.boot"
fetch "tftp://$APPLIANCE/y000000000108.cfg"
fetch "tftp://$APPLIANCE/$mac12.cfg"
fetch "tftp://[$APPLIANCE6]/y000000000108.cfg"
fetch "http://$APPLIANCE/y000000000108.cfg"
