# wgmesh — set-up and checks. Every target is idempotent and quiet when already done.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

APT_PACKAGES := wireguard-tools wireguard-go iproute2 nftables iperf3 iputils-ping

.PHONY: setup apt venv test lint typecheck unit clean demo demo-down

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

lint: venv
	@$(VENV)/bin/ruff check wgmesh tests $(wildcard benchmarks)
	@$(VENV)/bin/ruff format --check wgmesh tests $(wildcard benchmarks)

typecheck: venv
	@$(VENV)/bin/mypy wgmesh

unit: venv
	@$(VENV)/bin/pytest -q

test: setup lint typecheck unit

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
