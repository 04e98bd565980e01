"""The approval rule of advertised prefixes (wgmesh/route_approval.py), without a coordinator."""

from __future__ import annotations

import ipaddress

import pytest

from wgmesh import route_approval
from wgmesh.route_approval import AdminDecision, Claim, approval, judge_routes
from wgmesh.values import AliasSource, Prefix

OVERLAY = ipaddress.ip_network("100.96.0.0/16")


def p(text: str) -> Prefix:
    return ipaddress.ip_network(text)


def claim(
    prefix: str,
    gateway: str = "gw-a",
    *,
    allows: tuple[str, ...] = (),
    decision: AdminDecision | None = None,
    site: str | None = None,
) -> Claim:
    return Claim(p(prefix), gateway, decision, tuple(p(a) for a in allows), site)


@pytest.mark.parametrize(
    ("prefix", "approvable"),
    [
        ("10.1.0.0/16", True),
        ("172.16.0.0/12", True),
        ("172.32.0.0/16", False),
        ("192.168.7.0/24", True),
        ("100.64.0.0/10", True),
        ("100.128.0.0/16", False),
        ("fd00:1::/48", True),
        ("10.0.0.0/7", False),  # wider than 10/8: half of it is public
        ("203.0.113.10/32", False),
        ("64.0.0.0/3", False),
        ("2000::/3", False),
        ("0.0.0.0/0", False),
    ],
)
def test_only_private_cgnat_and_ula_space_is_auto_approvable(prefix: str, approvable: bool) -> None:
    assert route_approval.auto_approvable(p(prefix)) is approvable


def test_a_rule_approves_only_inside_what_it_allows() -> None:
    assert approval(claim("10.1.2.0/24", allows=("10.1.0.0/16",)), ()) == (
        "approved",
        "inside 10.1.0.0/16, allowed by the node's enrollment token",
        "token",
    )
    assert approval(claim("10.1.0.0/16", allows=("10.1.2.0/24",)), ())[0] == "pending"  # wider than allowed
    assert approval(claim("10.1.2.0/24"), (p("10.0.0.0/8"),))[2] == "network"
    assert approval(claim("fd00:1::/48", allows=("10.0.0.0/8",)), ())[0] == "pending"  # other family
    state, reason, by = approval(claim("10.1.2.0/24"), ())
    assert (state, by) == ("pending", None) and "no rule allows 10.1.2.0/24" in reason


def test_public_space_and_ha_claims_wait_for_an_admin_whatever_the_rules() -> None:
    everything = ("0.0.0.0/0", "::/0")
    state, reason, _ = approval(claim("203.0.113.10/32", allows=everything), [p(e) for e in everything])
    assert state == "pending" and "outside private, CGNAT and ULA space" in reason
    state, reason, _ = approval(claim("10.1.0.0/16", allows=("10.0.0.0/8",)), (), held_by="gw-b")
    assert state == "pending" and "already routed by gw-b" in reason


def test_an_admin_decision_overrides_every_rule() -> None:
    approved = AdminDecision("approved", "alice", "relay address")
    assert approval(claim("203.0.113.10/32", decision=approved), (), held_by="gw-b") == (
        "approved",
        "relay address",
        "alice",
    )
    rejected = AdminDecision("rejected", "bob")
    assert approval(claim("10.1.0.0/16", allows=("10.0.0.0/8",), decision=rejected), ()) == (
        "rejected",
        "rejected by bob",
        "bob",
    )


