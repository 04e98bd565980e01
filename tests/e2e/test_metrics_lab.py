"""Issue 7 (metrics): Prometheus scrapes of all three processes in the lab, from the root namespace.

The coordinator's /metrics on the hub address port 9585 (never the API's), the relay's on port 9587, each agent's on its
underlay address port 9586 (all inside 198.18.0.0/15). Traffic between the VPC hosts must move the
per-peer byte counters, and blocking UDP at gw2 must flip the path gauge to the relay with a switch
counted under `probes_failed`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lab_paths import ping_ok
from metrics_harness import Samples, scrape, value

from wgmesh import trust
from wgmesh.lab import Lab, wait_until
from wgmesh.lab.layout import AGENT_METRICS_PORT, COORDINATOR_METRICS_PORT, RELAY_METRICS_PORT
from wgmesh.lab.pings import ContinuousPing
from wgmesh.pins import Pin

pytestmark = [pytest.mark.e2e]


def switches(samples: Samples, peer: str) -> dict[str, float]:
    return {
        dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "wgmesh_path_switches_total" and dict(labels).get("peer") == peer
    }


@pytest.mark.lab(sites=2, timeout=60)
def test_scrapes_follow_traffic_and_the_switch_to_the_relay(lab: Lab, tmp_path: Path) -> None:
    started = time.monotonic()
    one, two = lab.plan.site(1), lab.plan.site(2)
    coordinator = f"http://{lab.plan.hub_ip}:{COORDINATOR_METRICS_PORT}/metrics"
    relay = f"http://{lab.plan.hub_ip}:{RELAY_METRICS_PORT}/metrics"
    agent = {i: f"http://{lab.plan.site(i).underlay_ip}:{AGENT_METRICS_PORT}/metrics" for i in (1, 2)}

    # The coordinator: both gateways online, their routes active; discovery lists both agents.
    pin = Pin.parse(lab.pin)
    tls = trust.pinned(lambda: [pin])
    wait_until(
        lambda: value(scrape(coordinator, tls), "wgmesh_nodes", state="online") == 2, 20, "2 nodes online"
    )
    c = scrape(coordinator, tls)
    assert value(c, "wgmesh_node_online", node="gw1", role="gateway") == 1
    assert value(c, "wgmesh_routes", state="active") == 2
    wait_until(lambda: len(lab.api("GET", "/api/v1/prometheus/targets")) == 2, 15, "both agents discovered")
    targets = {g["labels"]["node"]: g["targets"] for g in lab.api("GET", "/api/v1/prometheus/targets")}
    assert targets == {s.node: [f"{s.underlay_ip}:{AGENT_METRICS_PORT}"] for s in (one, two)}

    # Agents: direct, reachable coordinator, the netmap applied.
    wait_until(
        lambda: value(scrape(agent[1]), "wgmesh_peer_path", peer="gw2", path="direct") == 1,
        20,
        "gw1: gw2 direct",
    )
    a1 = scrape(agent[1])
    assert value(a1, "wgmesh_peer_path", peer="gw2", path="relay") == 0
    assert value(a1, "wgmesh_agent_coordinator_reachable") == 1
    assert value(a1, "wgmesh_agent_netmap_version") > 0
    assert value(a1, "wgmesh_reconcile_duration_seconds_count") >= 1
    assert value(a1, "wgmesh_peer_last_handshake_timestamp_seconds", peer="gw2") > time.time() - 300

    # Traffic between the VPC hosts moves both byte counters on both sides.
    before = {i: scrape(agent[i]) for i in (1, 2)}
    assert ping_ok(lab, one.host, two.vm_ip, count=20)
    for i, peer in ((1, "gw2"), (2, "gw1")):
        for name in ("wgmesh_peer_rx_bytes_total", "wgmesh_peer_tx_bytes_total"):
            floor = value(before[i], name, peer=peer) + 20 * 84  # 20 pings of 84 bytes, plus WireGuard's
            wait_until(
                lambda i=i, name=name, peer=peer, floor=floor: (
                    value(scrape(agent[i]), name, peer=peer) >= floor
                ),
                5,
                f"gw{i} {name} rises",
            )

    # UDP blocked at gw2: the path gauge flips to the relay, a switch counted as probes_failed.
    relay_before = scrape(relay)
    ping = ContinuousPing(lab, one.host, two.vm_ip, tmp_path / "ping.log")
    try:
        wait_until(lambda: len(ping.replies()) >= 5, 10, "the ping running")
        lab.block_tcp(1, 2)  # TCP between the gateways too, so the relay it is (not tcp-direct)
        lab.block_udp(2)
        took = wait_until(
            lambda: value(scrape(agent[1]), "wgmesh_peer_path", peer="gw2", path="relay") == 1,
            15,
            "gw1: gw2 relayed",
        )
        a1 = scrape(agent[1])
        assert value(a1, "wgmesh_peer_path", peer="gw2", path="direct") == 0
        wait_until(
            lambda: value(scrape(agent[2]), "wgmesh_peer_path", peer="gw1", path="relay") == 1,
            15,
            "gw2: gw1 relayed",
        )
        reasons = {1: switches(scrape(agent[1]), "gw2"), 2: switches(scrape(agent[2]), "gw1")}
        print(f"path gauge on the relay {took:.1f} s after the block; switches: {reasons}")
        assert any(r.get("probes_failed", 0) >= 1 for r in reasons.values()), reasons
        wait_until(
            lambda: (
                value(scrape(relay), "wgmesh_relay_forwarded_frames_total")
                >= value(relay_before, "wgmesh_relay_forwarded_frames_total") + 20
            ),
            10,
            "the relay forwarding the ping",
        )
        r = scrape(relay)
        assert value(r, "wgmesh_relay_connected_nodes") == 2
        a1 = scrape(agent[1])
        assert value(a1, "wgmesh_shim_datagrams_total", direction="to_relay") > 0
        relays = [dict(k[1]) for k in a1 if k[0] == "wgmesh_agent_relay_up"]
        assert relays and all(value(a1, "wgmesh_agent_relay_up", **labels) == 1 for labels in relays)
    finally:
        ping.stop()
    print(f"metrics e2e took {time.monotonic() - started:.1f} s")
