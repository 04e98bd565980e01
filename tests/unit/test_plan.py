"""The planner: desired device and routes from a netmap, and the operations that reach them."""

from __future__ import annotations

import base64
from dataclasses import replace
from ipaddress import ip_network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netmaps import netmap

from wgmesh import keys
from wgmesh.agent import plan
from wgmesh.agent.plan import (
    AddPeer,
    AddRoute,
    RemovePeer,
    RemoveRoute,
    ReplaceAllowedIps,
    SetEndpoint,
    SetKeepalive,
    SetListenPort,
    SetPrivateKey,
    SetPsk,
    applied_endpoints_after,
    apply_ops,
    plan_device,
    plan_routes,
)
from wgmesh.agent.wgstate import KEEPALIVE, DeviceSpec, PeerSpec, PrivateKey
from wgmesh.models import PeerConfig, ShadowedRoute
from wgmesh.values import Endpoint

ep = Endpoint.parse

EMPTY = DeviceSpec(None, {})


def key() -> str:
    return keys.generate_keypair().public_key


def peer_config(
    name: str, ip: str, *subnets: str, endpoints: list[str] | None = None, **kw: Any
) -> PeerConfig:
    return PeerConfig(
        node_id=int(ip.rsplit(".", 1)[1]),
        name=name,
        public_key=str(kw.pop("public_key", key())),
        overlay_ip=ip,
        allowed_ips=[f"{ip}/32", *subnets],
        endpoints=endpoints if endpoints is not None else [f"198.18.0.{ip.rsplit('.', 1)[1]}:51820"],
        **kw,
    )


# --- desired_device -------------------------------------------------------------------------------


def test_desired_device_takes_first_endpoint_keepalive_psk_and_sorted_allowed_ips() -> None:
    psk = keys.generate_psk()
    gw2 = peer_config(
        "gw2", "100.96.0.2", "10.2.0.0/24", endpoints=["198.18.0.12:51820", "1.2.3.4:1"], psk=psk
    )
    device = plan.desired_device(netmap(gw2))
    spec = device.peers[gw2.public_key]
    assert spec.endpoint == ep("198.18.0.12:51820")
    assert spec.keepalive == KEEPALIVE == 25
    assert spec.psk == psk
    assert spec.allowed_ips == ("10.2.0.0/24", "100.96.0.2/32")
    assert device.listen_port == 51820


def test_endpoint_overrides_by_mapping_and_by_function() -> None:
    gw2 = peer_config("gw2", "100.96.0.2")
    gw3 = peer_config("gw3", "100.96.0.3")
    by_map = plan.desired_device(netmap(gw2, gw3), {gw2.public_key: ep("127.0.0.1:40002")})
    assert by_map.peers[gw2.public_key].endpoint == ep("127.0.0.1:40002")
    assert by_map.peers[gw3.public_key].endpoint == ep("198.18.0.3:51820")
    by_fn = plan.desired_device(netmap(gw2, gw3), lambda p: ep("[::1]:9") if p.name == "gw3" else None)
    assert by_fn.peers[gw2.public_key].endpoint == ep("198.18.0.2:51820")
    assert by_fn.peers[gw3.public_key].endpoint == ep("[::1]:9")


def test_peer_without_endpoint_has_none_and_listen_port_can_be_forced() -> None:
    gw2 = peer_config("gw2", "100.96.0.2", endpoints=[])
    device = plan.desired_device(netmap(gw2), listen_port=40000)
    assert device.peers[gw2.public_key].endpoint is None
    assert device.listen_port == 40000


def test_own_key_is_never_a_peer() -> None:
    me = keys.generate_keypair()
    gw2 = peer_config("gw2", "100.96.0.2", public_key=me.public_key)
    device = plan.desired_device(netmap(gw2), private_key=PrivateKey(me.private_key))
    assert device.peers == {}


def test_allowed_ip_claimed_twice_goes_to_the_first_peer_only() -> None:
    gw2 = peer_config("gw2", "100.96.0.2", "10.9.0.0/24")
    gw3 = peer_config("gw3", "100.96.0.3", "10.9.0.0/24")
    device = plan.desired_device(netmap(gw2, gw3))
    assert "10.9.0.0/24" in device.peers[gw2.public_key].allowed_ips
    assert "10.9.0.0/24" not in device.peers[gw3.public_key].allowed_ips
    assert plan.claimed_twice(netmap(gw2, gw3)) == [("10.9.0.0/24", "gw2", "gw3")]
    # and it converges instead of moving the prefix back and forth
    after = apply_ops(EMPTY, plan_device(device, EMPTY))
    assert plan_device(device, after, applied_endpoints_after(device)) == []