def test_pending_and_rejected_claims_take_no_part_in_classification() -> None:
    admin = AdminDecision("approved", "alice")
    verdicts = judge_routes(
        OVERLAY,
        [
            claim("10.0.0.0/8", "rogue"),  # pending: must not keep gw-a's route out
            claim("10.1.0.0/16", "gw-a", allows=("10.1.0.0/16",), site="vpc1"),
            claim("10.1.0.0/16", "gw-b", allows=("10.1.0.0/16",), site="vpc1"),  # an HA claim: pending
            claim("10.1.0.0/16", "gw-c", decision=admin, site="vpc1"),  # approved by an admin: standby
            claim("10.1.5.0/24", "gw-d", decision=admin),  # approved, and overlapping: conflict
            claim("10.2.0.0/16", "gw-e", decision=AdminDecision("rejected", "alice", "no")),
        ],
    )
    got = [(v.claim.gateway, v.state, v.decided_by) for v in verdicts]
    assert got == [
        ("rogue", "pending", None),
        ("gw-a", "active", "token"),
        ("gw-b", "pending", None),
        ("gw-c", "standby", "alice"),
        ("gw-d", "conflict", "alice"),
        ("gw-e", "rejected", "alice"),
    ]
    assert verdicts[3].other is not None and verdicts[3].other.gateway == "gw-a"
    assert "gw-a" in verdicts[2].reason
    assert [route_approval.enters_netmap(v.state) for v in verdicts] == [
        False,
        True,
        False,
        True,
        True,
        False,
    ]


def test_a_pending_claim_makes_no_later_one_an_ha_claim() -> None:
    verdicts = judge_routes(
        OVERLAY,
        [claim("10.1.0.0/16", "rogue"), claim("10.1.0.0/16", "gw-a", allows=("10.1.0.0/16",))],
    )
    assert [v.state for v in verdicts] == ["pending", "active"]


def test_a_gateway_deleted_leaves_its_ha_partner_to_the_rules() -> None:
    """Without gw-a's claim, gw-b's is no longer joining anyone: its token decides (documented)."""
    verdicts = judge_routes(OVERLAY, [claim("10.1.0.0/16", "gw-b", allows=("10.1.0.0/16",))])
    assert [v.state for v in verdicts] == ["active"]


# --- aliases (issue 20) ---------------------------------------------------------------------------------


def aliased(
    prefix: str,
    gateway: str,
    alias: str,
    by: AliasSource,
    *,
    allows: tuple[str, ...] = (),
    site: str | None = None,
) -> Claim:
    return Claim(p(prefix), gateway, None, tuple(p(a) for a in allows), site, p(alias), by)


def test_the_same_prefix_from_another_site_is_no_join_but_a_conflict_until_aliased() -> None:
    rules = (p("10.0.0.0/8"),)
    first = claim("10.1.0.0/24", "gw1", site="vpc1")
    same_site = claim("10.1.0.0/24", "gw1b", site="vpc1")
    other_site = claim("10.1.0.0/24", "gw2", site="vpc2")
    got = judge_routes(OVERLAY, [first, same_site, other_site], rules)
    assert [v.state for v in got] == ["active", "pending", "conflict"]
    assert "joining it needs an admin's approval" in got[1].reason
    assert "wgmesh routes alias 10.1.0.0/24 --node gw2" in got[2].reason
    moved = aliased("10.1.0.0/24", "gw2", "10.201.0.0/24", "pool", site="vpc2")
    got = judge_routes(OVERLAY, [first, moved], rules)
    assert [v.state for v in got] == ["active", "active"]


def test_an_alias_the_agent_names_needs_a_rule_of_its_own_one_from_an_admin_or_the_pool_does_not() -> None:
    allows = ("10.1.0.0/16",)
    cases: tuple[tuple[AliasSource, str], ...] = (
        ("agent", "pending"),
        ("admin", "active"),
        ("pool", "active"),
    )
    for by, state in cases:
        got = judge_routes(OVERLAY, [aliased("10.1.0.0/24", "gw2", "10.201.0.0/24", by, allows=allows)])
        assert got[0].state == state, by
    got = judge_routes(OVERLAY, [aliased("10.1.0.0/24", "gw2", "10.201.0.0/24", "agent", allows=allows)])
    assert got[0].reason == "its alias: no rule allows 10.201.0.0/24: needs an admin's approval"
    both = ("10.1.0.0/16", "10.201.0.0/16")
    got = judge_routes(OVERLAY, [aliased("10.1.0.0/24", "gw2", "10.201.0.0/24", "agent", allows=both)])
    assert got[0].state == "active"
    public = judge_routes(OVERLAY, [aliased("10.1.0.0/24", "gw2", "8.8.8.0/24", "agent", allows=allows)])
    assert public[0].state == "pending" and "outside private" in public[0].reason
