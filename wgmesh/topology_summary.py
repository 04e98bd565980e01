"""Pure: the topology of a large network in counts and pages, for the dashboard and `wgmesh status` at
1,000 nodes, where /api/v1/topology's every-pair document (500,000 links) is too big to build or draw.

The status reports are what is large: each lists its node's peers, n² entries in all. Each report is
reduced once to a `ReportDigest` (arrays by peer node id; the coordinator keeps it while the report stands),
and `tally_links` counts every link's state in one pass over the digests' entries, joining the two ends of
a pair in a dict of the pairs someone reported; no `Link` is built. The links of one node are O(n):
`node_links` asks `topology.link` (the one rule) with just the two entries of each pair.
Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any
from urllib.parse import urlencode

from wgmesh import versions
from wgmesh.models import (
    Link,
    LinkCounts,
    LinkState,
    Network,
    Node,
    NodeCounts,
    PeerStatus,
    ProblemGroup,
    Route,
    TopologyGroup,
    TopologyNodeRow,
    TopologyProblem,
    TopologySummary,
    ranges_cover,
)
from wgmesh.topology import (
    HANDSHAKE_FRESH,
    PairKey,
    gateway_offline,
    link,
    link_state,
    nominal_entry,
    pair_key,
)
from wgmesh.values import NodeId, P2PPolicy, PathKind

FULL_VIEW_MAX = 50
"""Up to this many nodes the dashboard and `wgmesh status` draw every node and link, as they always did;
above it they show the summary with its pages (a full mesh of 51 nodes is already 1,275 links)."""

PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 500
PROBLEMS: tuple[TopologyProblem, ...] = ("offline", "links_down", "relayed", "conflicts")
LINK_STATES: tuple[LinkState, ...] = ("direct", "tcp-direct", "relay", "down", "unknown")

_NONE, _DIRECT, _RELAY, _TCP = 0, 1, 2, 3
_PATH_CODE = {None: _NONE, "direct": _DIRECT, "relay": _RELAY, "tcp-direct": _TCP}
_PATH_OF: dict[int, PathKind | None] = {_NONE: None, _DIRECT: "direct", _RELAY: "relay", _TCP: "tcp-direct"}


# --- one report, reduced ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportDigest:
    """One node's last report as parallel arrays sorted by peer node id (peers that are nodes of the
    registry only; NaN where a value was null), and how many routes it shadowed or refused.

    Arrays, not objects: 1,000 reports of 999 peers are a million entries, about 41 bytes each here."""

    peer_ids: array[int]
    handshake: array[float]  # unix seconds
    path: bytes  # _NONE, _DIRECT, _RELAY, _TCP
    rtt_ms: array[float]
    rx_bytes: array[int]
    tx_bytes: array[int]
    shadowed: int = 0
    refused: int = 0
    made_at: float = math.nan
    """When the report was made (unix seconds): its handshakes are judged then while its node is online
    (`topology.link`, `as_of`)."""
    nominal: tuple[tuple[int, int], ...] = ()
    """The node id ranges of the peers left out as nominal (models.NominalPeers): direct, answering."""
    nominal_handshake: float = math.nan
    """The oldest of their handshakes (unix seconds): all of them are judged by it."""
    agent_version: str | None = None
    """The version the node's agent runs (models.StatusReport.agent_version); None: not reported."""

    def cutoff(self, online: bool, now: datetime) -> float:
        """Handshakes after this (unix seconds) are fresh: judged at the report's time while its node is
        online, at `now` once it is not (the one rule of `topology.link`)."""
        at = self.made_at if online and not math.isnan(self.made_at) else now.timestamp()
        return at - HANDSHAKE_FRESH.total_seconds()

    def find(self, peer_id: int) -> int | None:
        """The index of `peer_id`'s entry, or None."""
        i = bisect_left(self.peer_ids, peer_id)
        return i if i < len(self.peer_ids) and self.peer_ids[i] == peer_id else None

    def covers(self, peer_id: int) -> bool:
        """Whether `peer_id` was left out as nominal (never a listed one)."""
        return bool(self.nominal) and ranges_cover(self.nominal, peer_id) and self.find(peer_id) is None

    def bits(self, peer_id: int, cutoff: float) -> int:
        """What this report says of its link to `peer_id`, as `tally_links` counts it (0: nothing)."""
        i = self.find(peer_id)
        if i is not None:
            fresh = self.handshake[i] > cutoff
            return _SEEN | (_FRESH if fresh else 0) | _PATH_BITS[self.path[i]]
        if self.covers(peer_id):
            return self.nominal_bits(cutoff)
        return 0

    def nominal_bits(self, cutoff: float) -> int:
        """The bits of every peer left out as nominal: seen, fresh while their oldest handshake is."""
        return _SEEN | (_FRESH if self.nominal_handshake > cutoff else 0)

    def nominal_spans(self, order: Sequence[int]) -> list[tuple[int, int]]:
        """The peers left out as nominal as spans of positions in `order` (the registry's node ids,
        sorted), first and last inclusive; ids that are no node's fall out, however wide a range."""
        spans = []
        for first, last in self.nominal:
            lo, hi = bisect_left(order, first), bisect_right(order, last) - 1
            if lo <= hi:
                spans.append((lo, hi))
        return spans

    def entry(self, peer_id: int, public_key: str) -> PeerStatus | None:
        """The report's entry for `peer_id`, listed or nominal (topology.nominal_entry), or None."""
        i = self.find(peer_id)
        if i is not None:
            return self.view(i, public_key)
        if self.covers(peer_id):
            ts = self.nominal_handshake
            return nominal_entry(public_key, None if math.isnan(ts) else datetime.fromtimestamp(ts, UTC))
        return None

    def view(self, i: int, public_key: str) -> PeerStatus:
        """Entry `i` as the report said it (of the fields links use)."""
        ts, rtt = self.handshake[i], self.rtt_ms[i]
        return PeerStatus.model_construct(
            public_key=public_key,
            last_handshake=None if math.isnan(ts) else datetime.fromtimestamp(ts, UTC),
            path=_PATH_OF[self.path[i]],
            rtt_ms=None if math.isnan(rtt) else rtt,
            rx_bytes=self.rx_bytes[i],
            tx_bytes=self.tx_bytes[i],
        )