def test_desired_routes_name_the_owner() -> None:
    gw2 = peer_config("gw2", "100.96.0.2", "10.2.0.0/24")
    device = plan.desired_device(netmap(gw2))
    assert plan.desired_routes(netmap(gw2), device) == {"10.2.0.0/24": "gw2", "100.96.0.2/32": "gw2"}


def test_secrets_stay_out_of_reprs() -> None:
    pair = keys.generate_keypair()
    psk = keys.generate_psk()
    private = PrivateKey(pair.private_key)
    texts = [
        repr(private),
        str(private),
        repr(PeerSpec(pair.public_key, ("10.0.0.0/8",), psk=psk)),
        repr(SetPsk(pair.public_key, psk)),
        repr(SetPrivateKey(private)),
        repr(DeviceSpec(1, {}, private)),
    ]
    for text in texts:
        assert pair.private_key not in text
        assert psk not in text
    assert pair.public_key[:8] in repr(private)


# --- plan_device: examples ------------------------------------------------------------------------


def test_same_input_twice_gives_an_empty_plan() -> None:
    gw2 = peer_config("gw2", "100.96.0.2", "10.2.0.0/24", psk=keys.generate_psk())
    device = plan.desired_device(netmap(gw2))
    ops = plan_device(device, EMPTY)
    assert [type(op) for op in ops] == [SetListenPort, AddPeer]
    after = apply_ops(EMPTY, ops)
    assert plan_device(device, after, applied_endpoints_after(device)) == []
    assert plan_device(device, after) == []


def test_endpoint_change_is_one_operation_without_allowed_ips() -> None:
    gw2 = peer_config("gw2", "100.96.0.2", "10.2.0.0/24")
    before = plan.desired_device(netmap(gw2))
    device = apply_ops(EMPTY, plan_device(before, EMPTY))
    moved = plan.desired_device(netmap(gw2.model_copy(update={"endpoints": [ep("198.18.0.99:51820")]})))
    ops = plan_device(moved, device, applied_endpoints_after(before))
    assert ops == [SetEndpoint(gw2.public_key, ep("198.18.0.99:51820"))]
    assert apply_ops(device, ops).peers[gw2.public_key].allowed_ips == ("10.2.0.0/24", "100.96.0.2/32")


def test_roamed_endpoint_is_left_alone_but_a_restarted_agent_lines_up_once() -> None:
    gw2 = peer_config("gw2", "100.96.0.2")
    desired = plan.desired_device(netmap(gw2))
    device = apply_ops(EMPTY, plan_device(desired, EMPTY))
    roamed = apply_ops(device, [SetEndpoint(gw2.public_key, ep("198.18.0.200:4444"))])
    assert plan_device(desired, roamed, applied_endpoints_after(desired)) == []
    # Nothing recorded (the agent restarted and adopted the interface): compare with the interface.
    assert plan_device(desired, roamed, {}) == [SetEndpoint(gw2.public_key, ep("198.18.0.2:51820"))]


def test_allowed_ips_psk_keepalive_changes_touch_only_that_peer() -> None:
    gw2 = peer_config("gw2", "100.96.0.2", "10.2.0.0/24")
    gw3 = peer_config("gw3", "100.96.0.3")
    desired = plan.desired_device(netmap(gw2, gw3))
    device = apply_ops(EMPTY, plan_device(desired, EMPTY))
    psk = keys.generate_psk()
    changed = netmap(
        gw2.model_copy(update={"allowed_ips": ["100.96.0.2/32", "10.2.1.0/24"], "psk": psk}), gw3
    )
    ops = plan_device(plan.desired_device(changed), device, applied_endpoints_after(desired))
    assert ops == [
        ReplaceAllowedIps(gw2.public_key, ("10.2.1.0/24", "100.96.0.2/32")),
        SetPsk(gw2.public_key, psk),
    ]
    off = replace(
        device, peers={**device.peers, gw3.public_key: replace(device.peers[gw3.public_key], keepalive=None)}
    )
    assert plan_device(desired, off, applied_endpoints_after(desired)) == [
        SetKeepalive(gw3.public_key, KEEPALIVE)
    ]


def test_removing_a_peer_removes_only_it() -> None:
    gw2 = peer_config("gw2", "100.96.0.2", "10.2.0.0/24")
    gw3 = peer_config("gw3", "100.96.0.3", "10.3.0.0/24")
    desired = plan.desired_device(netmap(gw2, gw3))
    device = apply_ops(EMPTY, plan_device(desired, EMPTY))
    ops = plan_device(plan.desired_device(netmap(gw2)), device, applied_endpoints_after(desired))
    assert ops == [RemovePeer(gw3.public_key)]
    assert apply_ops(device, ops).peers == {gw2.public_key: device.peers[gw2.public_key]}


