"""Pure: the registry and the nodes' status reports -> the topology (links, peer views, shadowed routes,
HA groups, warnings), and the rules netmaps use too (effective P2P, HA groups).

This is the one place of these rules: the coordinator gathers rows and calls `build_topology`; the CLI and
the dashboard only render what it returns. Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from wgmesh import versions
from wgmesh.models import (
    HaFailover,
    HaGroup,
    HealthCounts,
    Link,
    LinkState,
    Network,
    Node,
    NodeStatus,
    PeerStatus,
    PeerView,
    Route,
    RouteShadow,
    ShadowedRoute,
    StatusReport,
    Topology,
    TopologyHaGroup,
    TopologyHaMember,
    TopologyNode,
    TopologyRoute,
)
from wgmesh.values import NodeId, P2PPolicy, Prefix

HANDSHAKE_FRESH = timedelta(seconds=180)
"""A link whose newest handshake is older is `down` (WireGuard re-handshakes every two minutes in use)."""

PairKey = tuple[int, int]


def pair_key(a: int, b: int) -> PairKey:
    """The order-free key of a node pair."""
    return (a, b) if a < b else (b, a)


# --- the effective P2P rule -------------------------------------------------------------------------


def node_p2p(network: Network, node: Node) -> P2PPolicy:
    """A node's own effective policy: `off` if the network or the node says so; `auto` otherwise."""
    return "off" if "off" in (network.p2p, node.p2p) else "auto"


def pair_p2p(network: Network, a: Node, b: Node, override: P2PPolicy | None) -> P2PPolicy:
    """A pair's effective policy: `off` if either node's own policy or the pair override says so."""
    if "off" in (node_p2p(network, a), node_p2p(network, b), override):
        return "off"
    return "auto"


# --- what the reports say ----------------------------------------------------------------------------

Reports = Mapping[NodeId, Mapping[str, PeerStatus]]
"""Per reporting node id, its peer entries keyed by the peer's public key."""


def nominal_entry(public_key: str, oldest_handshake: datetime | None) -> PeerStatus:
    """The entry a peer left out as nominal stands for: direct, answering, its handshake no older than the
    oldest of them. Its counters are only in the report's sums: 0 here (docs/api.md)."""
    return PeerStatus.model_construct(
        public_key=public_key,
        last_handshake=oldest_handshake,
        path="direct",
        health="up",
        rx_bytes=0,
        tx_bytes=0,
        endpoint=None,
        relay=None,
        rtt_ms=None,
        reason=None,
    )


def report_entries(node_id: NodeId, report: StatusReport, nodes: Iterable[Node]) -> dict[str, PeerStatus]:
    """A report's peer entries keyed by public key: those it lists, and those it left out as nominal
    (agent/reporting.py, `condense`) among `nodes`."""
    entries = {p.public_key: p for p in report.peers}
    nominal = report.nominal
    if nominal is not None and nominal.count:
        for peer in nodes:
            if peer.id != node_id and peer.public_key not in entries and nominal.covers(peer.id):
                entries[peer.public_key] = nominal_entry(peer.public_key, nominal.oldest_handshake)
    return entries


def peer_reports(
    statuses: Mapping[NodeId, NodeStatus], nodes: Sequence[Node]
) -> dict[NodeId, dict[str, PeerStatus]]:
    """Each reporting node's peer entries, keyed by public key."""
    return {node_id: report_entries(node_id, st.report, nodes) for node_id, st in statuses.items()}


def peer_view(node: Node, peer: Node, reports: Reports) -> PeerView:
    """`peer` as `node` sees it: from `node`'s own report, else from `peer`'s report of `node`."""
    own = reports.get(node.id, {}).get(peer.public_key)
    # A node that does not report (a static peer) is seen through the other end's report of it.
    theirs = None if own is not None else reports.get(peer.id, {}).get(node.public_key)
    return observed_peer(
        peer.name, peer.overlay_ip, eth0_ip=peer.eth0_ip, public_ip=peer.public_ip, own=own, theirs=theirs
    )


