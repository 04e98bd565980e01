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

from netns_harness import Pair, Site, sh, stop_pids

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
def namespaces(tmp_path: Path) -> Iterator[list[str]]:
    """A list the test fills with namespace names; every one is removed afterwards, with its processes."""
    made: list[str] = []
    try:
        yield made
    finally:
        for ns in made:
            pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
            stop_pids(pids)
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def pair(tmp_path: Path, namespaces: list[str]) -> Iterator[Pair]:
    """Namespaces joined by a veth (198.18.1.1/24 and .2), overlay 100.96.0.1 and .2, workers not started."""
    prefix = f"wgk{secrets.token_hex(2)}"
    a = Site(
        f"{prefix}a",
        f"{prefix}va",
        "198.18.1.1",
        f"{prefix}w1",
        "100.96.0.1",
        51820,
        "198.19.1.0/24",
        tmp_path / "a.log",
    )
    b = Site(
        f"{prefix}b",
        f"{prefix}vb",
        "198.18.1.2",
        f"{prefix}w2",
        "100.96.0.2",
        51821,
        "198.19.2.0/24",
        tmp_path / "b.log",
    )
    made = Pair(prefix, a, b)
    try:
        for site in (a, b):
            sh("ip", "netns", "add", site.ns)
            namespaces.append(site.ns)
        sh("ip", "link", "add", a.veth, "netns", a.ns, "type", "veth", "peer", "name", b.veth, "netns", b.ns)
        for site in (a, b):
            sh("ip", "-n", site.ns, "addr", "add", f"{site.underlay}/24", "dev", site.veth)
            sh("ip", "-n", site.ns, "link", "set", site.veth, "up")
            sh("ip", "-n", site.ns, "link", "set", "lo", "up")
        yield made
    finally:
        for site in (a, b):
            if site.worker is not None:
                site.worker.stop()
            if site.log.exists():
                print(f"--- data plane log of {site.ns} (tail) ---\n{site.log.read_text()[-4000:]}")
