"""Pure: which member of an HA group this agent sends the group's prefix to, decided from the data plane.

Gateways of one site that advertise the same prefix form an HA group; every netmap lists its members in
order, the primary first (`models.HaGroup`). Each agent decides for itself, on every path tick, from the
health its own probes give each member (agent/health.py) — never from the coordinator, so a failover
works while every coordinator is down and waits for no control-session time-out.

The rule (`choose`), for an agent outside the group:

- at first it sends the prefix to the first member not known to be down (the primary, on a fresh start);
- when the member it sends to is `down`, it moves the prefix to the first member in order that is `up`
  (else the first not yet known), code `holder_down`;
- a member earlier in the order than the one it sends to takes the prefix back only once it has been `up`
  for `preempt_after` seconds without a break (`--ha-preempt-after`, 30 s by default), code `preempt`: a
  primary that comes back and dies again, or flaps, never pulls the prefix away from a working standby.

A member of the group decides the same way whether *it* carries the prefix — what it tells the cloud's
route table through `--on-primary`, so that the VPC's replies come back through it. Itself it counts `up`
while at least one peer answers it (a gateway cut off from everyone claims nothing: code `isolated`) and
only from its own start, so that:

- at its start it waits up to `settle` seconds to learn its group's health (code `settling`); a member
  before it that is up carries the prefix; else, when a member after it is up, that member may have been
  carrying the prefix since this one went away, so it takes the prefix only by the preempt rule (code
  `returning`), as the other agents will give it back; when no other member is up, it claims at once. (On a
  fresh start of a whole site the primary so claims only after `preempt_after`: it cannot tell that start
  from its own return, and until then the cloud's route table keeps what the operator set.)

So after a restart or a cut, a gateway and the agents sending to its group change their minds by the same
clock: the primary's `up` time as its probes show it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from wgmesh.agent.health import DEAD_AFTER, PeerHealth
from wgmesh.models import HaGroup, NetMap
from wgmesh.values import FailoverCode, NodeId, Prefix

PREEMPT_AFTER = 30.0
"""Seconds a member earlier in the order must answer without a break before it takes its prefix back."""
SETTLE = DEAD_AFTER + 1.0
"""Seconds a starting member waits for its group's health: long enough for a silent peer to be `down`."""


@dataclass(frozen=True, slots=True)
class HaConfig:
    preempt_after: float = PREEMPT_AFTER
    settle: float = SETTLE


DEFAULT_HA = HaConfig()


@dataclass(frozen=True, slots=True)
class HaInputs:
    """One group as this agent sees it now: its members in order, and each one's health (the agent's own
    entry, when it is a member, is its own: up while a peer answers it, since it became so)."""

    now: float
    members: tuple[NodeId, ...]
    health: Mapping[NodeId, PeerHealth]
    self_id: NodeId
    started_at: float
    """When this agent started deciding (its first path tick)."""


@dataclass(frozen=True, slots=True)
class HaChoice:
    """Where this agent sends the group's prefix (None: nowhere yet — a member settling, or cut off), why,
    and its last move (`changed_at` on the monotonic clock; None: never moved)."""

    holder: NodeId | None
    code: FailoverCode
    reason: str
    changed_at: float | None = None
    moved_from: NodeId | None = None


def _state(inputs: HaInputs, member: NodeId) -> str:
    found = inputs.health.get(member)
    return found.state if found is not None else "unknown"


def choose(
    previous: HaChoice | None,
    inputs: HaInputs,
    config: HaConfig = DEFAULT_HA,
    names: Mapping[NodeId, str] | None = None,
) -> HaChoice:
    """The member to send the prefix to now (see the module's rule)."""

    def name(member: NodeId | None) -> str:
        return (names or {}).get(member, f"node {member}") if member is not None else "none"

    now, members, me = inputs.now, inputs.members, inputs.self_id
    member_here = me in members
    if member_here and _state(inputs, me) == "down":
        if previous is not None and previous.holder is None and previous.code == "isolated":
            return previous
        return HaChoice(
            None,
            "isolated",
            "no peer answers this gateway's probes: it claims nothing",
            now if previous is not None and previous.holder is not None else None,
            previous.holder if previous is not None else None,
        )
    holder = previous.holder if previous is not None else None
    if holder is None or holder not in members:
        return _first(previous, inputs, config, name)
    if _state(inputs, holder) == "down":
        others = [m for m in members if m != holder]
        candidates = [m for m in others if _state(inputs, m) == "up"] or [
            m for m in others if _state(inputs, m) == "unknown"
        ]
        if not candidates:
            return previous if previous is not None else HaChoice(holder, "holder_down", "")
        return HaChoice(
            candidates[0],
            "holder_down",
            f"{name(holder)} answers no probe: {name(candidates[0])} is the first member that does",
            now,
            holder,
        )
    for member in members[: members.index(holder)]:
        health = inputs.health.get(member)
        if health is not None and health.state == "up" and health.held_for(now) >= config.preempt_after:
            return HaChoice(
                member,
                "preempt",
                f"{name(member)} answered for {config.preempt_after:g} s: it comes before {name(holder)}",
                now,
                holder,
            )
    assert previous is not None
    return previous