def observed_peer(
    name: str,
    overlay_ip: str,
    *,
    eth0_ip: str | None,
    public_ip: str | None,
    own: PeerStatus | None,
    theirs: PeerStatus | None = None,
) -> PeerView:
    """A peer's addresses with what its viewer observed of it (`own`), else what the peer observed of the
    viewer (`theirs`): then the peer's rx is the viewer's tx, and the endpoint the peer used is the
    viewer's own, so it is left out. The agent's local view is the case without `theirs`."""
    seen = own or theirs
    return PeerView(
        name=name,
        overlay_ip=overlay_ip,
        eth0_ip=eth0_ip,
        public_ip=public_ip,
        path=seen.path if seen else None,
        endpoint=own.endpoint if own else None,
        relay=seen.relay if seen else None,
        rtt_ms=seen.rtt_ms if seen else None,
        rx_bytes=own.rx_bytes if own else (theirs.tx_bytes if theirs else None),
        tx_bytes=own.tx_bytes if own else (theirs.rx_bytes if theirs else None),
        last_handshake=seen.last_handshake if seen else None,
        reason=seen.reason if seen else None,
        # Only the viewer's own probes say whether the peer answers; the peer's report of the viewer
        # says nothing of the peer.
        health=own.health if own else None,
    )


def link_state(*, seen: bool, fresh: bool, relay: bool, tcp: bool = False) -> LinkState:
    """A link's state from both ends' reports of it: `seen` if either reported it, `fresh` if the newer
    handshake is within HANDSHAKE_FRESH, `relay` if either end reports the relay path, `tcp` if either
    reports TCP straight to the other (the slower path an end uses is the link's). The one rule of `link`
    and of the summary's counts (wgmesh.topology_summary)."""
    if fresh:
        return "relay" if relay else "tcp-direct" if tcp else "direct"
    return "down" if seen else "unknown"


def link(
    network: Network,
    a: Node,
    b: Node,
    *,
    override: P2PPolicy | None,
    reports: Reports,
    now: datetime,
    as_of: Mapping[NodeId, datetime] | None = None,
) -> Link:
    """The pair a-b from both ends' reports: a fresh handshake gives its path (relay if either end
    relays, else tcp-direct if either end uses it), a stale one `down`, no report at all `unknown`.

    A handshake is fresh when it was under 180 s old at `as_of[reporter]`, the time of the report that
    carried it, for a reporter still alive (`report_times`): an agent with many peers sends its counters
    and handshake times only every few minutes, and says at once when a handshake turns stale
    (agent/reporting.py). Otherwise it is judged at `now`.
    """
    times = as_of or {}
    views = [
        (p, times.get(src.id, now))
        for src, dst in ((a, b), (b, a))
        if (p := reports.get(src.id, {}).get(dst.public_key)) is not None
    ]
    handshake = max((p.last_handshake for p, _ in views if p.last_handshake), default=None)
    fresh = any(p.last_handshake is not None and at - p.last_handshake < HANDSHAKE_FRESH for p, at in views)
    views_only = [p for p, _ in views]
    paths = {p.path for p in views_only if p.path}
    rtts = [p.rtt_ms for p in views_only if p.rtt_ms is not None]
    return Link(
        a=a.name,
        b=b.name,
        p2p=pair_p2p(network, a, b, override),
        path=link_state(seen=bool(views), fresh=fresh, relay="relay" in paths, tcp="tcp-direct" in paths),
        rtt_ms=min(rtts) if rtts else None,
        last_handshake=handshake,
        rx_bytes=sum(p.rx_bytes for p in views_only),
        tx_bytes=sum(p.tx_bytes for p in views_only),
    )


def report_times(nodes: Sequence[Node], statuses: Mapping[NodeId, NodeStatus]) -> dict[NodeId, datetime]:
    """When each online node's last report was made: what its handshake times are judged at (`link`).
    An offline node's are judged at the current time, so its links age out as before."""
    return {node.id: statuses[node.id].reported_at for node in nodes if node.online and node.id in statuses}


# --- routes -------------------------------------------------------------------------------------------


def shadowed_by(route: Route, shadows: Iterable[tuple[str, ShadowedRoute]]) -> list[RouteShadow]:
    """The nodes that do not install `route`, from (node name, its report's shadow) pairs.

    Only an active route is installed anywhere, so only an active one can be shadowed. A shadow names
    the route's gateway when the agent knew it; one without a gateway matches the prefix of any gateway.
    What the agents install is the published prefix (the alias of an aliased route).
    """
    if route.state != "active":
        return []
    return [
        RouteShadow(node=node, interface=shadow.interface, local_prefix=shadow.local_prefix)
        for node, shadow in shadows
        if shadow.prefix == route.published and shadow.gateway in (route.gateway, None)
    ]