def test_private_key_drift_is_corrected() -> None:
    mine, other = keys.generate_keypair(), keys.generate_keypair()
    desired = DeviceSpec(51820, {}, PrivateKey(mine.private_key))
    observed = DeviceSpec(51820, {}, PrivateKey(other.private_key))
    assert plan_device(desired, observed) == [SetPrivateKey(PrivateKey(mine.private_key))]
    assert plan_device(desired, replace(observed, private_key=PrivateKey(mine.private_key))) == []


def test_apply_ops_moves_an_allowed_ip_like_wireguard() -> None:
    a, b = key(), key()
    device = DeviceSpec.of(1, [PeerSpec(a, ("10.0.0.0/24", "10.1.0.0/24")), PeerSpec(b, ())])
    moved = apply_ops(device, [ReplaceAllowedIps(b, ("10.1.0.0/24",))])
    assert moved.peers[a].allowed_ips == ("10.0.0.0/24",)
    assert moved.peers[b].allowed_ips == ("10.1.0.0/24",)
    # updates to a peer that is not there create nothing (update_only)
    ghost = key()
    assert ghost not in apply_ops(device, [SetEndpoint(ghost, "198.18.0.9:1")]).peers


def test_peer_spec_normalizes_allowed_ips() -> None:
    spec = PeerSpec(key(), ("10.2.0.5/24", "100.96.0.2/32", "10.2.0.0/24", "fd00::/8", "10.1.0.0/16"))
    assert spec.allowed_ips == ("10.1.0.0/16", "10.2.0.0/24", "100.96.0.2/32", "fd00::/8")
    assert PeerSpec(key(), keepalive=0).keepalive is None


# --- plan_device: properties ----------------------------------------------------------------------

KEYS = st.binary(min_size=32, max_size=32).map(lambda raw: base64.b64encode(raw).decode())
PREFIXES = st.sampled_from(
    [f"10.{i}.0.0/24" for i in range(8)] + [f"100.96.0.{i}/32" for i in range(2, 10)] + ["fd00:1::/64"]
)
ENDPOINTS = st.sampled_from([ep(f"198.18.0.{i}:51820") for i in range(10, 16)] + [ep("[fd00::1]:51820")])
PSKS = st.none() | st.sampled_from([keys.generate_psk() for _ in range(3)])


@st.composite
def devices(draw: st.DrawFn, pool: list[str] | None = None) -> DeviceSpec:
    """A device whose peers hold disjoint allowed IPs, as a real one does."""
    chosen = (
        draw(st.lists(st.sampled_from(pool), unique=True, max_size=len(pool)))
        if pool
        else draw(st.lists(KEYS, unique=True, max_size=6))
    )
    taken: set[str] = set()
    peers = []
    for public_key in chosen:
        ips = [ip for ip in draw(st.lists(PREFIXES, max_size=4)) if ip not in taken]
        taken.update(ips)
        peers.append(
            PeerSpec(
                public_key=public_key,
                allowed_ips=tuple(ips),
                endpoint=draw(st.none() | ENDPOINTS),
                psk=draw(PSKS),
                keepalive=draw(st.sampled_from([None, 25, 10])),
            )
        )
    port = draw(st.sampled_from([51820, 51821]))
    return DeviceSpec.of(port, peers)


POOL = [base64.b64encode(bytes([i]) * 32).decode() for i in range(1, 9)]


@given(
    desired=devices(POOL),
    observed=devices(POOL),
    recorded=st.dictionaries(st.sampled_from(POOL), st.none() | ENDPOINTS),
)
@settings(max_examples=300)
def test_a_plan_applied_leaves_nothing_to_do(
    desired: DeviceSpec, observed: DeviceSpec, recorded: dict[str, str | None]
) -> None:
    ops = plan_device(desired, observed, recorded)
    after = apply_ops(observed, ops)
    assert plan_device(desired, after, applied_endpoints_after(desired)) == []
    assert set(after.peers) == set(desired.peers)
    for public_key, want in desired.peers.items():
        have = after.peers[public_key]
        assert (have.allowed_ips, have.psk, have.keepalive) == (want.allowed_ips, want.psk, want.keepalive)


@given(desired=devices(POOL), observed=devices(POOL))
def test_peers_that_stay_are_never_removed_or_re_added(desired: DeviceSpec, observed: DeviceSpec) -> None:
    ops = plan_device(desired, observed)
    staying = desired.peers.keys() & observed.peers.keys()
    assert not [op for op in ops if isinstance(op, RemovePeer) and op.public_key in staying]
    assert not [op for op in ops if isinstance(op, AddPeer) and op.peer.public_key in staying]


