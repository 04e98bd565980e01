"""Which peers the agent starts a handshake with (agent/handshakes.py): new to the netmap or under a new key."""

from __future__ import annotations

from netmaps import netmap

from wgmesh import keys
from wgmesh.agent.handshakes import to_start
from wgmesh.models import PeerConfig


def peer(node_id: int, public_key: str) -> PeerConfig:
    ip = f"100.96.0.{node_id}"
    return PeerConfig(
        node_id=node_id, name=f"gw{node_id}", public_key=public_key, overlay_ip=ip, allowed_ips=[f"{ip}/32"]
    )


K2, K3, K3B, K4 = (keys.generate_keypair().public_key for _ in range(4))


def test_the_first_netmap_brings_every_peer() -> None:
    assert [p.name for p in to_start(None, netmap(peer(2, K2), peer(3, K3)))] == ["gw2", "gw3"]


def test_only_joined_and_rekeyed_peers_and_nothing_for_the_same_or_fewer() -> None:
    old = netmap(peer(2, K2), peer(3, K3))
    assert to_start(old, netmap(peer(2, K2), peer(3, K3), version=2)) == []
    assert to_start(old, netmap(peer(2, K2))) == []  # one left: nothing to start
    changed = to_start(old, netmap(peer(2, K2), peer(3, K3B), peer(4, K4)))
    assert [(p.name, p.public_key) for p in changed] == [("gw3", K3B), ("gw4", K4)]