def _shadows(nodes: Sequence[Node], statuses: Mapping[NodeId, NodeStatus]) -> list[tuple[str, ShadowedRoute]]:
    """Every reported shadow with the node that reported it, by node name."""
    return [
        (node.name, shadow)
        for node in sorted(nodes, key=lambda n: n.name)
        if (st := statuses.get(node.id)) is not None
        for shadow in st.report.shadowed
    ]


# --- HA groups ------------------------------------------------------------------------------------------


def ha_groups(nodes: Sequence[Node], routes: Sequence[Route]) -> list[HaGroup]:
    """Every HA group of the network, sorted by prefix: an active route with at least one standby of the
    same prefix from a gateway of its site; members are the active gateway, then the standbys. A group's
    prefix is what the other sites route: its alias when the site's prefix has one.

    `routes` are the verdicts in claim order (the registry's classification), which is the standbys'
    order. Only approved claims are active or standby (route_approval), so a group holds only those.
    """
    site_of = {n.id: n.site for n in nodes}
    found: dict[tuple[Prefix, str], list[Route]] = {}
    for route in routes:
        if route.state in ("active", "standby"):
            site = site_of.get(route.gateway_id, route.gateway)
            found.setdefault((route.published, site), []).append(route)
    groups = []
    for (prefix, site), claims in found.items():
        primary = [r.gateway_id for r in claims if r.state == "active"]
        standbys = [r.gateway_id for r in claims if r.state == "standby"]
        if len(primary) == 1 and standbys:
            groups.append(HaGroup(prefix=prefix, site=site, members=[*primary, *standbys]))
    return sorted(groups, key=lambda g: (g.prefix.version, g.prefix))


def ha_member_health(member: Node, statuses: Mapping[NodeId, NodeStatus]) -> HealthCounts:
    """What the other agents' last reports say of `member`'s answers to their probes."""
    counts = {"up": 0, "down": 0, "unknown": 0}
    for node_id, st in statuses.items():
        if node_id == member.id:
            continue
        for peer in st.report.peers:
            if peer.public_key == member.public_key and peer.health is not None:
                counts[peer.health] += 1
        nominal = st.report.nominal
        if nominal is not None and nominal.covers(member.id):
            counts["up"] += 1  # left out as nominal: it answers
    return HealthCounts(**counts)


def last_failover(
    prefix: Prefix, nodes: Sequence[Node], statuses: Mapping[NodeId, NodeStatus]
) -> HaFailover | None:
    """The newest move of `prefix` any agent reported, with the agent that made it."""
    names = {n.id: n.name for n in nodes}
    moves = [
        (ha.changed_at, names[node_id], ha)
        for node_id, st in statuses.items()
        if node_id in names
        for ha in st.report.ha
        if ha.prefix == prefix and ha.changed_at is not None
    ]
    if not moves:
        return None
    at, by, ha = max(moves, key=lambda m: (m[0], m[1]))
    return HaFailover(
        at=at, reported_by=by, code=ha.code, holder=ha.holder, moved_from=ha.moved_from, reason=ha.reason
    )


def ha_group_view(
    group: HaGroup, nodes: Sequence[Node], statuses: Mapping[NodeId, NodeStatus]
) -> TopologyHaGroup:
    """An HA group with its members' health, the agents that send the prefix to each, the last failover."""
    by_id = {n.id: n for n in nodes}
    names = {n.id: n.name for n in nodes}
    holders = {
        (names[node_id], ha.holder)
        for node_id, st in statuses.items()
        if node_id in names
        for ha in st.report.ha
        if ha.prefix == group.prefix and ha.holder is not None
    }
    members = []
    for i, member_id in enumerate(group.members):
        member = by_id[member_id]
        members.append(
            TopologyHaMember(
                node=member.name,
                node_id=member.id,
                role="primary" if i == 0 else "standby",
                online=member.online,
                health=ha_member_health(member, statuses),
                carried_by=sorted(agent for agent, holder in holders if holder == member.name),
            )
        )
    return TopologyHaGroup(
        prefix=group.prefix,
        site=group.site,
        members=members,
        last_failover=last_failover(group.prefix, nodes, statuses),
    )


# --- warnings -----------------------------------------------------------------------------------------


