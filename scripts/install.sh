#!/usr/bin/env bash
# Installs bootstrapd on a Debian box (bookworm or later) the way systemd/bootstrapd.service runs it, or stages the
# same files under --destdir. The Vagrant lab's VMs run this script too: there is no second copy of these steps.
#
#   program  a virtual environment in /opt/bootstrapd made with Debian's python3, bootstrapd installed into it from
#            this checkout (or --source: another checkout or a wheel), /usr/local/bin/bootstrapd pointing at it
#   config   /etc/bootstrapd/bootstrapd.toml from --config (default configs/bootstrapd.toml), unless one is there
#   tree     /srv/bootstrapd from --tree (default configs/tree), unless that folder holds files already
#   inventory --inventory FILE to /etc/bootstrapd/ beside the config (provisioning.inventory names it relative to
#            the config file), unless one of that name is there; it holds SIP passwords, readable like the tree
#   TLS      --tls-cert to /etc/bootstrapd/tls.crt, --tls-key to /etc/credstore/bootstrapd.tls.key (root, 0600):
#            the unit hands the key to the daemon as the credential tls.key ("credential:tls.key" in the config)
#   unit     /etc/systemd/system/bootstrapd.service, enabled and (re)started. It uses DynamicUser=: no account is
#            created; systemd makes /var/lib/bootstrapd (StateDirectory=) for the user it allocates at each start
#
# Usage: scripts/install.sh [--source DIR|WHEEL] [--config FILE] [--tree DIR] [--inventory FILE]
#                           [--tls-cert FILE --tls-key FILE]
#                           [--python PYTHON] [--wheels DIR] [--program-only] [--no-start] [--destdir DIR] [--dry-run]
#        scripts/install.sh --uninstall [--purge] [--destdir DIR] [--dry-run]
#
#   --wheels DIR    pip takes bootstrapd's dependencies (and the build backend) from the wheels in DIR only, no
#                   index (a box without PyPI: the Vagrant lab's wheelhouse, vagrant/lab.sh)
#   --program-only  the program only (venv, link, README): no config, tree, unit (the Vagrant phone VMs)
#   --no-start      install and check the unit, but neither enable nor start it
#   --destdir DIR   stage every file under DIR instead of / (no apt-get, no systemctl; the venv works from there)
#   --dry-run       print each step, change nothing
#   --uninstall     stop, disable and remove the unit, the venv, the link and the README; --purge also removes the
#                   configuration, the TLS credential and the state (leases). The provisioning tree is always kept.
# Exit status: 0 done, 1 a step failed, 2 bad usage.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/bootstrapd
UNIT=bootstrapd.service
SOURCE=$HERE
CONFIG=$HERE/configs/bootstrapd.toml
TREE=$HERE/configs/tree
INVENTORY=
PYTHON=/usr/bin/python3
WHEELS=
TLS_CERT=
TLS_KEY=
DESTDIR=
DRY_RUN=0
NO_START=0
PROGRAM_ONLY=0
UNINSTALL=0
PURGE=0

usage() {
  echo "install.sh: $1" >&2
  echo "usage: scripts/install.sh [--source DIR|WHEEL] [--config FILE] [--tree DIR] [--inventory FILE]" \
       "[--tls-cert FILE --tls-key FILE]" \
       "[--python PYTHON] [--wheels DIR] [--program-only] [--no-start] [--destdir DIR] [--dry-run] | --uninstall [--purge]" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --source|--config|--tree|--inventory|--tls-cert|--tls-key|--python|--wheels|--destdir)
      { [ $# -ge 2 ] && [ -n "$2" ]; } || usage "$1 needs a value"
      case "$1" in
        --source) SOURCE=$2 ;;
        --config) CONFIG=$2 ;;
        --tree) TREE=$2 ;;
        --inventory) INVENTORY=$2 ;;
        --tls-cert) TLS_CERT=$2 ;;
        --tls-key) TLS_KEY=$2 ;;
        --python) PYTHON=$2 ;;
        --wheels) WHEELS=$2 ;;
        --destdir) DESTDIR=$(realpath -m "$2") ;;
      esac
      shift 2 ;;
    --program-only) PROGRAM_ONLY=1; shift ;;
    --no-start) NO_START=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown argument $1" ;;
  esac
done
[ "$DESTDIR" = / ] && DESTDIR=
D=$DESTDIR
[ -n "$TLS_CERT" ] && [ -z "$TLS_KEY" ] && usage "--tls-cert needs --tls-key"
[ -n "$TLS_KEY" ] && [ -z "$TLS_CERT" ] && usage "--tls-key needs --tls-cert"
[ "$PURGE" -eq 1 ] && [ "$UNINSTALL" -eq 0 ] && usage "--purge goes with --uninstall"
if [ "$UNINSTALL" -eq 0 ]; then
  for file in "$CONFIG" "$TLS_CERT" "$TLS_KEY"; do [ -z "$file" ] || [ -f "$file" ] || usage "no such file: $file"; done
  [ -d "$TREE" ] || usage "no such folder: $TREE"
  [ -e "$SOURCE" ] || usage "no such checkout or wheel: $SOURCE"
  [ -z "$WHEELS" ] || [ -d "$WHEELS" ] || usage "no such folder: $WHEELS"
fi
if [ -z "$D" ] && [ "$DRY_RUN" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or stage the files with --destdir DIR, or look first with --dry-run)" >&2
  exit 1
fi

