# wgmesh — set-up and checks. Every target is idempotent and quiet when already done.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

APT_PACKAGES := wireguard-tools wireguard-go iproute2 nftables iperf3 iputils-ping chromium udptunnel
# test-kernel: QEMU, and what virtme-ng needs on the host (depmod, a static busybox for its initramfs).
APT_PACKAGES += qemu-system-x86 kmod busybox-static file
# The store tests: a private PostgreSQL cluster (tests/pg_harness.py), and the backup steps of docs/deploy.md.
APT_PACKAGES += postgresql sqlite3
# test-systemd: a Debian root made by mmdebstrap, booted with a real systemd by systemd-nspawn.
APT_PACKAGES += mmdebstrap systemd-container

.PHONY: setup apt venv test lint typecheck unit kernel-image test-kernel systemd-root test-systemd clean demo demo-down dist

setup: apt venv

# Installs the system packages only when one is missing, so a second run says nothing.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# The sdist and the wheel (the dashboard inside) in dist/, checked as PyPI would check an upload. Built
# without isolation: the venv holds the build backend, so no download is needed.
# Made from the tracked files only (as tests/packaging builds them): nothing untracked slips in.
dist: venv
	@rm -rf dist build/dist-source && mkdir -p build/dist-source
	@git ls-files -z | xargs -0 cp --parents -t build/dist-source
	@out=$$($(PY) -m build --no-isolation --outdir dist build/dist-source 2>&1) || { echo "$$out"; exit 1; }
	@rm -rf build
	@out=$$($(VENV)/bin/twine check --strict dist/* 2>&1) || { echo "$$out"; exit 1; }

lint: venv
	@$(VENV)/bin/ruff check wgmesh tests $(wildcard benchmarks)
	@$(VENV)/bin/ruff format --check wgmesh tests $(wildcard benchmarks)

typecheck: venv
	@$(VENV)/bin/mypy wgmesh

# The tests marked `kernel` run once, in test-kernel's VM (here they would only be skipped).
# The slowest tests are listed at the end, so a run on a slow machine shows where its time went.
unit: venv
	@$(VENV)/bin/pytest -q -m "not kernel and not systemd" --durations=15

KERNEL_DIR := .cache/kernel

# Debian's kernel image (the one linux-image-amd64 points at), extracted from its .deb into
# $(KERNEL_DIR)/root — nothing goes into the host's /boot or /lib/modules.
kernel-image:
	@if ! ls $(KERNEL_DIR)/root/boot/vmlinuz-* >/dev/null 2>&1; then \
	  pick() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $$2; exit}'; }; \
	  pkg=$$(pick); [ -n "$$pkg" ] || { apt-get update -qq >/dev/null; pkg=$$(pick); }; \
	  echo "fetching $$pkg into $(KERNEL_DIR)"; \
	  rm -rf $(KERNEL_DIR)/dl $(KERNEL_DIR)/root.tmp && mkdir -p $(KERNEL_DIR)/dl && \
	  (cd $(KERNEL_DIR)/dl && apt-get download -qq "$$pkg" 2>/dev/null) && \
	  dpkg-deb -x $(KERNEL_DIR)/dl/*.deb $(KERNEL_DIR)/root.tmp && \
	  mv $(KERNEL_DIR)/root.tmp $(KERNEL_DIR)/root && rm -rf $(KERNEL_DIR)/dl \
	  || { echo "kernel-image: could not download or extract '$$pkg'" >&2; exit 1; }; \
	fi

# `pytest -m kernel` inside that kernel under QEMU (software emulation: KVM is not usable here).
test-kernel: setup kernel-image
	@tests/kernel/run_vm.sh $$(ls $(KERNEL_DIR)/root/boot/vmlinuz-* | tail -1) tests/kernel

SYSTEMD_DIR := .cache/systemd
SYSTEMD_PACKAGES := systemd,systemd-sysv,dbus,iproute2,iputils-ping,nftables,wireguard-go,python3,python3-venv

# A Debian root (the host's suite) with systemd and what the units need, made once into $(SYSTEMD_DIR)/root;
# and the package's dependencies as wheels in $(SYSTEMD_DIR)/wheels, fetched again when pyproject.toml's
# list changes, so that the test installs wgmesh there as docs/deploy.md says, with no network.
systemd-root: venv
	@if [ "$$(cat $(SYSTEMD_DIR)/root/.wgmesh-packages 2>/dev/null)" != "$(SYSTEMD_PACKAGES)" ]; then \
	  suite=$$(. /etc/os-release && echo $$VERSION_CODENAME); echo "making a Debian $$suite root in $(SYSTEMD_DIR)"; \
	  rm -rf $(SYSTEMD_DIR)/root $(SYSTEMD_DIR)/root.tmp && mkdir -p $(SYSTEMD_DIR) && \
	  mmdebstrap --quiet --variant=minbase --include=$(SYSTEMD_PACKAGES) $$suite $(SYSTEMD_DIR)/root.tmp >/dev/null && \
	  echo "$(SYSTEMD_PACKAGES)" > $(SYSTEMD_DIR)/root.tmp/.wgmesh-packages && \
	  mv $(SYSTEMD_DIR)/root.tmp $(SYSTEMD_DIR)/root \
	  || { echo "systemd-root: mmdebstrap failed" >&2; exit 1; }; \
	fi
	@deps=$$($(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))'); \
	if [ "$$deps" != "$$(cat $(SYSTEMD_DIR)/wheels/.deps 2>/dev/null)" ]; then \
	  rm -rf $(SYSTEMD_DIR)/wheels && mkdir -p $(SYSTEMD_DIR)/wheels && \
	  echo "$$deps" > $(SYSTEMD_DIR)/wheels/requirements.txt && \
	  out=$$($(PY) -m pip download -q --disable-pip-version-check --only-binary=:all: -d $(SYSTEMD_DIR)/wheels \
	    -r $(SYSTEMD_DIR)/wheels/requirements.txt 2>&1) \
	  || { echo "$$out" >&2; echo "systemd-root: could not download the dependencies" >&2; exit 1; }; \
	  echo "$$deps" > $(SYSTEMD_DIR)/wheels/.deps; \
	fi

# The units under a real systemd: tests/systemd boots $(SYSTEMD_DIR)/root with systemd-nspawn.
test-systemd: setup systemd-root
	@WGMESH_REQUIRE_SYSTEMD=1 $(VENV)/bin/pytest -q -m systemd tests/systemd

test: setup lint typecheck unit test-kernel test-systemd

# The dashboard's browser tests, saving their screenshots under docs/img/ (referenced from the README).
screenshots: setup
	@WGMESH_SCREENSHOTS=docs/img $(VENV)/bin/pytest -q tests/web

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis

LAB    ?= wgl
SITES  ?= 3
WGMESH := $(VENV)/bin/wgmesh

# A multi-site mesh in network namespaces on this machine (root). On a lab that is already up it
# only prints the topology and the ping matrix again. `make demo-down` removes everything.
demo: setup
	@$(WGMESH) lab status --name $(LAB) >/dev/null 2>&1 || $(WGMESH) lab up --name $(LAB) --sites $(SITES)
	@$(WGMESH) lab status --name $(LAB)
	@eval "$$($(WGMESH) lab env --name $(LAB))" && $(WGMESH) status
	@$(WGMESH) lab ping --name $(LAB)

demo-down: venv
	@$(WGMESH) lab down --name $(LAB)
