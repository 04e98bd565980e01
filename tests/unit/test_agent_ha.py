"""Which member of an HA group an agent sends the prefix to (agent/ha.py): failover, no flapping, preempt
only after the hold, members settling and returning, and the netmap as the agent applies it."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from netmaps import netmap

from wgmesh.agent.ha import (
    HaChoice,
    HaConfig,
    HaInputs,
    choose,
    mesh_prefixes,
    role_after_dissolving,
    watched_peers,
    with_holders,
)
from wgmesh.agent.health import PeerHealth
from wgmesh.models import HaGroup, PeerConfig
from wgmesh.values import NodeId

GW2, GW2B, GW2C, GW1, GW3 = NodeId(2), NodeId(12), NodeId(22), NodeId(1), NodeId(3)
CONFIG = HaConfig(preempt_after=30.0, settle=3.5)
NAMES = {GW1: "gw1", GW2: "gw2", GW2B: "gw2b", GW2C: "gw2c", GW3: "gw3"}


def up(since: float = 0.0) -> PeerHealth:
    return PeerHealth("up", since)


def down(since: float = 0.0) -> PeerHealth:
    return PeerHealth("down", since)


UNKNOWN = PeerHealth("unknown", 0.0)


def inputs(
    now: float, me: NodeId = GW1, members: tuple[NodeId, ...] = (GW2, GW2B), **health: PeerHealth
) -> HaInputs:
    by_id = {NodeId(next(k for k, v in NAMES.items() if v == n)): h for n, h in health.items()}
    return HaInputs(now=now, members=members, health=by_id, self_id=me, started_at=0.0)


def test_outside_the_group_the_primary_first_even_before_any_probe() -> None:
    choice = choose(None, inputs(0.0, gw2=UNKNOWN, gw2b=UNKNOWN), CONFIG, NAMES)
    assert (choice.holder, choice.code, choice.changed_at) == (GW2, "primary", None)


def test_outside_the_group_a_primary_known_dead_at_start_is_skipped() -> None:
    choice = choose(None, inputs(3.0, gw2=down(), gw2b=up()), CONFIG, NAMES)
    assert (choice.holder, choice.code) == (GW2B, "holder_down")


def test_failover_when_the_holder_is_down_to_the_first_member_up() -> None:
    first = choose(
        None, inputs(0.0, members=(GW2, GW2B, GW2C), gw2=up(), gw2b=down(), gw2c=up()), CONFIG, NAMES
    )
    moved = choose(
        first, inputs(5.0, members=(GW2, GW2B, GW2C), gw2=down(4.0), gw2b=down(), gw2c=up()), CONFIG, NAMES
    )
    assert (moved.holder, moved.code, moved.changed_at, moved.moved_from) == (GW2C, "holder_down", 5.0, GW2)
    assert "gw2 answers no probe" in moved.reason


def test_no_member_answers_keeps_the_holder() -> None:
    first = choose(None, inputs(0.0, gw2=up(), gw2b=up()), CONFIG, NAMES)
    assert choose(first, inputs(9.0, gw2=down(5.0), gw2b=down(5.0)), CONFIG, NAMES) == first


def test_a_primary_back_takes_over_only_after_the_hold_and_flapping_never_moves_it() -> None:
    start = choose(None, inputs(0.0, gw2=up(), gw2b=up()), CONFIG, NAMES)
    failed = choose(start, inputs(3.0, gw2=down(3.0), gw2b=up()), CONFIG, NAMES)
    assert failed.holder == GW2B
    # gw2 flaps: up for 20 s at a time, down again; the standby keeps the prefix throughout.
    choice = failed
    for cycle in range(5):
        t = 10.0 + cycle * 40.0
        choice = choose(choice, inputs(t + 19.0, gw2=up(t), gw2b=up()), CONFIG, NAMES)
        assert choice is failed
        choice = choose(choice, inputs(t + 25.0, gw2=down(t + 22.0), gw2b=up()), CONFIG, NAMES)
        assert choice is failed
    # Stable: after 30 s up, and not before, it takes the prefix back.
    assert choose(choice, inputs(329.9, gw2=up(300.0), gw2b=up()), CONFIG, NAMES) is failed
    back = choose(choice, inputs(330.0, gw2=up(300.0), gw2b=up()), CONFIG, NAMES)
    assert (back.holder, back.code, back.changed_at, back.moved_from) == (GW2, "preempt", 330.0, GW2B)


def test_a_member_settles_then_claims_when_no_other_member_is_up() -> None:
    settling = choose(None, inputs(1.0, me=GW2, gw2=up(), gw2b=UNKNOWN), CONFIG, NAMES)
    assert (settling.holder, settling.code) == (None, "settling")
    claimed = choose(settling, inputs(3.6, me=GW2, gw2=up(), gw2b=UNKNOWN), CONFIG, NAMES)
    assert (claimed.holder, claimed.code) == (GW2, "primary")
    alone = choose(None, inputs(2.6, me=GW2B, gw2=down(2.5), gw2b=up()), CONFIG, NAMES)
    assert (alone.holder, alone.code) == (GW2B, "holder_down")


def test_a_returning_primary_leaves_the_prefix_to_the_standby_up_until_the_hold() -> None:
    returning = choose(None, inputs(1.0, me=GW2, gw2=up(0.0), gw2b=up(0.5)), CONFIG, NAMES)
    assert (returning.holder, returning.code) == (GW2B, "returning")
    assert choose(returning, inputs(29.0, me=GW2, gw2=up(0.0), gw2b=up(0.5)), CONFIG, NAMES) is returning
    claimed = choose(returning, inputs(30.0, me=GW2, gw2=up(0.0), gw2b=up(0.5)), CONFIG, NAMES)
    assert (claimed.holder, claimed.code) == (GW2, "preempt")


def test_a_standby_starting_beside_a_live_primary_leaves_it_the_prefix() -> None:
    choice = choose(None, inputs(1.0, me=GW2B, gw2=up(0.5), gw2b=up(0.0)), CONFIG, NAMES)
    assert (choice.holder, choice.code) == (GW2, "primary")
    # A later member (gw2c) up is what returning means; an earlier one is simply the holder.
    three = (GW2, GW2B, GW2C)
    choice = choose(
        None, inputs(4.0, me=GW2B, members=three, gw2=down(), gw2b=up(), gw2c=up()), CONFIG, NAMES
    )
    assert (choice.holder, choice.code) == (GW2C, "returning")


def test_a_member_cut_off_claims_nothing_then_returns_like_a_restart() -> None:
    mine = choose(None, inputs(4.0, me=GW2, gw2=up(), gw2b=down()), CONFIG, NAMES)
    assert mine.holder == GW2
    cut = choose(mine, inputs(10.0, me=GW2, gw2=down(9.0), gw2b=down()), CONFIG, NAMES)
    assert (cut.holder, cut.code, cut.moved_from) == (None, "isolated", GW2)
    assert choose(cut, inputs(11.0, me=GW2, gw2=down(9.0), gw2b=down()), CONFIG, NAMES) is cut
    back = choose(cut, inputs(20.0, me=GW2, gw2=up(19.0), gw2b=up(15.0)), CONFIG, NAMES)
    assert (back.holder, back.code) == (GW2B, "returning")


def test_a_removed_holder_is_replaced_by_the_first_rule() -> None:
    previous = HaChoice(GW2C, "holder_down", "", 1.0, GW2)
    assert choose(previous, inputs(5.0, gw2=up(), gw2b=up()), CONFIG, NAMES).holder == GW2


def peer(node_id: int, name: str, *allowed: str) -> PeerConfig:
    key = base64.b64encode(bytes([node_id]) * 32).decode()
    return PeerConfig(
        node_id=NodeId(node_id),
        name=name,
        public_key=key,
        overlay_ip=f"100.96.0.{node_id}",
        allowed_ips=[f"100.96.0.{node_id}/32", *allowed],
    )


GROUP = HaGroup(prefix=ipaddress.ip_network("10.2.0.0/24"), site="vpc2", members=[GW2, GW2B])


def test_with_holders_moves_the_prefix_to_the_chosen_member_only() -> None:
    nm = netmap(
        peer(2, "gw2", "10.2.0.0/24"), peer(12, "gw2b"), peer(3, "gw3", "10.3.0.0/24"), ha_groups=[GROUP]
    )
    prefix = GROUP.prefix
    moved = with_holders(nm, {prefix: GW2B})
    allowed = {p.name: [str(a) for a in p.allowed_ips] for p in moved.peers}
    assert allowed == {
        "gw2": ["100.96.0.2/32"],
        "gw2b": ["100.96.0.12/32", "10.2.0.0/24"],
        "gw3": ["100.96.0.3/32", "10.3.0.0/24"],
    }
    assert with_holders(nm, {}).peers == nm.peers  # undecided: the primary, as the netmap has it
    assert nm.peers[0].allowed_ips[-1] == prefix  # the netmap itself is left alone


def test_a_member_routes_its_own_group_prefix_to_nobody() -> None:
    nm = netmap(peer(2, "gw2", "10.2.0.0/24"), node_id=12, name="gw2b", ha_groups=[GROUP])
    assert [str(a) for a in with_holders(nm, {GROUP.prefix: GW2}).peers[0].allowed_ips] == ["100.96.0.2/32"]


def test_mesh_prefixes_are_the_overlay_and_the_other_sites() -> None:
    nm = netmap(
        peer(2, "gw2", "10.2.0.0/24"),
        peer(3, "gw3", "10.3.0.0/24"),
        node_id=12,
        name="gw2b",
        ha_groups=[GROUP],
    )
    assert [str(p) for p in mesh_prefixes(nm, GROUP.site)] == ["100.96.0.0/16", "10.3.0.0/24"]


@pytest.mark.parametrize("code", ["holder_down", "preempt"])
def test_every_move_says_where_from(code: str) -> None:
    start = choose(None, inputs(0.0, gw2=up(), gw2b=up()), CONFIG, NAMES)
    if code == "holder_down":
        moved = choose(start, inputs(3.0, gw2=down(3.0), gw2b=up()), CONFIG, NAMES)
        assert moved.moved_from == GW2
    else:
        failed = choose(start, inputs(3.0, gw2=down(3.0), gw2b=up()), CONFIG, NAMES)
        moved = choose(failed, inputs(40.0, gw2=up(5.0), gw2b=up()), CONFIG, NAMES)
        assert moved.moved_from == GW2B
    assert moved.code == code


def test_a_group_that_forms_between_long_running_gateways_records_no_failover() -> None:
    # gw2 has been up for long when gw2b's claim is approved: gw2 carries the prefix at once, no move.
    choice = choose(None, inputs(500.0, me=GW2, gw2=up(0.0), gw2b=up(100.0)), CONFIG, NAMES)
    assert (choice.holder, choice.code, choice.changed_at, choice.moved_from) == (GW2, "primary", None, None)
    assert choose(choice, inputs(500.25, me=GW2, gw2=up(0.0), gw2b=up(100.0)), CONFIG, NAMES) is choice


def test_mesh_prefixes_leave_out_every_prefix_of_the_same_site() -> None:
    second = HaGroup(prefix=ipaddress.ip_network("10.20.0.0/24"), site="vpc2", members=[GW2, GW2B])
    other = HaGroup(prefix=ipaddress.ip_network("10.3.0.0/24"), site="vpc3", members=[GW3, NodeId(13)])
    own_route = {"prefix": "10.2.9.0/24", "gateway": "gw2b", "gateway_id": 12, "state": "active"}
    nm = netmap(
        peer(2, "gw2", "10.2.0.0/24", "10.20.0.0/24"),
        peer(3, "gw3", "10.3.0.0/24"),
        node_id=12,
        name="gw2b",
        ha_groups=[GROUP, second, other],
        routes=[own_route],
    )
    assert [str(p) for p in mesh_prefixes(nm, "vpc2")] == ["100.96.0.0/16", "10.3.0.0/24"]


def test_members_watch_their_groups_and_a_few_witnesses_others_only_the_members() -> None:
    peers = [peer(n, f"gw{n}") for n in (1, 2, 3, 4, 5, 12)]
    member = netmap(*[p for p in peers if p.node_id != 12], node_id=12, name="gw2b", ha_groups=[GROUP])
    assert watched_peers(member) == {GW2, GW1, GW3, NodeId(4)}
    outsider = netmap(*[p for p in peers if p.node_id != 1], ha_groups=[GROUP])
    assert watched_peers(outsider) == {GW2, GW2B}


def test_a_dissolved_group_leaves_the_route_table_to_what_the_gateway_still_routes() -> None:
    active = {"prefix": "10.2.0.0/24", "gateway": "gw2b", "gateway_id": 12, "state": "active"}
    withdrawn = netmap(node_id=12, name="gw2b")
    assert role_after_dissolving(netmap(node_id=12, name="gw2b", routes=[active]), GROUP.prefix) == "primary"
    assert role_after_dissolving(withdrawn, GROUP.prefix) == "standby"
