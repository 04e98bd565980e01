"""Bandwidth limits: the HTB tree a netmap asks for, and the diff from what is applied."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netmaps import netmap

from wgmesh import keys
from wgmesh.agent import qos
from wgmesh.agent.qos import DeleteClass, QosSpec, RemoveRoot, ReplaceRoot, SetClass, SetFilters, ShapedPeer
from wgmesh.models import PeerConfig


def peer(node_id: int, rate: str | None = None) -> PeerConfig:
    return PeerConfig(
        node_id=node_id,
        name=f"gw{node_id}",
        public_key=keys.generate_keypair().public_key,
        overlay_ip=f"100.96.0.{node_id}",
        allowed_ips=[f"100.96.0.{node_id}/32", f"10.{node_id}.0.0/24"],
        rate=rate,
    )


def test_no_limits_no_tree() -> None:
    assert qos.desired_qos(netmap(peer(2), peer(3))) is None
    assert qos.plan_qos(None, None, None) == []
    assert qos.plan_qos(None, None, frozenset({1})) == [RemoveRoot()]


def test_node_and_pair_limits() -> None:
    spec = qos.desired_qos(netmap(peer(2, "20mbit"), peer(3), rate="1.5gbit"))
    assert spec == QosSpec(1_500_000_000, (ShapedPeer(0x12, 20_000_000, ("100.96.0.2/32", "10.2.0.0/24")),))
    ops = qos.plan_qos(spec, None, None)
    assert ops == [
        ReplaceRoot(),
        SetClass(qos.TOP_MINOR, 0, 1_500_000_000, 1_500_000_000),
        SetClass(qos.DEFAULT_MINOR, qos.TOP_MINOR, qos.DEFAULT_RATE, 1_500_000_000),
        SetClass(0x12, qos.TOP_MINOR, 20_000_000, 20_000_000),
        SetFilters(0x12, ("100.96.0.2/32", "10.2.0.0/24")),
    ]


def test_pair_limits_alone_leave_the_rest_unlimited() -> None:
    spec = qos.desired_qos(netmap(peer(2, "20mbit")))
    assert spec is not None and spec.node_rate is None and spec.top_rate == qos.UNLIMITED


def test_diff_touches_only_what_changed() -> None:
    before = QosSpec(None, (ShapedPeer(0x12, 20, ("a",)), ShapedPeer(0x13, 5, ("b",))))
    after = QosSpec(None, (ShapedPeer(0x12, 30, ("a",)), ShapedPeer(0x14, 5, ("c",))))
    observed = frozenset({qos.TOP_MINOR, qos.DEFAULT_MINOR, 0x12, 0x13})
    assert qos.plan_qos(after, before, observed) == [
        DeleteClass(0x13),
        SetClass(0x12, qos.TOP_MINOR, 30, 30),
        SetClass(0x14, qos.TOP_MINOR, 5, 5),
        SetFilters(0x14, ("c",)),
    ]


def test_a_mismatching_interface_is_rebuilt() -> None:
    spec = QosSpec(None, (ShapedPeer(0x12, 20, ("a",)),))
    assert qos.plan_qos(spec, spec, None)[0] == ReplaceRoot()  # root gone (restart of wireguard-go)
    assert qos.plan_qos(spec, spec, frozenset({1}))[0] == ReplaceRoot()  # a class missing
    assert qos.plan_qos(spec, None, frozenset({1, 0xFFFF, 0x12}))[0] == ReplaceRoot()  # agent restarted


rates = st.sampled_from([None, "1mbit", "20mbit", "300mbit"])


@given(st.lists(st.tuples(st.integers(2, 40), rates), unique_by=lambda t: t[0], max_size=8), rates, rates)
def test_applying_the_plan_reaches_the_desired_classes(
    peers: list[tuple[int, str | None]], node_before: str | None, node_after: str | None
) -> None:
    half = len(peers) // 2
    before = qos.desired_qos(netmap(*(peer(n, r) for n, r in peers[:half]), rate=node_before))
    after = qos.desired_qos(netmap(*(peer(n, r) for n, r in peers[half:]), rate=node_after))
    classes: set[int] | None = None
    for spec, applied in ((before, None), (after, before)):
        observed = frozenset(classes) if classes is not None else None
        for op in qos.plan_qos(spec, applied, observed):
            match op:
                case ReplaceRoot():
                    classes = set()
                case RemoveRoot():
                    classes = None
                case SetClass(minor=m):
                    assert classes is not None
                    classes.add(m)
                case DeleteClass(minor=m):
                    assert classes is not None
                    classes.discard(m)
        expected = (
            None if spec is None else {qos.TOP_MINOR, qos.DEFAULT_MINOR, *(p.minor for p in spec.peers)}
        )
        assert classes == expected
        assert qos.plan_qos(spec, spec, frozenset(classes) if classes is not None else None) == []


@pytest.mark.parametrize(
    ("prefix", "ethertype", "keys"),
    [
        ("10.2.0.0/24", 0x0800, ["0x0a020000/0xffffff00+16"]),
        ("100.96.0.2/32", 0x0800, ["0x64600002/0xffffffff+16"]),
        ("0.0.0.0/0", 0x0800, ["0x00000000/0x00000000+16"]),
        ("fd00:1::/64", 0x86DD, ["0xfd000001/0xffffffff+24", "0x00000000/0xffffffff+28"]),
        ("2001:db8::/32", 0x86DD, ["0x20010db8/0xffffffff+24"]),
        ("fc00::/7", 0x86DD, ["0xfc000000/0xfe000000+24"]),
    ],
)
def test_u32_keys_match_the_destination(prefix: str, ethertype: int, keys: list[str]) -> None:
    assert qos.u32_keys(prefix) == (ethertype, keys)


def test_ipv6_filters_get_their_own_priority() -> None:
    assert qos.filter_prio(0x12, 0x0800) == 0x12
    assert qos.filter_prio(0x12, 0x86DD) == 0x8012