def gateway_offline(node: Node) -> bool:
    """A gateway (a node with subnets) whose agent is not heard from; a static peer never reports."""
    return bool(node.subnets) and not node.online and not node.static


def warnings(
    nodes: Sequence[Node],
    links: Sequence[Link],
    routes: Sequence[Route],
    statuses: Mapping[NodeId, NodeStatus],
) -> list[str]:
    """What an admin should look at: links without a recent handshake, routes that do not take effect,
    gateways offline, agents older than this coordinator supports (`versions.is_older`), and routes a node
    does not install (shadowed, or refused by its route guard)."""
    out = [f"{lk.a} and {lk.b} have no recent handshake" for lk in links if lk.path == "down"]
    for route in routes:
        if route.state == "conflict":
            out.append(f"route {route.prefix}@{route.gateway} is inactive: {route.reason}")
        elif route.state == "rejected":
            out.append(f"route {route.prefix}@{route.gateway} is rejected: {route.reason}")
        elif route.state == "pending":
            out.append(
                f"route {route.prefix}@{route.gateway} is pending approval: {route.reason} "
                f"(wgmesh routes approve {route.prefix} --node {route.gateway})"
            )
    for node in nodes:
        if gateway_offline(node):
            out.append(f"gateway {node.name} is offline")
        st = statuses.get(node.id)
        version = st.report.agent_version if st else None
        if version is not None and versions.is_older(version):
            out.append(versions.outdated_warning(node.name, version))
        for shadow in st.report.shadowed if st else []:
            out.append(
                f"{node.name} does not install {shadow.prefix}: it overlaps a local subnet on {shadow.interface}"
            )
        for refused in st.report.refused if st else []:
            owner = f"@{refused.gateway}" if refused.gateway else ""
            out.append(f"{node.name} refused route {refused.prefix}{owner}: {refused.reason}")
    return out


# --- the whole document ---------------------------------------------------------------------------------


def topology_node(
    network: Network, node: Node, by_name: Sequence[Node], reports: Reports, status: NodeStatus | None
) -> TopologyNode:
    """One node with every other node of `by_name` (sorted by name) as it sees them (`peer_view`): `reports`
    needs the node's own peer entries and, for a peer it does not report on, that peer's entry of it;
    `status` is the node's last report."""
    return TopologyNode(
        **node.model_dump(),
        effective_p2p=node_p2p(network, node),
        interface_mtu=status.report.mtu if status is not None else None,
        coordinator=status.report.coordinator if status is not None else None,
        agent_version=status.report.agent_version if status is not None else None,
        peers=[peer_view(node, other, reports) for other in by_name if other.id != node.id],
    )


def build_topology(
    network: Network,
    *,
    version: int,
    nodes: Sequence[Node],
    routes: Sequence[Route],
    pair_overrides: Mapping[PairKey, P2PPolicy],
    statuses: Mapping[NodeId, NodeStatus],
    now: datetime,
    groups: Sequence[HaGroup] = (),
) -> Topology:
    """The topology document: nodes (given sorted) with their peer views, every pair's link, the routes
    (given sorted) with the nodes shadowing them, the HA groups, and the warnings.

    `statuses` is each reporting node's last report by node id; `pair_overrides` the pairs' P2P overrides;
    `groups` the network's HA groups (`ha_groups`, from the routes in claim order).
    """
    reports = peer_reports(statuses, nodes)
    as_of = report_times(nodes, statuses)
    by_name = sorted(nodes, key=lambda n: n.name)
    links = [
        link(
            network,
            a,
            b,
            override=pair_overrides.get(pair_key(a.id, b.id)),
            reports=reports,
            now=now,
            as_of=as_of,
        )
        for i, a in enumerate(nodes)
        for b in nodes[i + 1 :]
    ]
    shadows = _shadows(nodes, statuses)
    known = {n.id for n in nodes}
    return Topology(
        network=network,
        version=version,
        nodes=[topology_node(network, node, by_name, reports, statuses.get(node.id)) for node in nodes],
        links=links,
        routes=[
            TopologyRoute(**route.model_dump(), shadowed_by=shadowed_by(route, shadows)) for route in routes
        ],
        warnings=warnings(nodes, links, routes, statuses),
        ha_groups=[ha_group_view(g, nodes, statuses) for g in groups if all(m in known for m in g.members)],
    )
