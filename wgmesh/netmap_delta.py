"""Pure: netmaps as changes. What changed between two registry snapshots, each node's netmap as the change
from the one it holds, and that change merged back into a whole netmap on the agent.

The rule the tests hold it to: for any two snapshots `old` and `new` and any node of both,
`merge(build_netmap(old, n), change(old, new, diff(old, new), n)) == build_netmap(new, n)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from wgmesh.errors import ValidationError
from wgmesh.models import NetMap, NetMapChange, Node
from wgmesh.netmap import RegistrySnapshot, build_netmap, netmap_with
from wgmesh.values import NodeId


@dataclass(frozen=True)
class SnapshotDiff:
    """What changed from one snapshot to a later one, for every viewer at once (computed once per pair of
    versions, in O(nodes + pairs), whatever the number of viewers)."""

    since: int
    changed: frozenset[NodeId]
    """Nodes added, or whose peer template or own P2P setting changed: a new peer entry for every viewer."""
    removed: frozenset[NodeId]
    pairs: Mapping[NodeId, frozenset[NodeId]]
    """For a node, the other ends of its pairs whose settings (P2P, rate, PSK generation) changed."""
    whole: bool
    """Something every peer entry depends on changed (the network, the PSK master): every netmap is sent whole."""


def diff(old: RegistrySnapshot, new: RegistrySnapshot) -> SnapshotDiff:
    """The changes from `old` to `new`."""
    old_templates, new_templates = old.peer_templates, new.peer_templates
    changed = frozenset(
        node.id
        for node in new.nodes
        if (before := old.by_id.get(node.id)) is None
        or before.p2p != node.p2p  # pair_p2p reads each end's own setting
        or (
            old_templates[node.id] is not new_templates[node.id]
            and old_templates[node.id] != new_templates[node.id]
        )
    )
    removed = frozenset(node_id for node_id in old.by_id if node_id not in new.by_id)
    pairs: dict[NodeId, set[NodeId]] = {}
    for settings_old, settings_new in (
        (old.pair_p2p, new.pair_p2p),
        (old.pair_rate, new.pair_rate),
        (old.psk_generation, new.psk_generation),
    ):
        if settings_old is settings_new:
            continue  # the registry hands on an unchanged map itself
        for a, b in settings_old.keys() | settings_new.keys():
            if settings_old.get((a, b)) != settings_new.get((a, b)):
                pairs.setdefault(NodeId(a), set()).add(NodeId(b))
                pairs.setdefault(NodeId(b), set()).add(NodeId(a))
    return SnapshotDiff(
        since=old.version,
        changed=changed,
        removed=removed,
        pairs={node_id: frozenset(others) for node_id, others in pairs.items()},
        whole=old.network != new.network or old.psk_master != new.psk_master,
    )


def change(
    old: RegistrySnapshot | None, new: RegistrySnapshot, changes: SnapshotDiff | None, node_id: NodeId
) -> NetMapChange:
    """`node_id`'s netmap at `new` as the change from its netmap at `old` (`changes` = `diff(old, new)`), or
    whole when there is no `old`, or when what all its peers depend on moved (its own P2P setting too)."""
    me = new.node(node_id)
    before = old.by_id.get(node_id) if old is not None else None
    if old is None or changes is None or changes.whole or before is None or before.p2p != me.p2p:
        return NetMapChange(version=new.version, netmap=build_netmap(new, node_id))
    touched = changes.changed | changes.pairs.get(node_id, frozenset())
    # Only the touched peers are looked at (a pass over every node would be most of an answer's cost at
    # thousands of nodes), in netmap order (by name).
    others = sorted(
        (o for i in touched if i != node_id and (o := new.by_id.get(i)) is not None), key=_by_name
    )
    peers = [new.peer(me, other) for other in others]
    return NetMapChange(
        version=new.version,
        since=old.version,
        netmap=netmap_with(new, me, peers),
        removed=sorted(changes.removed - {node_id}),
    )


def _by_name(node: Node) -> str:
    return node.name


def merge(base: NetMap | None, update: NetMapChange) -> NetMap:
    """The whole netmap a change describes, given the netmap it was computed from.

    A change for another version than `base`'s (or for none held) is refused: the agent asks for the
    whole netmap again rather than guess.
    """
    if update.since is None:
        return update.netmap
    if base is None or base.version != update.since or base.node_id != update.netmap.node_id:
        held = "none" if base is None else str(base.version)
        raise ValidationError(
            f"netmap change from version {update.since} does not apply to the one held ({held})",
            code="netmap_change_mismatch",
        )
    gone = set(update.removed)
    replaced = {peer.node_id: peer for peer in update.netmap.peers}
    peers = [replaced.pop(peer.node_id, peer) for peer in base.peers if peer.node_id not in gone]
    peers.extend(replaced.values())
    peers.sort(key=lambda peer: peer.name)
    return update.netmap.model_copy(update={"peers": peers})
