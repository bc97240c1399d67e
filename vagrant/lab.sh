#!/usr/bin/env bash
# `make vagrant-lab`: the Vagrant lab brought up for real with the libvirt provider, checked end to end, and
# destroyed again, on a machine without Vagrant Cloud or PyPI:
#   1. the box: vagrant/build-box.sh --add, unless BOOTSTRAPD_BOX (default bootstrapd/bookworm64-local) is there
#   2. a wheelhouse of bootstrapd's dependencies made on this machine, synced to the VMs (BOOTSTRAPD_WHEELHOUSE)
#   3. libvirtd (and virtlogd) started if none answers, ended at the end by their PIDs
#   4. vagrant up --provider=libvirt --no-parallel (the appliance first; each phone boots once as it comes up), the
#      management network isolated (BOOTSTRAPD_MGMT_MODE=none: the box needs no way out)
#   5. the checks, each output saved under the log folder: the unit runs; phone-dhclient's DHCPv4 and DHCPv6 leases
#      and its TFTP (IPv4, IPv6) and HTTP downloads; phone-sim's `bootstrapd sim` (20 phones) all provisioned;
#      `bootstrapd status` on the appliance lists them all; the status page and its API answer over the lab LAN
#      (the check turns [status] on in the appliance's configuration, password "lab")
#   6. vagrant destroy -f, the libvirt networks bootstrapd-lab and bootstrapd-mgmt and the box's volume in the
#      storage pool removed (and the pool "default", if vagrant-libvirt defined it), whatever happened before
# It refuses to start while VMs or networks of those names exist (someone's lab): it removes only what it made.
# Usage: vagrant/lab.sh [--log DIR]     (default vagrant/.vagrant/lab-<UTC time>)
# Exit status: 0 every check passed, 1 a step or check failed, 2 bad usage or the lab is already up.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
LOG=$HERE/.vagrant/lab-$(date -u +%Y%m%dT%H%M%SZ)
case "${1:-}" in
  "") ;;
  --log) [ -n "${2:-}" ] || { echo "lab.sh: --log needs a folder" >&2; exit 2; }; LOG=$(realpath -m "$2") ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "lab.sh: unknown argument $1" >&2; exit 2 ;;
esac
export BOOTSTRAPD_BOX=${BOOTSTRAPD_BOX:-bootstrapd/bookworm64-local}
export BOOTSTRAPD_WHEELHOUSE=${BOOTSTRAPD_WHEELHOUSE:-$HERE/.vagrant/wheelhouse}
export BOOTSTRAPD_MGMT_MODE=${BOOTSTRAPD_MGMT_MODE:-none}
export BOOTSTRAPD_LIBVIRT_DRIVER=${BOOTSTRAPD_LIBVIRT_DRIVER:-kvm}   # qemu: emulated, where KVM runs no Linux guest
export VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1
VIRSH=(virsh --quiet --connect qemu:///system)
NETWORKS=(bootstrapd-lab bootstrapd-mgmt)
DOMAINS=(bootstrapd-appliance bootstrapd-phone-dhclient bootstrapd-phone-sim)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
mkdir -p "$LOG"
T0=$(date +%s)
step() { echo "== lab.sh [$(( $(date +%s) - T0 ))s] $*"; }
FAILED=()
check() {  # check NAME COMMAND...: run it, record a failure (the run goes on to the other checks)
  local name=$1
  shift
  if "$@"; then echo "   ok: $name"; else echo "   FAILED: $name"; FAILED+=("$name"); fi
}

STARTED=()
AUTOSTARTED=()  # networks a libvirtd started here brought up by itself (Debian marks "default", with its DHCP)
stop_started() {  # end what this script started, by PID, and the networks that came up with it
  local pid net
  for net in "${AUTOSTARTED[@]}"; do "${VIRSH[@]}" net-destroy "$net" >/dev/null 2>&1; done
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  return 0
}
cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  step "tear-down"
  (cd "$HERE" && vagrant destroy -f) >"$LOG/destroy.log" 2>&1
  for net in "${NETWORKS[@]}"; do
    if "${VIRSH[@]}" net-info "$net" >/dev/null 2>&1; then
      "${VIRSH[@]}" net-destroy "$net" >/dev/null 2>&1
      "${VIRSH[@]}" net-undefine "$net" >/dev/null
    fi
  done
  local volume
  for volume in $("${VIRSH[@]}" vol-list default 2>/dev/null | awk '{print $1}'); do
    case "$volume" in "${BOOTSTRAPD_BOX//\//-VAGRANTSLASH-}_vagrant_box_image_"*) "${VIRSH[@]}" vol-delete --pool default "$volume" >/dev/null ;; esac
  done
  if [ "$POOL_WAS_THERE" -eq 0 ] && "${VIRSH[@]}" pool-info default >/dev/null 2>&1; then
    "${VIRSH[@]}" pool-destroy default >/dev/null
    "${VIRSH[@]}" pool-undefine default >/dev/null
  fi
  stop_started
  "${VIRSH[@]}" list --all --name 2>/dev/null | grep -qx -e "${DOMAINS[0]}" -e "${DOMAINS[1]}" -e "${DOMAINS[2]}" &&
    { echo "lab.sh: a VM of the lab is left (virsh list --all)" >&2; rc=1; }
  step "done in $(( $(date +%s) - T0 ))s; outputs in $LOG"
  exit "$rc"
}

