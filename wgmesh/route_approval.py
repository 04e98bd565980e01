"""Pure: whether an advertised subnet may be routed (issue 16): its approval, and the verdict that follows.

A node may advertise anything; what the others route is only what was allowed. A prefix is approved by an
admin's decision, else by a rule (the node's enrollment token, `--allow-subnet`; the network's
`auto_approve`), and a rule only covers private (RFC 1918), CGNAT and ULA space and never a prefix another
gateway already holds (joining an HA group): those wait for an admin. Pending and rejected prefixes take
no part in route classification (they cannot keep another gateway's route out) and enter no netmap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from wgmesh import ipam
from wgmesh.values import AliasSource, Decision, Prefix, RouteState

AUTO_APPROVABLE: tuple[Prefix, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("100.64.0.0/10"),  # CGNAT
    ipaddress.ip_network("fc00::/7"),  # ULA
)
"""The only space a rule may approve: anything else (a public address, a default route) could pull
traffic meant for the internet, the coordinator or a relay into one gateway, so an admin decides."""

BY_TOKEN = "token"  # noqa: S105 (a name, not a secret)
BY_NETWORK = "network"
"""What `decided_by` says for a prefix a rule approved: the node's enrollment token, the network's rule."""

Approval = Literal["approved", "pending", "rejected"]


@dataclass(frozen=True, slots=True)
class AdminDecision:
    """An admin's verdict on one advertised prefix, who gave it and why."""

    verdict: Decision
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Claim:
    """One advertised prefix of a gateway, with what may approve it."""

    prefix: Prefix
    gateway: str
    decision: AdminDecision | None = None
    token_allows: tuple[Prefix, ...] = ()
    site: str | None = None
    """The site the gateway serves (`ipam.RouteClaim.site`); None: a site of its own."""
    alias: Prefix | None = None
    """Where the other sites reach `prefix` (`ipam.RouteClaim.alias`); None: at itself."""
    alias_by: AliasSource | None = None

    @property
    def published(self) -> Prefix:
        return self.alias if self.alias is not None else self.prefix

    @property
    def site_name(self) -> str:
        return self.site if self.site is not None else self.gateway


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of a claim: its state, why, who decided, and the claim it collides with."""

    claim: Claim
    state: RouteState
    reason: str = ""
    decided_by: str | None = None
    other: ipam.RouteClaim | None = None


def auto_approvable(prefix: Prefix) -> bool:
    """Whether `prefix` lies inside private, CGNAT or ULA space, where a rule may approve it."""
    return any(_inside(prefix, space) for space in AUTO_APPROVABLE)


def _inside(prefix: Prefix, outer: Prefix) -> bool:
    return prefix.version == outer.version and prefix.subnet_of(outer)  # type: ignore[arg-type]


def _covering(prefix: Prefix, rules: Iterable[Prefix]) -> Prefix | None:
    return next((rule for rule in rules if _inside(prefix, rule)), None)


def approval(
    claim: Claim, network_allows: Sequence[Prefix], held_by: str | None = None
) -> tuple[Approval, str, str | None]:
    """The approval of one claim: (approved/pending/rejected, reason, who decided).

    `held_by` names another gateway that already holds the same approved prefix: joining it is an HA
    claim, which only an admin may approve.
    """
    decision = claim.decision
    if decision is not None:
        if decision.verdict == "rejected":
            return "rejected", decision.reason or f"rejected by {decision.by}", decision.by
        return "approved", decision.reason, decision.by
    prefix = claim.prefix
    if held_by is not None:
        return (
            "pending",
            f"{claim.published} is already routed by {held_by}: joining it needs an admin's approval",
            None,
        )
    found = _by_rule(prefix, claim, network_allows)
    if found[0] != "approved" or claim.alias is None or claim.alias_by != "agent":
        # An alias from an admin or from the network's pool is the admin's own choice; one the agent
        # names is what the other sites will route into it, and a rule must allow it as well.
        return found
    alias = _by_rule(claim.alias, claim, network_allows)
    if alias[0] != "approved":
        return "pending", f"its alias: {alias[1]}", None
    return found


def _by_rule(
    prefix: Prefix, claim: Claim, network_allows: Sequence[Prefix]
) -> tuple[Approval, str, str | None]:
    if not auto_approvable(prefix):
        return "pending", f"{prefix} is outside private, CGNAT and ULA space: needs an admin's approval", None
    if (rule := _covering(prefix, claim.token_allows)) is not None:
        return "approved", f"inside {rule}, allowed by the node's enrollment token", BY_TOKEN
    if (rule := _covering(prefix, network_allows)) is not None:
        return "approved", f"inside {rule}, allowed by the network's auto-approve rule", BY_NETWORK
    return "pending", f"no rule allows {prefix}: needs an admin's approval", None


def judge_routes(
    overlay: Prefix, claims: Sequence[Claim], network_allows: Sequence[Prefix] = ()
) -> list[Verdict]:
    """The verdict of every claim, given oldest first: approval, then route classification.

    Only approved claims are classified (`ipam.classify_routes`) and only they hold a prefix for the HA
    rule, so a pending or rejected claim can neither keep a later one out nor make it an HA claim.
    """
    approvals: list[tuple[Approval, str, str | None]] = []
    holders: dict[Prefix, Claim] = {}
    for claim in claims:
        # Joining a gateway of the same site that holds the published prefix makes an HA member, which
        # may carry the site's traffic: an admin decides. The same prefix from another site is no join:
        # it is judged as any claim, and classification calls it a conflict (it carries nothing) until
        # an alias moves what it publishes.
        holder = holders.get(claim.published)
        joins = (
            holder.gateway
            if holder is not None and holder.gateway != claim.gateway and holder.site_name == claim.site_name
            else None
        )
        found = approval(claim, network_allows, joins)
        if found[0] == "approved":
            holders.setdefault(claim.published, claim)
        approvals.append(found)
    classified = iter(
        ipam.classify_routes(
            overlay,
            [
                ipam.RouteClaim(c.prefix, c.gateway, c.site, c.alias)
                for c, a in zip(claims, approvals, strict=True)
                if a[0] == "approved"
            ],
        )
    )
    out: list[Verdict] = []
    for claim, (state, reason, by) in zip(claims, approvals, strict=True):
        if state != "approved":
            out.append(Verdict(claim, state, reason, by))
            continue
        route = next(classified)
        out.append(Verdict(claim, route.state, route.reason, by, route.other))
    return out


def enters_netmap(state: RouteState) -> bool:
    """Whether a route in `state` appears in a netmap at all (its gateway's own list included)."""
    return state in ("active", "standby", "conflict")