def _first(
    previous: HaChoice | None, inputs: HaInputs, config: HaConfig, name: Callable[[NodeId | None], str]
) -> HaChoice:
    """The first decision (or the first after a cut-off): see the module's rule."""
    now, members, me = inputs.now, inputs.members, inputs.self_id
    changed_at = previous.changed_at if previous is not None else None
    moved_from = previous.moved_from if previous is not None else None
    if me not in members:
        target = next((m for m in members if _state(inputs, m) != "down"), members[0])
        if target == members[0]:
            return HaChoice(
                target, "primary", f"{name(target)} is the group's primary", changed_at, moved_from
            )
        return HaChoice(
            target, "holder_down", f"members before {name(target)} answer no probe", changed_at, moved_from
        )
    others = [m for m in members if m != me]
    if any(_state(inputs, m) == "unknown" for m in others) and now - inputs.started_at < config.settle:
        return HaChoice(None, "settling", "learning whether another member carries the prefix")
    up = [m for m in others if _state(inputs, m) == "up"]
    if up and members.index(up[0]) < members.index(me):
        code: FailoverCode = "primary" if up[0] == members[0] else "holder_down"
        return HaChoice(
            up[0], code, f"{name(up[0])} answers and comes before this gateway", changed_at, moved_from
        )
    # A later member up: it may carry the prefix since this gateway went away — unless this gateway has
    # itself been up for the preempt time (the group just formed), when the others already send it here.
    own = inputs.health.get(me)
    if up and (own is None or own.held_for(now) < config.preempt_after):
        return HaChoice(
            up[0],
            "returning",
            f"{name(up[0])} was up when this gateway started: it takes the prefix back only after "
            f"{config.preempt_after:g} s",
            changed_at,
            moved_from,
        )
    if me == members[0]:
        return HaChoice(me, "primary", f"{name(me)} is the group's primary", changed_at, moved_from)
    return HaChoice(me, "holder_down", "no member before this gateway answers", changed_at, moved_from)


def with_holders(netmap: NetMap, holders: Mapping[Prefix, NodeId | None]) -> NetMap:
    """The netmap as this agent applies it: each HA prefix in the allowed IPs of the member it sends the
    prefix to and of no other; none while undecided for a group it belongs to (its own LAN: never into
    the tunnel), the primary while undecided for another (as the netmap has it)."""
    if not netmap.ha_groups:
        return netmap
    moved: dict[NodeId, list[Prefix]] = {}
    removed: dict[NodeId, set[Prefix]] = {}
    for group in netmap.ha_groups:
        for member in group.members:
            removed.setdefault(member, set()).add(group.prefix)
        if netmap.node_id in group.members:
            continue
        target = holders.get(group.prefix) or group.members[0]
        moved.setdefault(target, []).append(group.prefix)
    peers = []
    for peer in netmap.peers:
        gone = removed.get(peer.node_id, set())
        added = moved.get(peer.node_id, [])
        if not gone and not added:
            peers.append(peer)
            continue
        allowed = [p for p in peer.allowed_ips if p not in gone]
        allowed += [p for p in added if p not in allowed]
        peers.append(peer.model_copy(update={"allowed_ips": allowed}))
    return netmap.model_copy(update={"peers": peers})


def own_groups(netmap: NetMap) -> list[HaGroup]:
    """The HA groups this node is a member of."""
    return [g for g in netmap.ha_groups if netmap.node_id in g.members]


def mesh_prefixes(netmap: NetMap, site: str) -> list[Prefix]:
    """What `site`'s VPC must send to its gateway (the `--on-primary` hook's WGMESH_MESH_PREFIXES): the
    overlay and every other site's prefixes, in the netmap's order — never a prefix of `site` (its HA
    groups', this gateway's own routes), which the VPC reaches by itself."""
    own_site = {g.prefix for g in netmap.ha_groups if g.site == site}
    own_site |= {r.prefix for r in netmap.routes} | {r.published for r in netmap.routes}
    out: list[Prefix] = [netmap.overlay_cidr]
    for prefix in [p for peer in netmap.peers for p in peer.allowed_ips] + [
        g.prefix for g in netmap.ha_groups
    ]:
        if prefix not in own_site and not any(_within(prefix, o) for o in out):
            out.append(prefix)
    return out


def _within(prefix: Prefix, other: Prefix) -> bool:
    if isinstance(prefix, IPv4Network) and isinstance(other, IPv4Network):
        return prefix.subnet_of(other)
    if isinstance(prefix, IPv6Network) and isinstance(other, IPv6Network):
        return prefix.subnet_of(other)
    return False


def members_of(groups: Sequence[HaGroup]) -> set[NodeId]:
    """Every member of these groups."""
    return {m for g in groups for m in g.members}


WITNESSES = 3
"""Peers outside its groups an HA member also watches, to know it is not cut off (agent/health.own_health)."""


def watched_peers(netmap: NetMap) -> frozenset[NodeId]:
    """The peers this agent probes every 0.5 s: every HA group's members, and when it is a member itself, a
    few witnesses besides (the lowest node ids among the other peers with an agent)."""
    members = members_of(netmap.ha_groups)
    watched = set(members) - {netmap.node_id}
    if netmap.node_id in members:
        others = sorted(p.node_id for p in netmap.peers if not p.static and p.node_id not in members)
        watched |= set(others[:WITNESSES])
    return frozenset(watched)


def role_after_dissolving(netmap: NetMap, prefix: Prefix) -> str:
    """This gateway's role for a prefix whose HA group is gone: `primary` while it still routes the prefix
    (its route active: the VPC's replies must come to it), else `standby`."""
    # A group's prefix is what the other sites route: the alias, when the site's prefix has one.
    active = any(r.published == prefix and r.state == "active" for r in netmap.routes)
    return "primary" if active else "standby"