def digest_report(
    report: Mapping[str, Any], node_of_key: Mapping[str, NodeId], made_at: datetime | None = None
) -> ReportDigest:
    """A stored report (StatusReport as JSON, validated when it arrived) reduced to a digest; peers whose
    key is no node's (deleted since) are left out."""
    find = node_of_key.get
    nominal = report.get("nominal")
    rows = [(peer_id, p) for p in report.get("peers", ()) if (peer_id := find(p["public_key"])) is not None]
    rows.sort(key=itemgetter(0))
    stamp = datetime.fromisoformat
    nan = math.nan
    return ReportDigest(
        peer_ids=array("q", [i for i, _ in rows]),
        handshake=array(
            "d", [stamp(h).timestamp() if (h := p.get("last_handshake")) else nan for _, p in rows]
        ),
        path=bytes([_PATH_CODE.get(p.get("path"), _NONE) for _, p in rows]),
        rtt_ms=array("d", [nan if (r := p.get("rtt_ms")) is None else float(r) for _, p in rows]),
        rx_bytes=array("q", [p.get("rx_bytes") or 0 for _, p in rows]),
        tx_bytes=array("q", [p.get("tx_bytes") or 0 for _, p in rows]),
        shadowed=len(report.get("shadowed", ())),
        refused=len(report.get("refused", ())),
        made_at=made_at.timestamp() if made_at is not None else nan,
        nominal=tuple((int(a), int(b)) for a, b in nominal.get("ranges", ())) if nominal else (),
        nominal_handshake=stamp(h).timestamp() if nominal and (h := nominal.get("oldest_handshake")) else nan,
        agent_version=report.get("agent_version"),
    )


# --- every link, counted ----------------------------------------------------------------------------------

_SEEN, _FRESH, _RELAYED, _TCP_DIRECT = 1, 2, 4, 8
_PATH_BITS = {_NONE: 0, _DIRECT: 0, _RELAY: _RELAYED, _TCP: _TCP_DIRECT}


def _state_of(bits: int) -> LinkState:
    return link_state(
        seen=bool(bits), fresh=bool(bits & _FRESH), relay=bool(bits & _RELAYED), tcp=bool(bits & _TCP_DIRECT)
    )


@dataclass
class LinkTally:
    """Links by state in all, and per node (direct, relay, down, tcp-direct; unknown is what is left of
    n - 1)."""

    nodes: int
    total: dict[LinkState, int]
    per_node: dict[NodeId, list[int]] = field(default_factory=dict)

    def of(self, node_id: NodeId) -> LinkCounts:
        direct, relay, down, tcp = self.per_node.get(node_id, (0, 0, 0, 0))
        return LinkCounts(
            direct=direct,
            tcp_direct=tcp,
            relay=relay,
            down=down,
            unknown=self.nodes - 1 - direct - relay - down - tcp,
        )

    def counts(self) -> LinkCounts:
        return LinkCounts(**{state.replace("-", "_"): n for state, n in self.total.items()})


