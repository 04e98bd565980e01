"""One netmap builder for the unit tests of what consumes netmaps (plan, QoS, paths, ruleset, data plane)."""

from __future__ import annotations

from typing import Any

from wgmesh.models import NetMap, PeerConfig

GW1: dict[str, Any] = {
    "version": 1,
    "node_id": 1,
    "name": "gw1",
    "overlay_ip": "100.96.0.1",
    "overlay_cidr": "100.96.0.0/16",
    "listen_port": 51820,
    "p2p": "auto",
}


def netmap(*peers: PeerConfig, **fields: Any) -> NetMap:
    """gw1's netmap (node 1, 100.96.0.1 in 100.96.0.0/16, port 51820) holding `peers`; `fields` override."""
    return NetMap.model_validate({**GW1, **fields, "peers": list(peers)})
