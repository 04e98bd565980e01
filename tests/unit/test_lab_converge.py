"""Lab convergence: `wg show dump` parsing and the verdict that `lab up` waits for."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from wgmesh.errors import ValidationError
from wgmesh.lab.converge import (
    GatewayView,
    Nudge,
    WgPeer,
    assess,
    parse_default_via,
    parse_ping_rtt,
    parse_wg_dump,
    parse_wg_public_key,
)
from wgmesh.lab.layout import plan_lab

DUMP = (
    "cHJpdmF0ZQ==\tcHVibGlj\t51820\toff\n"
    "a2V5Mg==\t(none)\t198.18.0.12:51820\t100.96.0.2/32,10.2.0.0/24\t1732560000\t1184\t1096\toff\n"
    "a2V5Mw==\t(none)\t(none)\t(none)\t0\t0\t0\t25\n"
)


def peer(key: str, *nets: str, handshake: int = 1) -> WgPeer:
    return WgPeer(key, None, tuple(ip_network(n) for n in nets), handshake, 0, 0)


def test_parse_wg_dump() -> None:
    peers = parse_wg_dump(DUMP)
    assert len(peers) == 2
    first, second = peers
    assert first.public_key == "a2V5Mg=="
    assert first.endpoint == "198.18.0.12:51820"
    assert first.allowed_ips == (ip_network("100.96.0.2/32"), ip_network("10.2.0.0/24"))
    assert first.latest_handshake == 1732560000
    assert (first.rx_bytes, first.tx_bytes) == (1184, 1096)
    assert second.endpoint is None
    assert second.allowed_ips == ()
    assert second.latest_handshake == 0


def test_parse_wg_public_key_keeps_the_public_half_only() -> None:
    assert parse_wg_public_key(DUMP) == "cHVibGlj"
    assert parse_wg_public_key("") is None
    assert parse_wg_public_key("only\tthree\tfields\n") is None


def test_parse_wg_dump_of_an_empty_interface() -> None:
    assert parse_wg_dump("cHJpdmF0ZQ==\tcHVibGlj\t51820\toff\n") == ()
    assert parse_wg_dump("") == ()


def test_parse_wg_dump_refuses_unknown_layouts() -> None:
    with pytest.raises(ValidationError):
        parse_wg_dump("iface\nonly\tthree\tfields\n")


def full_mesh(count: int, handshake: int = 1) -> dict[int, GatewayView]:
    plan = plan_lab("wgl", count)
    return {
        s.index: GatewayView(
            peers=tuple(
                peer(f"k{o.index}", f"100.96.0.{o.index}/32", str(o.lan), handshake=handshake)
                for o in plan.sites
                if o.index != s.index
            )
        )
        for s in plan.sites
    }


def test_full_mesh_with_handshakes_has_converged() -> None:
    verdict = assess(plan_lab("wgl", 3), full_mesh(3))
    assert verdict.converged
    assert verdict.pending == ()
    assert verdict.summary == "peers 6/6, handshakes 6/6"


def test_missing_handshakes_ask_for_a_nudge() -> None:
    verdict = assess(plan_lab("wgl", 2), full_mesh(2, handshake=0))
    assert not verdict.converged
    assert verdict.nudge == (Nudge("gw1", "gw2", "10.2.0.1"), Nudge("gw2", "gw1", "10.1.0.1"))
    assert verdict.pending[0] == "gw1 has no handshake with gw2"
    assert assess(plan_lab("wgl", 2), full_mesh(2, handshake=0), handshakes=False).converged


def test_no_nudge_until_both_ends_list_each_other() -> None:
    plan = plan_lab("wgl", 2)
    views = {1: GatewayView(peers=(peer("k2", "10.2.0.0/24", handshake=0),)), 2: GatewayView()}
    verdict = assess(plan, views)
    assert verdict.nudge == ()
    assert "gw2 has no peer for gw1 (10.1.0.0/24)" in verdict.pending


def test_a_gateway_without_interface_or_peer_is_pending() -> None:
    plan = plan_lab("wgl", 3)
    views = full_mesh(3)
    views[2] = GatewayView(error="no WireGuard interface")
    views[3] = GatewayView(peers=(peer("k1", "100.96.0.1/32", "10.1.0.0/24"),))
    verdict = assess(plan, views)
    assert not verdict.converged
    assert "gw2: no WireGuard interface" in verdict.pending
    assert "gw3 has no peer for gw2 (10.2.0.0/24)" in verdict.pending


def test_unexpected_and_catch_all_peers_do_not_count() -> None:
    plan = plan_lab("wgl", 3)
    views = full_mesh(3)
    # A peer allowing everything must not stand in for every site.
    views[1] = GatewayView(peers=(peer("wide", "0.0.0.0/0"),))
    views[2] = GatewayView(peers=(*views[2].peers, peer("ghost", "100.96.0.9/32")))
    verdict = assess(plan, views)
    assert "gw1 has no peer for gw2 (10.2.0.0/24)" in verdict.pending
    assert "gw1 has 1 unexpected peer(s)" in verdict.pending
    assert "gw2 has 1 unexpected peer(s)" in verdict.pending


def test_single_site_converges_with_no_peers() -> None:
    assert assess(plan_lab("wgl", 1), {1: GatewayView()}).converged


def test_parse_ping_rtt() -> None:
    ok = (
        "--- 10.2.0.10 ping statistics ---\n"
        "1 packets transmitted, 1 received, 0% packet loss, time 0ms\n"
        "rtt min/avg/max/mdev = 0.880/0.912/0.950/0.010 ms\n"
    )
    assert parse_ping_rtt(ok) == 0.912
    lost = "1 packets transmitted, 0 received, 100% packet loss, time 0ms\n"
    assert parse_ping_rtt(lost) is None
    assert parse_ping_rtt("ping: connect: Network is unreachable") is None


HA = plan_lab("wgl", 2, ha_sites=[2])
OVERLAY = {"gw1": "100.96.0.1/32", "gw2": "100.96.0.2/32", "gw2b": "100.96.0.3/32"}


def ha_mesh(carrier: str = "gw2", handshake: int = 1) -> dict[str, GatewayView]:
    """gw1, gw2 and gw2b peering with each other by key; 10.2.0.0/24 on `carrier` (gw1's view), 10.1.0.0/24
    on gw1 (the views of site 2's gateways)."""
    lans = {"gw1": "10.1.0.0/24", carrier: "10.2.0.0/24"}

    def allowed(viewer: str, node: str) -> tuple[str, ...]:
        own_site = viewer.startswith("gw2") and node.startswith("gw2")
        lan = lans.get(node)
        return (OVERLAY[node],) if own_site or lan is None else (OVERLAY[node], lan)

    return {
        viewer: GatewayView(
            peers=tuple(
                peer(f"k-{n}", *allowed(viewer, n), handshake=handshake) for n in OVERLAY if n != viewer
            ),
            public_key=f"k-{viewer}",
        )
        for viewer in OVERLAY
    }


def test_an_ha_site_converges_with_its_second_gateway_as_a_peer() -> None:
    verdict = assess(HA, ha_mesh())
    assert verdict.converged, verdict.pending
    assert verdict.summary == "peers 6/6, handshakes 6/6"
    # whichever member carries the prefix
    assert assess(HA, ha_mesh(carrier="gw2b")).converged


def test_the_second_gateway_is_waited_for() -> None:
    views = ha_mesh()
    views["gw2b"] = GatewayView(error="no WireGuard interface")
    verdict = assess(HA, views)
    # gw2b's peer on the others cannot be told apart without its key: not "unexpected" either
    assert verdict.pending == ("gw2b: no WireGuard interface",)
    views = ha_mesh()
    views["gw1"] = GatewayView(peers=views["gw1"].peers[:1], public_key="k-gw1")  # gw2 only
    assert "gw1 has no peer for gw2b" in assess(HA, views).pending


def test_an_ha_prefix_must_go_to_exactly_one_member() -> None:
    views = ha_mesh()
    gw1 = views["gw1"]
    views["gw1"] = GatewayView(
        peers=tuple(WgPeer(p.public_key, None, p.allowed_ips[:1], 1, 0, 0) for p in gw1.peers),
        public_key="k-gw1",
    )
    assert "gw1 routes 10.2.0.0/24 to no gateway of vpc2" in assess(HA, views).pending
    views["gw1"] = GatewayView(
        peers=tuple(peer(p.public_key, str(p.allowed_ips[0]), "10.2.0.0/24") for p in gw1.peers),
        public_key="k-gw1",
    )
    assert "gw1 routes 10.2.0.0/24 to 2 peers" in assess(HA, views).pending


def test_nudges_reach_a_standby_over_the_lan_and_a_sibling_over_the_overlay() -> None:
    verdict = assess(HA, ha_mesh(handshake=0))
    assert not verdict.converged
    nudges = {(n.source, n.target): n.address for n in verdict.nudge}
    assert nudges[("gw1", "gw2b")] == "10.2.0.2"
    assert nudges[("gw2b", "gw1")] == "10.1.0.1"
    assert nudges[("gw2", "gw2b")] == "100.96.0.3"
    assert nudges[("gw2b", "gw2")] == "100.96.0.2"
    assert len(nudges) == 6


def test_parse_default_via() -> None:
    assert str(parse_default_via("default via 10.2.0.2 dev eth0 \n")) == "10.2.0.2"
    assert str(parse_default_via("default via 10.2.0.1 dev eth0 proto static metric 5\n")) == "10.2.0.1"
    assert parse_default_via("") is None
    assert parse_default_via("default dev wg0 scope link\n") is None
    assert parse_default_via("default via\n") is None