def tally_links(
    node_ids: Sequence[NodeId],
    digests: Mapping[NodeId, ReportDigest],
    now: datetime,
    online: Collection[NodeId] = frozenset(),
) -> LinkTally:
    """Every pair's state, counted: each report's bits for a pair (reported, fresh handshake, relay
    path) are OR-ed with the other end's, which is what `topology.link` decides from (the newer handshake
    is fresh iff either is; relay if either end says relay). Pairs nobody reported are unknown, counted
    by difference.

    Pairs a report lists are joined one by one in a dict. The pairs no report lists, left out as nominal
    by one end or both (models.NominalPeers: direct, so direct or down), are counted as bit sets of the
    nodes' positions, one row per node: its own nominal ranges, OR the nodes whose ranges hold it (a sweep
    over the ranges' ends), less the listed pairs. O(listed entries + n² / 64) in C big-int steps: a
    5,000-node mesh of nominal reports is 25 million pairs no Python loop visits."""
    known = set(node_ids)
    order = sorted(known)
    width = (order[-1] if order else 0) + 1
    cutoffs = {a: d.cutoff(a in online, now) for a, d in digests.items() if a in known}
    # Listed pairs, with both ends' bits (listed or nominal).
    pairs: dict[int, int] = {}
    get = pairs.get
    for a, cutoff in cutoffs.items():
        digest = digests[a]
        for b, ts, path in zip(digest.peer_ids, digest.handshake, digest.path, strict=True):
            if b == a or b not in known:
                continue
            bits = _SEEN | (_FRESH if ts > cutoff else 0) | _PATH_BITS[path]
            key = a * width + b if a < b else b * width + a
            pairs[key] = get(key, 0) | bits
    listed_with: dict[int, list[int]] = {}
    for key in pairs:
        low, high = divmod(key, width)
        listed_with.setdefault(low, []).append(high)
        listed_with.setdefault(high, []).append(low)
        for side, other in ((NodeId(low), high), (NodeId(high), low)):
            end = digests.get(side)
            if end is not None and side in cutoffs and end.covers(other):
                pairs[key] |= end.nominal_bits(cutoffs[side])
    per_node: dict[NodeId, list[int]] = {n: [0, 0, 0, 0] for n in known}
    slot = {"direct": 0, "relay": 1, "down": 2, "tcp-direct": 3}
    by_bits = {bits: _state_of(bits) for bits in range(_SEEN, 16, 2)}
    total: dict[LinkState, int] = dict.fromkeys(LINK_STATES, 0)
    for key, bits in pairs.items():
        state = by_bits[bits]
        total[state] += 1
        low, high = divmod(key, width)
        i = slot[state]
        per_node[NodeId(low)][i] += 1
        per_node[NodeId(high)][i] += 1
    direct, down = _tally_nominal(order, digests, cutoffs, listed_with, per_node)
    total["direct"] += direct
    total["down"] += down
    n = len(known)
    seen = total["direct"] + total["relay"] + total["down"] + total["tcp-direct"]
    total["unknown"] = n * (n - 1) // 2 - seen
    return LinkTally(nodes=n, total=total, per_node=per_node)


