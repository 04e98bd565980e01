"""Fixtures for the tests that need the WireGuard kernel module (`pytest -m kernel`).

`make test-kernel` runs them inside Debian's kernel under QEMU (virtme-ng); anywhere the module cannot
be loaded they are skipped with that reason. They reuse the namespace harness of tests/integration.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from netns_harness import Pair, remove_namespaces, veth_pair

from wgmesh.agent.system.wireguard_kernel import kernel_module_available


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in ("ip", "wg", "wireguard-go", "ping") if shutil.which(t) is None]
    if missing:
        return f"needs {', '.join(missing)}"
    if not kernel_module_available():
        return "needs the WireGuard kernel module (absent here; `make test-kernel` runs these in a VM)"
    return None


_REASON: list[str | None] = []


def kernel_skip_reason() -> str | None:
    """Why these tests cannot run here (None: they can); probed once per session."""
    if not _REASON:
        _REASON.append(_skip_reason())
    return _REASON[0]


@pytest.fixture(autouse=True)
def _needs_kernel_module() -> None:
    reason = kernel_skip_reason()
    if reason is None:
        return
    # In test-kernel's guest a skip would hide a broken set-up: there it is a failure.
    if os.environ.get("WGMESH_REQUIRE_KERNEL") == "1":
        pytest.fail(f"kernel tests cannot run in the guest: {reason}")
    pytest.skip(reason)


@pytest.fixture
def namespaces() -> Iterator[list[str]]:
    """A list the test fills with namespace names; every one is removed afterwards, with its processes."""
    made: list[str] = []
    try:
        yield made
    finally:
        remove_namespaces(made)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Namespaces joined by a veth (198.18.1.1/24 and .2), overlay 100.96.0.1 and .2, workers not started."""
    with veth_pair(f"wgk{secrets.token_hex(2)}", tmp_path, ("198.19.1.0/24", "198.19.2.0/24")) as made:
        yield made
