"""The `pair` fixture: two namespaces on a veth link, always torn down (see netns_harness.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_harness import Pair, Site, sh, skip_reason, stop_pids

from wgmesh.agent.system.wireguard_uapi import SOCKET_DIR


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """Namespaces `PREFIXa`/`PREFIXb` with veths 198.18.1.1/24 and 198.18.1.2/24, workers not started."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    prefix = f"wgt{secrets.token_hex(2)}"
    a = Site(
        f"{prefix}a",
        f"{prefix}va",
        "198.18.1.1",
        f"{prefix}w1",
        "100.96.0.1",
        51820,
        "10.1.0.0/24",
        tmp_path / "a.log",
    )
    b = Site(
        f"{prefix}b",
        f"{prefix}vb",
        "198.18.1.2",
        f"{prefix}w2",
        "100.96.0.2",
        51821,
        "10.2.0.0/24",
        tmp_path / "b.log",
    )
    made = Pair(prefix, a, b)
    try:
        for site in (a, b):
            sh("ip", "netns", "add", site.ns)
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
        for ns in (a.ns, b.ns, *made.extra_ns):
            pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
            stop_pids(pids)
            sh("ip", "netns", "del", ns, check=False)
        for sock in SOCKET_DIR.glob(f"{prefix}*.sock"):
            sock.unlink(missing_ok=True)
        # pytest shows this only for a failed test.
        for site in (a, b):
            if site.log.exists():
                print(f"--- data plane log of {site.ns} (tail) ---\n{site.log.read_text()[-4000:]}")