step "libvirt"
if ! "${VIRSH[@]}" uri >/dev/null 2>&1; then
  virtlogd >"$LOG/virtlogd.log" 2>&1 &
  STARTED+=($!)
  libvirtd >"$LOG/libvirtd.log" 2>&1 &
  STARTED+=($!)
  trap stop_started EXIT  # until the checks below: nothing of the lab's exists yet, nothing to destroy
  for _ in $(seq 60); do "${VIRSH[@]}" uri >/dev/null 2>&1 && break; sleep 0.5; done
  "${VIRSH[@]}" uri >/dev/null || { echo "lab.sh: libvirtd does not answer ($LOG/libvirtd.log)" >&2; exit 1; }
  echo "   started virtlogd and libvirtd (PIDs ${STARTED[*]})"
  mapfile -t AUTOSTARTED < <("${VIRSH[@]}" net-list --name | sed '/^$/d')
  [ "${#AUTOSTARTED[@]}" -eq 0 ] || echo "   networks autostarted with it, stopped again at the end: ${AUTOSTARTED[*]}"
fi
for net in "${NETWORKS[@]}"; do
  if "${VIRSH[@]}" net-info "$net" >/dev/null 2>&1; then
    echo "lab.sh: the libvirt network $net exists: is a lab up? (cd vagrant && vagrant destroy -f)" >&2
    exit 2
  fi
done
for domain in "${DOMAINS[@]}"; do
  if "${VIRSH[@]}" dominfo "$domain" >/dev/null 2>&1; then
    echo "lab.sh: the VM $domain exists: is a lab up? (cd vagrant && vagrant destroy -f)" >&2
    exit 2
  fi
done
POOL_WAS_THERE=0  # vagrant-libvirt defines the storage pool "default" when there is none: then it goes at the end
"${VIRSH[@]}" pool-info default >/dev/null 2>&1 && POOL_WAS_THERE=1
trap cleanup EXIT

if ! vagrant box list | grep -q "^$BOOTSTRAPD_BOX "; then
  step "box $BOOTSTRAPD_BOX: vagrant/build-box.sh --add"
  accel=kvm
  [ "$BOOTSTRAPD_LIBVIRT_DRIVER" = kvm ] || accel=tcg
  "$HERE/build-box.sh" --add --name "$BOOTSTRAPD_BOX" --accel "$accel" >"$LOG/build-box.log" 2>&1 ||
    { tail -20 "$LOG/build-box.log" >&2; exit 1; }
fi

step "wheelhouse $BOOTSTRAPD_WHEELHOUSE"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$BOOTSTRAPD_WHEELHOUSE" "$REPO" \
  "setuptools>=77" >"$LOG/wheelhouse.log" 2>&1 || { tail -20 "$LOG/wheelhouse.log" >&2; exit 1; }
rm -f "$BOOTSTRAPD_WHEELHOUSE"/bootstrapd-*.whl  # the VMs build bootstrapd from the synced checkout

step "vagrant up --provider=libvirt --no-parallel (log: $LOG/up.log)"
(cd "$HERE" && vagrant up --provider=libvirt --no-parallel) >"$LOG/up.log" 2>&1 ||
  { tail -40 "$LOG/up.log" >&2; echo "lab.sh: vagrant up failed" >&2; exit 1; }
vm() {  # vm NAME <<SCRIPT: run the shell script on stdin as root in the VM
  (cd "$HERE" && vagrant ssh "$1" -c "sudo bash -s" -- -q)
}
CONF=/etc/bootstrapd/bootstrapd.toml

