#!/usr/bin/env bash
# Builds a Vagrant box for the libvirt provider from Debian 12 (bookworm) packages alone, for machines that cannot
# reach Vagrant Cloud (where debian/bookworm64 lives): mmdebstrap makes the root file system from a Debian mirror,
# mke2fs -d writes it into the partition of a disk image (no loop device, no mount), one short boot of that image
# under QEMU (direct kernel boot) installs GRUB into it, and the image becomes box.img (qcow2) of a box file with
# metadata.json and a Vagrantfile. The box has everything the lab's VMs use, so they need no network beyond
# Vagrant's management network: a vagrant user with Vagrant's insecure key and password-less sudo, openssh, rsync,
# python3 and python3-venv (scripts/install.sh), isc-dhcp-client, curl and tcpdump (the phone VMs, the captures).
# Interface names are eth0, eth1 (net.ifnames=0); eth0, the management NIC, takes DHCP; each VM gets its own SSH host
# keys and machine id at its first boot.
#
# Usage: vagrant/build-box.sh [--out FILE] [--name NAME] [--add] [--mirror URL] [--size SIZE] [--accel kvm|tcg]
#   --out FILE    the box file (default vagrant/.vagrant/boxes/bootstrapd-bookworm64.box, outside the rsynced tree)
#   --name NAME   the name for `vagrant box add` (default bootstrapd/bookworm64-local)
#   --add         also `vagrant box add --force` it under NAME (then: BOOTSTRAPD_BOX=NAME vagrant up --provider=libvirt)
#   --mirror URL  the Debian mirror (default http://deb.debian.org/debian; security updates from its -security twin)
#   --size SIZE   the disk's virtual size (default 8G; sparse, the box file holds only what is used)
#   --accel A     how QEMU runs the GRUB boot: kvm (the default when /dev/kvm is writable) or tcg (emulation; where
#                 KVM does not run a Linux guest, as under this project's nested KVM)
# Needs root, mmdebstrap, qemu-system-x86 (with /dev/kvm, or slowly without), qemu-utils, e2fsprogs, fdisk.
# Exit status: 0 built, 1 a step failed, 2 bad usage.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$HERE/.vagrant/boxes/bootstrapd-bookworm64.box
NAME=bootstrapd/bookworm64-local
ADD=0
MIRROR=http://deb.debian.org/debian
SIZE=8G
SUITE=bookworm
ACCEL=tcg
[ -w /dev/kvm ] && ACCEL=kvm
PACKAGES=(linux-image-cloud-amd64 initramfs-tools systemd-sysv udev dbus ifupdown isc-dhcp-client openssh-server
          sudo rsync python3 python3-venv grub-pc-bin grub2-common e2fsprogs iproute2 curl tcpdump ca-certificates
          procps kmod netbase less)

usage() {
  echo "build-box.sh: $1" >&2
  echo "usage: vagrant/build-box.sh [--out FILE] [--name NAME] [--add] [--mirror URL] [--size SIZE]" \
       "[--accel kvm|tcg]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--name|--mirror|--size|--accel)
      { [ $# -ge 2 ] && [ -n "$2" ]; } || usage "$1 needs a value"
      case "$1" in
        --out) OUT=$(realpath -m "$2") ;;
        --name) NAME=$2 ;;
        --mirror) MIRROR=$2 ;;
        --size) SIZE=$2 ;;
        --accel) ACCEL=$2 ;;
      esac
      shift 2 ;;
    --add) ADD=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown argument $1" ;;
  esac
done
case "$ACCEL" in kvm|tcg) ;; *) usage "--accel is kvm or tcg, not $ACCEL" ;; esac
[ "$(id -u)" -eq 0 ] || { echo "build-box.sh: run as root (mmdebstrap, the file ownership of the image)" >&2; exit 1; }
for tool in mmdebstrap qemu-system-x86_64 qemu-img mke2fs sfdisk; do
  command -v "$tool" >/dev/null || { echo "build-box.sh: $tool is missing (apt-get install mmdebstrap" \
    "qemu-system-x86 qemu-utils e2fsprogs fdisk)" >&2; exit 1; }