def _tally_nominal(
    order: Sequence[NodeId],
    digests: Mapping[NodeId, ReportDigest],
    cutoffs: Mapping[NodeId, float],
    listed_with: Mapping[int, list[int]],
    per_node: dict[NodeId, list[int]],
) -> tuple[int, int]:
    """The pairs no report lists, nominal on one side or both, counted into `per_node` (direct, down);
    returns the pairs direct and down. Bit sets by position in `order` (ids are never reused, so after
    churn they may run far past the number of nodes): each reporter's own ranges as a row, and the
    reporters whose ranges hold the node the sweep is at, less the pairs listed."""
    position = {node_id: i for i, node_id in enumerate(order)}
    everyone = (1 << len(order)) - 1
    listed_at: dict[int, int] = {}
    for node_id, partners in listed_with.items():
        listed_at[position[NodeId(node_id)]] = sum(1 << position[NodeId(b)] for b in partners)
    rows: dict[int, tuple[int, bool]] = {}
    events: dict[int, list[tuple[int, bool, int]]] = {}
    for reporter, cutoff in cutoffs.items():
        digest = digests[reporter]
        if not digest.nominal:
            continue
        fresh = bool(digest.nominal_bits(cutoff) & _FRESH)
        at = position[reporter]
        row = 0
        for lo, hi in digest.nominal_spans(order):
            row |= (1 << (hi + 1)) - (1 << lo)
            events.setdefault(lo, []).append((at, fresh, +1))
            events.setdefault(hi + 1, []).append((at, fresh, -1))
        rows[at] = (row & ~(1 << at), fresh)
    if not rows:
        return 0, 0
    direct_sum = down_sum = 0
    held_fresh = held_stale = 0  # the reporters whose ranges hold the node the sweep is at
    for at, node_id in enumerate(order):
        for b, fresh, step in events.get(at, ()):
            bit = 1 << b
            if fresh:
                held_fresh = held_fresh | bit if step > 0 else held_fresh & ~bit
            else:
                held_stale = held_stale | bit if step > 0 else held_stale & ~bit
        own, own_fresh = rows.get(at, (0, False))
        outside = everyone & ~((1 << at) | listed_at.get(at, 0))
        fresh_set = ((own if own_fresh else 0) | held_fresh) & outside
        stale_set = ((0 if own_fresh else own) | held_stale) & outside & ~fresh_set
        direct, down = fresh_set.bit_count(), stale_set.bit_count()
        counts = per_node[node_id]
        counts[0] += direct
        counts[2] += down
        direct_sum += direct
        down_sum += down
    return direct_sum // 2, down_sum // 2


# --- problems, groups, the summary ---------------------------------------------------------------------


def conflict_gateways(routes: Iterable[Route]) -> set[NodeId]:
    """The gateways of conflicting routes."""
    return {r.gateway_id for r in routes if r.state == "conflict"}


def node_problems(node: Node, links: LinkCounts, conflicts: set[NodeId]) -> list[TopologyProblem]:
    """What the summary lists a node for: offline (a node with an agent not heard from; a static peer
    never reports), a link down, a relayed link, a conflicting route of its own."""
    found: list[TopologyProblem] = []
    if not node.online and not node.static:
        found.append("offline")
    if links.down:
        found.append("links_down")
    if links.relay:
        found.append("relayed")
    if node.id in conflicts:
        found.append("conflicts")
    return found


def node_rows(
    nodes: Sequence[Node],
    tally: LinkTally,
    routes: Sequence[Route],
    digests: Mapping[NodeId, ReportDigest] | None = None,
) -> list[TopologyNodeRow]:
    """Every node as a page row, in the given order; its agent's version from its report's digest."""
    conflicts = conflict_gateways(routes)
    reported = digests or {}
    rows = []
    for node in nodes:
        counts = tally.of(node.id)
        digest = reported.get(node.id)
        rows.append(
            TopologyNodeRow(
                id=node.id,
                name=node.name,
                site=node.site,
                tags=node.tags,
                overlay_ip=node.overlay_ip,
                subnets=node.subnets,
                online=node.online,
                static=node.static,
                last_seen=node.last_seen,
                links=counts,
                problems=node_problems(node, counts, conflicts),
                agent_version=digest.agent_version if digest is not None else None,
            )
        )
    return rows


def tag_key(tag: str) -> str:
    """A tag's key: `cloud` of `cloud:aws`; `tag` for a tag without one."""
    key, sep, _ = tag.partition(":")
    return key if sep else "tag"


def _group(kind: str, key: str, value: str, rows: Sequence[TopologyNodeRow]) -> TopologyGroup:
    online = sum(1 for r in rows if r.online)
    return TopologyGroup(
        kind="tag" if kind == "tag" else "site",
        key=key,
        value=value,
        nodes=NodeCounts(total=len(rows), online=online, offline=len(rows) - online),
        problems={p: sum(1 for r in rows if p in r.problems) for p in PROBLEMS},
        query=urlencode({kind: value}),
    )