# Every change goes through run: printed, then done (or only printed with --dry-run).
run() {
  echo "+ $*"
  [ "$DRY_RUN" -eq 1 ] || "$@"
}
say() { echo "install.sh: $*"; }
systemd_running() { [ -z "$D" ] && [ -d /run/systemd/system ]; }

uninstall() {
  if [ -z "$D" ] && [ -e "/etc/systemd/system/$UNIT" ]; then
    if systemd_running; then run systemctl disable --now "$UNIT"; else run systemctl disable "$UNIT"; fi
  fi
  run rm -f "$D/etc/systemd/system/$UNIT"
  systemd_running && run systemctl daemon-reload
  run rm -rf "$D$PREFIX" "$D/usr/share/doc/bootstrapd"
  if [ "$(readlink "$D/usr/local/bin/bootstrapd" 2>/dev/null)" = "$PREFIX/bin/bootstrapd" ]; then
    run rm -f "$D/usr/local/bin/bootstrapd"
  fi
  if [ "$PURGE" -eq 1 ]; then
    run rm -rf "$D/etc/bootstrapd" "$D/etc/credstore/bootstrapd.tls.key" "$D/var/lib/bootstrapd" \
      "$D/var/lib/private/bootstrapd"
  fi
  say "removed; kept $D/srv/bootstrapd (the provisioning tree is yours)"
}

install_program() {
  if [ -z "$D" ]; then
    local missing=()
    for pkg in python3 python3-venv; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
      run apt-get update -q
      run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
  fi
  run "$PYTHON" -m venv "$D$PREFIX"
  local from=$SOURCE
  if [ -d "$SOURCE" ]; then
    # Build from a clean copy: setuptools builds in the source folder, and files a checkout's old build/ still
    # holds would end up in the installed package (and root-owned build files in a user's checkout).
    if [ "$DRY_RUN" -eq 1 ]; then BUILD=/tmp/tmp.XXXXXXXXXX; else BUILD=$(mktemp -d); fi
    trap 'rm -rf "$BUILD"' EXIT
    from=$BUILD/source
    run mkdir "$from"
    run tar -C "$SOURCE" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
      --exclude=__pycache__ --exclude=./vagrant/.vagrant -cf "$BUILD/source.tar" .
    run tar -C "$from" -xf "$BUILD/source.tar"
  fi
  local index=()
  [ -z "$WHEELS" ] || index=(--no-index --find-links "$WHEELS")
  run "$D$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check "${index[@]}" --upgrade "$from"
  run install -d -m 755 "$D/usr/local/bin"
  run ln -sfn "$PREFIX/bin/bootstrapd" "$D/usr/local/bin/bootstrapd"
  run install -D -m 644 "$HERE/README.md" "$D/usr/share/doc/bootstrapd/README.md"
  [ "$DRY_RUN" -eq 1 ] || say "$("$D$PREFIX/bin/bootstrapd" --version) in $D$PREFIX"
}

install_service() {
  run install -d -m 755 "$D/etc/bootstrapd"
  if [ -e "$D/etc/bootstrapd/bootstrapd.toml" ]; then
    say "kept the existing $D/etc/bootstrapd/bootstrapd.toml"
  else
    run install -m 644 "$CONFIG" "$D/etc/bootstrapd/bootstrapd.toml"
  fi
  if [ -n "$INVENTORY" ]; then
    local inventory
    inventory="$D/etc/bootstrapd/$(basename "$INVENTORY")"
    if [ -e "$inventory" ]; then
      say "kept the existing $inventory"
    else
      run install -m 644 "$INVENTORY" "$inventory"  # read by the unit's dynamic user, like the tree
    fi
  fi
  if [ -n "$(ls -A "$D/srv/bootstrapd" 2>/dev/null)" ]; then
    say "kept the existing tree in $D/srv/bootstrapd"
  else
    run install -d -m 755 "$D/srv/bootstrapd"
    run cp -R "$TREE/." "$D/srv/bootstrapd/"
    run chmod -R u=rwX,go=rX "$D/srv/bootstrapd"  # read by the unit's dynamic user
  fi
  if [ -n "$TLS_CERT" ]; then
    run install -m 644 "$TLS_CERT" "$D/etc/bootstrapd/tls.crt"
    run install -d -m 700 "$D/etc/credstore"
    run install -m 600 "$TLS_KEY" "$D/etc/credstore/bootstrapd.tls.key"
  fi
  run install -D -m 644 "$HERE/systemd/$UNIT" "$D/etc/systemd/system/$UNIT"
  run "$D$PREFIX/bin/bootstrapd" check-config --config "$D/etc/bootstrapd/bootstrapd.toml"
  if [ -z "$D" ] && command -v systemd-analyze >/dev/null; then
    run systemd-analyze verify "/etc/systemd/system/$UNIT"
  fi
  if [ -n "$D" ] || [ "$NO_START" -eq 1 ]; then
    say "installed; not enabled or started"
  elif systemd_running; then
    run systemctl daemon-reload
    run systemctl enable "$UNIT"
    run systemctl restart "$UNIT"
    [ "$DRY_RUN" -eq 1 ] || systemctl --no-pager --lines=5 status "$UNIT" || true
  else
    run systemctl enable "$UNIT"
    say "systemd is not running here: $UNIT is enabled and starts at the next boot"
  fi
}

if [ "$UNINSTALL" -eq 1 ]; then
  uninstall
  exit 0
fi
install_program
[ "$PROGRAM_ONLY" -eq 1 ] || install_service
