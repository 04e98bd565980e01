"""wgmesh.netmap_delta: a netmap sent as the change from the one the agent holds, merged back whole."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgmesh import keys
from wgmesh.errors import ValidationError
from wgmesh.models import Network, Node, Route
from wgmesh.netmap import RegistrySnapshot, build_netmap
from wgmesh.netmap_delta import change, diff, merge
from wgmesh.values import NodeId

NOW = datetime(2025, 1, 1, tzinfo=UTC)
KEYS = [keys.generate_keypair().public_key for _ in range(8)]
IDS = range(1, 7)
ME = NodeId(1)


def node(node_id: int, **fields: Any) -> Node:
    base: dict[str, Any] = {
        "id": node_id,
        "name": f"gw{node_id}",
        "site": f"gw{node_id}",
        "public_key": KEYS[node_id],
        "overlay_ip": f"100.96.0.{node_id}",
        "created_at": NOW,
    }
    return Node.model_validate({**base, **fields})


def active(node_id: int, prefix: str) -> Route:
    return Route.model_validate(
        {"prefix": prefix, "gateway": f"gw{node_id}", "gateway_id": node_id, "state": "active"}
    )


NODE_FIELDS = st.fixed_dictionaries(
    {
        "p2p": st.sampled_from(["auto", "off"]),
        "endpoints": st.sampled_from([[], ["198.18.1.10:51820"], ["198.18.1.10:51820", "198.18.2.10:51821"]]),
        "eth0_ip": st.sampled_from([None, "198.18.3.10"]),
        "public_ip": st.sampled_from([None, "198.18.4.10"]),
        "mtu": st.sampled_from([None, 1380]),
        "max_mtu": st.sampled_from([None, 1300]),
        "static": st.booleans(),
        "rate": st.sampled_from([None, "20mbit"]),
        "public_key": st.sampled_from(KEYS[6:]) | st.none(),
        "name": st.sampled_from(["renamed"]) | st.none(),
    }
)
PAIRS = st.sampled_from([(a, b) for a in IDS for b in IDS if a < b])


@st.composite
def snapshots(draw: st.DrawFn, version: int) -> RegistrySnapshot:
    present = [ME, *draw(st.sets(st.sampled_from(list(IDS)[1:])))]
    renamed = False
    nodes = []
    for node_id in sorted(present):
        fields = {
            k: v for k, v in draw(NODE_FIELDS).items() if v is not None or k not in ("public_key", "name")
        }
        if fields.get("name") == "renamed":
            if renamed:
                del fields["name"]  # names are unique
            else:
                renamed = True
        nodes.append(node(node_id, **fields))
    routes = [active(n.id, f"10.{n.id}.0.0/24") for n in nodes if draw(st.booleans())]
    pair_p2p = {key: "off" for key in draw(st.sets(PAIRS, max_size=3))}
    pair_rate = {key: "10mbit" for key in draw(st.sets(PAIRS, max_size=3))}
    generation = {key: draw(st.integers(1, 2)) for key in draw(st.sets(PAIRS, max_size=3))}
    return RegistrySnapshot(
        version=version,
        network=Network(p2p=draw(st.sampled_from(["auto", "off"])), mtu=draw(st.sampled_from([1420, 1400]))),
        nodes=nodes,
        routes=routes,
        pair_p2p=pair_p2p,  # type: ignore[arg-type]
        pair_rate=pair_rate,
        psk_generation=generation,
        psk_master=draw(st.sampled_from([b"\x01" * 32, b"\x02" * 32])),
    )


@settings(max_examples=300, deadline=None)
@given(snapshots(version=5), snapshots(version=9))
def test_a_change_merged_into_the_old_netmap_is_the_new_netmap(
    old: RegistrySnapshot, new: RegistrySnapshot
) -> None:
    update = change(old, new, diff(old, new), ME)
    assert merge(build_netmap(old, ME), update) == build_netmap(new, ME)


@settings(max_examples=100, deadline=None)
@given(snapshots(version=5))
def test_a_change_to_the_same_state_carries_no_peer(old: RegistrySnapshot) -> None:
    new = RegistrySnapshot(**{**old.__dict__, "version": 6})
    for key in ("peer_templates", "by_id", "by_name", "own_routes", "ha_groups"):
        new.__dict__.pop(key, None)  # cached views of `old`: built again for `new`
    update = change(old, new, diff(old, new), ME)
    assert update.since == 5 and update.netmap.peers == [] and update.removed == []
    assert merge(build_netmap(old, ME), update) == build_netmap(new, ME)


def plain(version: int, nodes: list[Node], **fields: Any) -> RegistrySnapshot:
    return RegistrySnapshot(
        version=version, network=Network(), nodes=nodes, routes=[], psk_master=b"\x01" * 32, **fields
    )


def test_one_endpoint_moved_sends_that_peer_alone() -> None:
    nodes = [node(i) for i in IDS]
    moved = [*nodes[:3], nodes[3].model_copy(update={"eth0_ip": "198.18.9.9"}), *nodes[4:]]
    old, new = plain(1, nodes), plain(2, moved)
    update = change(old, new, diff(old, new), ME)
    assert update.since == 1
    assert [p.name for p in update.netmap.peers] == ["gw4"]
    assert update.removed == []


def test_a_deleted_node_is_listed_removed_and_an_added_one_sent() -> None:
    old = plain(1, [node(i) for i in (1, 2, 3)])
    new = plain(2, [node(i) for i in (1, 3, 4)])
    update = change(old, new, diff(old, new), ME)
    assert update.removed == [2]
    assert [p.name for p in update.netmap.peers] == ["gw4"]
    assert [p.name for p in merge(build_netmap(old, ME), update).peers] == ["gw3", "gw4"]


def test_a_pair_setting_reaches_both_ends_only() -> None:
    nodes = [node(i) for i in IDS]
    old, new = plain(1, nodes), plain(2, nodes, pair_p2p={(1, 2): "off"})
    changes = diff(old, new)
    assert [p.name for p in change(old, new, changes, ME).netmap.peers] == ["gw2"]
    assert [p.name for p in change(old, new, changes, NodeId(2)).netmap.peers] == ["gw1"]
    assert change(old, new, changes, NodeId(3)).netmap.peers == []


@pytest.mark.parametrize(
    "later",
    [
        {"network": Network(p2p="off")},
        {"psk_master": b"\x09" * 32},
    ],
)
def test_what_every_peer_depends_on_sends_the_netmap_whole(later: dict[str, Any]) -> None:
    nodes = [node(i) for i in IDS]
    old = plain(1, nodes)
    new = RegistrySnapshot(**{**plain(2, nodes).__dict__, **later})
    update = change(old, new, diff(old, new), ME)
    assert update.since is None and len(update.netmap.peers) == len(IDS) - 1


def test_the_viewers_own_p2p_setting_sends_its_netmap_whole() -> None:
    nodes = [node(i) for i in IDS]
    old, new = plain(1, nodes), plain(2, [node(1, p2p="off"), *nodes[1:]])
    changes = diff(old, new)
    assert change(old, new, changes, ME).since is None
    # Everyone else gets node 1 as one changed peer.
    assert [p.name for p in change(old, new, changes, NodeId(2)).netmap.peers] == ["gw1"]


def test_without_the_old_snapshot_the_netmap_is_whole() -> None:
    new = plain(2, [node(i) for i in IDS])
    update = change(None, new, None, ME)
    assert update.since is None and update.netmap == build_netmap(new, ME)
    assert merge(None, update) == build_netmap(new, ME)


def test_a_change_for_another_version_than_the_one_held_is_refused() -> None:
    nodes = [node(i) for i in IDS]
    old, new = plain(1, nodes), plain(2, nodes)
    update = change(old, new, diff(old, new), ME)
    with pytest.raises(ValidationError, match="does not apply"):
        merge(build_netmap(plain(7, nodes), ME), update)
    with pytest.raises(ValidationError, match="does not apply"):
        merge(None, update)
