# wgmesh — set-up and checks. Every target is idempotent and quiet when already done.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

APT_PACKAGES := wireguard-tools wireguard-go iproute2 nftables iperf3 iputils-ping

.PHONY: setup apt venv test lint typecheck unit clean

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
	@$(VENV)/bin/ruff check wgmesh tests benchmarks
	@$(VENV)/bin/ruff format --check wgmesh tests benchmarks

typecheck: venv
	@$(VENV)/bin/mypy wgmesh

unit: venv
	@$(VENV)/bin/pytest -q

test: setup lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