done
[ "$ADD" -eq 0 ] || command -v vagrant >/dev/null || { echo "build-box.sh: --add needs vagrant" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/bootstrapd-box.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
step() { echo "== build-box.sh: $*"; }

step "Debian $SUITE from $MIRROR into $ROOT"
packages=$(IFS=,; echo "${PACKAGES[*]}")
mmdebstrap --variant=minbase --include="$packages" --aptopt='Acquire::Retries "3"' "$SUITE" "$ROOT" \
  "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb ${MIRROR%/debian}/debian-security $SUITE-security main"

step "configuration: vagrant user, ssh, network, boot"
echo bootstrapd-box > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tbootstrapd-box\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
echo 'LABEL=bootstrapd-root / ext4 errors=remount-ro 0 1' > "$ROOT/etc/fstab"
cat > "$ROOT/etc/network/interfaces" <<'CONF'
# The box of vagrant/build-box.sh: eth0 is Vagrant's management network. Other NICs are left to the provisioning.
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
allow-hotplug eth0
iface eth0 inet dhcp
CONF
cat > "$ROOT/etc/default/grub" <<'CONF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8 net.ifnames=0"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
CONF
chroot "$ROOT" useradd --create-home --shell /bin/bash --groups sudo vagrant
echo vagrant:vagrant | chroot "$ROOT" chpasswd
install -d -m 700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
insecure=$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant -path '*/keys/vagrant.pub' 2>/dev/null |
           head -1 || true)
[ -n "$insecure" ] || { echo "build-box.sh: Vagrant's insecure public key (keys/vagrant.pub) not found" >&2; exit 1; }
install -m 600 -o 1000 -g 1000 "$insecure" "$ROOT/home/vagrant/.ssh/authorized_keys"
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > "$ROOT/etc/sudoers.d/vagrant"
chmod 440 "$ROOT/etc/sudoers.d/vagrant"
echo 'UseDNS no' > "$ROOT/etc/ssh/sshd_config.d/vagrant.conf"
# Every VM its own host keys and machine id (the DHCPv6 DUID of a systemd client, journald's files).
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat > "$ROOT/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=SSH host keys for this VM (vagrant/build-box.sh)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=multi-user.target
UNIT
chroot "$ROOT" systemctl enable ssh-host-keys.service
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/*

# The one boot that installs GRUB: the image's own kernel and initrd, this script as init, then power off.
cat > "$ROOT/usr/local/sbin/bootstrapd-box-grub" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mount -o remount,rw /
if grub-install --target=i386-pc /dev/vda && grub-mkconfig -o /boot/grub/grub.cfg; then
  echo BOOTSTRAPD-BOX-GRUB-OK
fi
rm -f /usr/local/sbin/bootstrapd-box-grub
sync
echo u > /proc/sysrq-trigger   # every file system read-only (this script, still open, keeps a remount busy)
sleep 2
echo o > /proc/sysrq-trigger   # the power-off happens in the background: init must not exit before it (a panic)
sleep 60
INIT
chmod 755 "$ROOT/usr/local/sbin/bootstrapd-box-grub"
cp "$ROOT"/boot/vmlinuz-* "$WORK/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$WORK/initrd.img"

step "disk image ($SIZE): one partition, ext4 from the tree"
truncate -s "$SIZE" "$WORK/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk --quiet "$WORK/disk.raw"
sectors=$(( $(stat -c %s "$WORK/disk.raw") / 512 - 2048 ))
mke2fs -q -t ext4 -L bootstrapd-root -d "$ROOT" "$WORK/part.raw" "$((sectors / 2))k"
dd if="$WORK/part.raw" of="$WORK/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$WORK/part.raw"
rm -rf "$ROOT"

step "GRUB, installed by one boot of the image"
# QEMU's default CPU model: -cpu host fails under nested KVM (an MSR it cannot set).
timeout 1800 qemu-system-x86_64 -machine "accel=$ACCEL" -m 1024 -nographic -no-reboot -nic none \
  -drive "file=$WORK/disk.raw,format=raw,if=virtio" -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
  -append "root=/dev/vda1 ro console=ttyS0 panic=1 init=/usr/local/sbin/bootstrapd-box-grub" </dev/null >"$WORK/grub.log" 2>&1 ||
  true
if ! grep -q BOOTSTRAPD-BOX-GRUB-OK "$WORK/grub.log"; then
  tail -30 "$WORK/grub.log" >&2
  echo "build-box.sh: installing GRUB failed (the boot's console above)" >&2
  exit 1
fi

step "box file $OUT"
qemu-img convert -c -O qcow2 "$WORK/disk.raw" "$WORK/box.img"
virtual_gb=$(( ($(stat -c %s "$WORK/disk.raw") + (1 << 30) - 1) >> 30 ))
rm -f "$WORK/disk.raw"
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$virtual_gb" > "$WORK/metadata.json"
cat > "$WORK/Vagrantfile" <<'RUBY'
# The box of bootstrapd's vagrant/build-box.sh (Debian 12, libvirt).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "kvm"
  end
end
RUBY
mkdir -p "$(dirname "$OUT")"
tar -C "$WORK" -cf "$OUT.tmp" metadata.json Vagrantfile box.img
mv "$OUT.tmp" "$OUT"
ls -l "$OUT"
if [ "$ADD" -eq 1 ]; then
  step "vagrant box add --force --name $NAME"
  vagrant box add --force --name "$NAME" "$OUT"
fi
