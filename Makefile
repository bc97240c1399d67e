# The two commands of the README: `make demo` and `make test`. Both set up what they need on a fresh Debian machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PEERS := isc-dhcp-client busybox tftp-hpa atftp curl sip-tester tshark kea-admin iproute2 dhcping systemd \
         dnsmasq-base kea-dhcp4-server kea-dhcp6-server tftpd-hpa
# Deployment checks: vagrant validate (and its libvirt provider), shellcheck, Debian's python3 for the install tests.
PEERS += vagrant vagrant-libvirt shellcheck python3-venv
# HTTP/FTP: the clients of the lab tests, the anchors of bench-http, and inotifywait (nothing outside the tree touched).
# nginx-light is also the HTTP anchor of the boot storm benchmark (make bench-storm, with dnsmasq).
PEERS += lftp nginx-light vsftpd wrk inotify-tools
# The journal's tests: tcpdump (captures to trace), promtool (metrics), chromium (the status page).
PEERS += tcpdump prometheus chromium
# PostgreSQL: the shared store's tests start their own server (initdb/pg_ctl in a temporary folder); bench-dhcp4-pg
# runs Kea on it too (Debian's kea-dhcp4-server has its PostgreSQL backend built in, kea-admin creates the schema).
PEERS += postgresql
STAMP := $(VENV)/.installed
# make vagrant-lab (not part of make test: the VMs take too long for CI): libvirt, QEMU/KVM, the box builder.
VAGRANT_LAB_PEERS := vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
         mmdebstrap fdisk e2fsprogs dnsmasq-base

.PHONY: all venv peers test lint demo bench bench-dhcp4 bench-tftp bench-pnp bench-dhcp6 bench-http bench-storm \
        bench-dhcp4-pg clean vagrant-lab

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

peers:
	@bash scripts/install-peers.sh $(PEERS)

lint: venv
	$(VENV)/bin/ruff check bootstrapd tests scripts
	$(VENV)/bin/mypy

test: venv peers lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv peers
	$(PY) -m scripts.demo

vagrant-lab: venv
	@bash scripts/install-peers.sh $(VAGRANT_LAB_PEERS)
	bash vagrant/lab.sh

bench: bench-dhcp4 bench-tftp bench-pnp bench-dhcp6 bench-http bench-storm

bench-dhcp4: venv peers
	$(PY) -m tests.bench.dhcp4

bench-dhcp4-pg: venv peers
	$(PY) -m tests.bench.dhcp4_pg $(BENCH_ARGS)

bench-tftp: venv peers
	$(PY) -m tests.bench.tftp

bench-pnp: venv peers
	$(PY) -m tests.bench.pnp

bench-dhcp6: venv peers
	$(PY) -m tests.bench.dhcp6

bench-http: venv peers
	$(PY) -m tests.bench.http $(BENCH_ARGS)

bench-storm: venv peers
	$(PY) -m tests.bench.storm

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