@given(desired=devices(POOL), data=st.data())
def test_endpoint_change_keeps_allowed_ips(desired: DeviceSpec, data: st.DataObject) -> None:
    device = apply_ops(EMPTY, plan_device(desired, EMPTY))
    if not desired.peers:
        return
    public_key = data.draw(st.sampled_from(sorted(desired.peers)))
    new_endpoint = data.draw(ENDPOINTS)
    moved = replace(
        desired,
        peers={**desired.peers, public_key: replace(desired.peers[public_key], endpoint=new_endpoint)},
    )
    ops = plan_device(moved, device, applied_endpoints_after(desired))
    assert all(isinstance(op, SetEndpoint) for op in ops)
    assert len(ops) == (new_endpoint != desired.peers[public_key].endpoint)
    after = apply_ops(device, ops)
    assert {k: p.allowed_ips for k, p in after.peers.items()} == {
        k: p.allowed_ips for k, p in device.peers.items()
    }
    assert after.peers[public_key].endpoint == new_endpoint


@given(desired=devices(POOL), data=st.data())
def test_roaming_is_not_fought(desired: DeviceSpec, data: st.DataObject) -> None:
    device = apply_ops(EMPTY, plan_device(desired, EMPTY))
    recorded = applied_endpoints_after(desired)
    roams = data.draw(st.dictionaries(st.sampled_from(sorted(desired.peers) or ["x"]), ENDPOINTS))
    roamed = apply_ops(device, [SetEndpoint(k, e) for k, e in roams.items()])
    assert plan_device(desired, roamed, recorded) == []


# --- plan_routes ----------------------------------------------------------------------------------


def test_routes_added_then_nothing_to_do() -> None:
    desired = {"10.2.0.0/24": "gw2", "100.96.0.2/32": "gw2"}
    ops, shadowed = plan_routes(desired, [], [("198.18.0.0/24", "eth0")])
    assert ops == [AddRoute("10.2.0.0/24"), AddRoute("100.96.0.2/32")]
    assert shadowed == []
    assert plan_routes(desired, ["10.2.0.0/24", "100.96.0.2/32"], [("198.18.0.0/24", "eth0")]) == ([], [])


def test_routes_no_longer_wanted_are_removed() -> None:
    ops, _ = plan_routes({"10.2.0.0/24": "gw2"}, ["10.2.0.0/24", "10.3.0.0/24", "100.96.0.3/32"], [])
    assert ops == [RemoveRoute("10.3.0.0/24"), RemoveRoute("100.96.0.3/32")]


@pytest.mark.parametrize(
    ("remote", "local"),
    [("10.50.0.0/24", "10.50.0.0/24"), ("10.50.0.0/16", "10.50.3.0/24"), ("10.50.3.0/24", "10.50.0.0/16")],
)
def test_remote_route_overlapping_a_local_subnet_is_shadowed(remote: str, local: str) -> None:
    ops, shadowed = plan_routes({remote: "gw3", "100.96.0.3/32": "gw3"}, [], [(local, "lan50")])
    assert ops == [AddRoute("100.96.0.3/32")]
    assert shadowed == [ShadowedRoute(prefix=remote, gateway="gw3", interface="lan50", local_prefix=local)]


def test_shadowed_route_already_installed_is_withdrawn_and_families_do_not_clash() -> None:
    ops, shadowed = plan_routes(
        {"10.50.0.0/24": None, "fd00:50::/64": None},
        ["10.50.0.0/24"],
        [("10.50.0.0/24", "lan"), ("fd00:51::/64", "lan")],
    )
    assert ops == [RemoveRoute("10.50.0.0/24"), AddRoute("fd00:50::/64")]
    assert [str(s.prefix) for s in shadowed] == ["10.50.0.0/24"]


def test_shadow_report_names_the_closest_local_subnet() -> None:
    _, shadowed = plan_routes(["10.50.1.0/24"], [], [("10.0.0.0/8", "eth0"), ("10.50.0.0/16", "lan")])
    assert shadowed[0].interface == "lan"
    assert shadowed[0].local_prefix == ip_network("10.50.0.0/16")


def test_a_local_subnet_shadows_only_its_own_family_and_its_own_addresses() -> None:
    # Overlaps are tested on integer spans: IPv6 ::/96 spans the very integers IPv4 addresses are, and a
    # neighbouring prefix shares an edge, neither of which is an overlap.
    ops, shadowed = plan_routes(
        ["10.2.0.0/24", "10.3.0.0/24", "fd00:2::/64"],
        [],
        [("::/96", "eth6"), ("10.3.0.128/25", "lan"), ("10.1.0.0/24", "x")],
    )
    assert ops == [AddRoute("10.2.0.0/24"), AddRoute("fd00:2::/64")]
    assert [(str(s.prefix), s.interface) for s in shadowed] == [("10.3.0.0/24", "lan")]