step "appliance: the unit"
vm appliance >"$LOG/unit.log" 2>&1 <<'SH' || true
systemctl --no-pager --lines=0 status bootstrapd
bootstrapd --version
SH
check "bootstrapd.service is active (running)" grep -q "Active: active (running)" "$LOG/unit.log"

downloaded() {  # downloaded URL LOG: the phone's last line about URL says "N bytes", N > 0 (not "failed")
  grep -F "$1: " "$2" | tail -1 | grep -Eq ": [1-9][0-9]* bytes$"
}
step "phone-dhclient: a second power-on (vagrant provision --provision-with boot)"
(cd "$HERE" && vagrant provision phone-dhclient --provision-with boot) >"$LOG/phone-dhclient.log" 2>&1 || true
check "DHCPv4 lease from the pool" grep -Eq "fixed-address 10\.77\.0\.1[0-9][0-9];" "$LOG/phone-dhclient.log"
check "DHCPv4 option 66" grep -q 'option tftp-server-name "tftp://10.77.0.1/"' "$LOG/phone-dhclient.log"
check "DHCPv6 lease from the pool" grep -Eq "iaaddr fd77::1[0-9a-f][0-9a-f] " "$LOG/phone-dhclient.log"
check "DHCPv6 option 59" grep -q 'bootfile-url "tftp://\[fd77::1\]/"' "$LOG/phone-dhclient.log"
for url in tftp://10.77.0.1/y000000000000.boot tftp://10.77.0.1/y000000000108.cfg tftp://10.77.0.1/001565770001.cfg \
           "tftp://[fd77::1]/y000000000108.cfg" http://10.77.0.1/y000000000108.cfg; do
  check "download $url" downloaded "$url" "$LOG/phone-dhclient.log"
done

step "phone-sim: a second power-on of the 20 simulated phones"
rc=0
(cd "$HERE" && vagrant provision phone-sim --provision-with boot) >"$LOG/phone-sim.log" 2>&1 || rc=$?
check "bootstrapd sim: every phone provisioned (exit status 0)" [ "$rc" -eq 0 ]

step "appliance: bootstrapd status"
vm appliance >"$LOG/status.log" 2>&1 <<<"bootstrapd status --config $CONF" || true
vm appliance >"$LOG/status.json" 2>/dev/null <<<"bootstrapd status --config $CONF --json" || true
check "bootstrapd status: the 20 simulated phones and phone-dhclient, all done" "$PYTHON" -c '
import json, sys
phones = json.load(open(sys.argv[1]))["phones"]
stages = {p["mac"]: p["stage"] for p in phones}
print("   ", len(stages), "phones:", sorted(set(stages.values())))
sys.exit(not (len(stages) >= 21 and set(stages.values()) == {"done"} and "00:15:65:77:00:01" in stages))
' "$LOG/status.json"

step "the status page, turned on with password \"lab\", over the lab LAN"
vm appliance >"$LOG/status-on.log" 2>&1 <<SH || true
set -e
if ! grep -q '^\[status\]' $CONF; then
  printf '\n[status]\nenabled = true\npassword = "%s"\n' "\$(echo lab | bootstrapd hash-password)" >> $CONF
fi
bootstrapd check-config --config $CONF
systemctl restart bootstrapd
sleep 3
systemctl is-active bootstrapd
SH
vm phone-dhclient >"$LOG/status-page.log" 2>&1 <<'SH' || true
curl -sS --fail -u admin:lab -o /dev/null -w '%{http_code} %{content_type} %{size_download} bytes\n' http://10.77.0.1/status/
curl -sS --fail -u admin:lab http://10.77.0.1/api/phones
echo
curl -sS -o /dev/null -w 'without credentials: %{http_code}\n' http://10.77.0.1/status/
SH
check "the status page answers (200, text/html)" grep -q "^200 text/html" "$LOG/status-page.log"
check "the API lists the phones" grep -q '"00:15:65:77:00:01"' "$LOG/status-page.log"
check "without credentials: 401" grep -q "without credentials: 401" "$LOG/status-page.log"

step "results"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'lab.sh: %d check(s) failed:%s\n' "${#FAILED[@]}" "$(printf '\n  %s' "${FAILED[@]}")" >&2
  exit 1
fi
echo "lab.sh: every check passed"