def summarize(
    network: Network,
    *,
    version: int,
    rows: Sequence[TopologyNodeRow],
    nodes: Sequence[Node],
    routes: Sequence[Route],
    ha_groups: int,
    digests: Mapping[NodeId, ReportDigest],
    tally: LinkTally,
) -> TopologySummary:
    """The topology in counts: nodes, links and routes by state, warnings by kind (those of
    `topology.warnings`), the problem groups, and the groups by tag value and by site."""
    links = tally.counts()
    online = sum(1 for r in rows if r.online)
    route_states = {
        s: sum(1 for r in routes if r.state == s)
        for s in ("active", "standby", "conflict", "pending", "rejected")
    }
    known = {n.id for n in nodes}
    reporting = [d for node_id, d in digests.items() if node_id in known]
    warnings = {
        "link_down": links.down,
        "route_conflict": route_states["conflict"],
        "route_rejected": route_states["rejected"],
        "route_pending": route_states["pending"],
        "gateway_offline": sum(1 for n in nodes if gateway_offline(n)),
        "route_shadowed": sum(d.shadowed for d in reporting),
        "route_refused": sum(d.refused for d in reporting),
        "agent_outdated": sum(1 for d in reporting if versions.is_older(d.agent_version)),
    }
    counts = {
        "offline": sum(1 for r in rows if "offline" in r.problems),
        "links_down": links.down,
        "relayed": links.relay,
        "conflicts": route_states["conflict"],
    }
    problems = [
        ProblemGroup(
            problem=p,
            count=counts[p],
            nodes=sum(1 for r in rows if p in r.problems),
            query=urlencode({"problem": p}),
        )
        for p in PROBLEMS
    ]
    by_tag: dict[str, list[TopologyNodeRow]] = {}
    by_site: dict[str, list[TopologyNodeRow]] = {}
    for r in rows:
        for tag in r.tags:
            by_tag.setdefault(tag, []).append(r)
        by_site.setdefault(r.site, []).append(r)
    return TopologySummary(
        network=network,
        version=version,
        view="full" if len(rows) <= FULL_VIEW_MAX else "summary",
        nodes=NodeCounts(total=len(rows), online=online, offline=len(rows) - online),
        links=links,
        routes=route_states,
        ha_groups=ha_groups,
        warnings=warnings,
        problems=problems,
        tags=[_group("tag", tag_key(t), t, by_tag[t]) for t in sorted(by_tag, key=lambda t: (tag_key(t), t))],
        sites=[_group("site", "site", s, by_site[s]) for s in sorted(by_site) if len(by_site[s]) > 1],
    )


# --- pages ----------------------------------------------------------------------------------------------


def filter_rows(
    rows: Sequence[TopologyNodeRow],
    *,
    tag: str | None = None,
    site: str | None = None,
    problem: TopologyProblem | None = None,
    name: str | None = None,
) -> list[TopologyNodeRow]:
    """The rows with that tag, of that site, with that problem, whose name holds `name` (all given)."""
    return [
        r
        for r in rows
        if (tag is None or tag in r.tags)
        and (site is None or r.site == site)
        and (problem is None or problem in r.problems)
        and (name is None or name in r.name)
    ]


def link_states_of(
    node: Node, nodes: Sequence[Node], digests: Mapping[NodeId, ReportDigest], now: datetime
) -> list[tuple[Node, LinkState]]:
    """Every other node, sorted by name, with the state of its link to `node`: O(n log n), from the two
    entries of each pair as `tally_links` reads them (the same bits, the same rule), no `Link` built."""
    own = digests.get(node.id)
    out = []
    for other in sorted(nodes, key=lambda n: n.name):
        if other.id == node.id:
            continue
        bits = 0
        for digest, peer, reporter in ((own, other.id, node), (digests.get(other.id), node.id, other)):
            if digest is not None:
                bits |= digest.bits(peer, digest.cutoff(reporter.online, now))
        out.append((other, _state_of(bits)))
    return out


def node_links(
    network: Network,
    node: Node,
    others: Sequence[Node],
    *,
    overrides: Mapping[PairKey, P2PPolicy],
    digests: Mapping[NodeId, ReportDigest],
    now: datetime,
) -> list[Link]:
    """The links of `node` to `others` (`a` is the node), in their order: each from the two entries of its
    pair, through `topology.link`. A page builds only its own (`link_states_of` filters and orders)."""
    own = digests.get(node.id)
    out = []
    for other in others:
        reports: dict[NodeId, dict[str, PeerStatus]] = {}
        if own is not None and (mine := own.entry(other.id, other.public_key)) is not None:
            reports[node.id] = {other.public_key: mine}
        theirs = digests.get(other.id)
        if theirs is not None and (seen := theirs.entry(node.id, node.public_key)) is not None:
            reports[other.id] = {node.public_key: seen}
        override = overrides.get(pair_key(node.id, other.id))
        as_of = {
            reporter.id: datetime.fromtimestamp(digest.made_at, UTC)
            for reporter, digest in ((node, own), (other, theirs))
            if digest is not None and reporter.online and not math.isnan(digest.made_at)
        }
        out.append(link(network, node, other, override=override, reports=reports, now=now, as_of=as_of))
    return out
