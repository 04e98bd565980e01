"""The data-plane facade over in-memory backends: reconcile by diff, shadowing, stats, cleanup."""

from __future__ import annotations

import ipaddress
import logging
from datetime import UTC, datetime

import pytest
from netmaps import netmap

from wgmesh import keys
from wgmesh.agent import qos
from wgmesh.agent.dataplane import DataPlane
from wgmesh.agent.plan import AddPeer, RemovePeer, SetEndpoint
from wgmesh.agent.route_guard import Protected, WidthBound
from wgmesh.agent.system.memory import MemoryFirewall, MemoryHost, MemoryShaper, MemoryWireGuard
from wgmesh.agent.wgstate import PeerStats
from wgmesh.models import PeerConfig, RefusedRoute, ShadowedRoute
from wgmesh.mtu import DEFAULT_MTU
from wgmesh.values import Endpoint

ep = Endpoint.parse

ME = keys.generate_keypair()


def peer(name: str, index: int, *subnets: str, endpoint: str | None = None) -> PeerConfig:
    ip = f"100.96.0.{index}"
    return PeerConfig(
        node_id=index,
        name=name,
        public_key=keys.generate_keypair().public_key,
        overlay_ip=ip,
        allowed_ips=[f"{ip}/32", *subnets],
        endpoints=[endpoint or f"198.18.0.{10 + index}:51820"],
        psk=keys.generate_psk(),
    )


class Plane:
    """A DataPlane over memory backends, with the backends at hand."""

    def __init__(self, masquerade: bool = False, mss_clamp: bool = True) -> None:
        self.wg = MemoryWireGuard("wgm0")
        self.host = MemoryHost()
        self.fw = MemoryFirewall()
        self.shaper = MemoryShaper()
        self.dp = DataPlane(
            "wgm0",
            "userspace",
            ME.private_key,
            51820,
            masquerade,
            mss_clamp=mss_clamp,
            wireguard=self.wg,
            host=self.host,
            firewall=self.fw,
            shaper=self.shaper,
        )


GW2 = peer("gw2", 2, "10.2.0.0/24")
GW3 = peer("gw3", 3, "10.3.0.0/24")


def test_same_netmap_twice_is_zero_operations() -> None:
    p = Plane()
    p.dp.up()
    first = p.dp.apply(netmap(GW2, GW3))
    assert first.operations > 0 and first.device_ops == 2  # created with key and port: 2 peers to add
    assert p.dp.apply(netmap(GW2, GW3, version=2)).operations == 0
    assert p.wg.created == 1
    assert p.host.links["wgm0"] == {"up": True, "mtu": DEFAULT_MTU, "address": "100.96.0.1/16"}
    assert p.host.installed_routes("wgm0") == ["10.2.0.0/24", "10.3.0.0/24", "100.96.0.2/32", "100.96.0.3/32"]
    assert p.host.forwarding["ipv4"] is True


def test_endpoint_change_is_one_operation_and_keeps_allowed_ips() -> None:
    p = Plane()
    p.dp.apply(netmap(GW2, GW3))
    moved = GW2.model_copy(update={"endpoints": [ep("198.18.0.99:51820")]})
    result = p.dp.apply(netmap(moved, GW3))
    assert result.operations == 1
    assert p.wg.applied[-1] == [SetEndpoint(GW2.public_key, ep("198.18.0.99:51820"))]
    assert p.wg.observe().spec.peers[GW2.public_key].allowed_ips == ("10.2.0.0/24", "100.96.0.2/32")


def test_overrides_and_roaming() -> None:
    p = Plane()
    p.dp.apply(netmap(GW2), {GW2.public_key: ep("127.0.0.1:40002")})
    assert p.wg.observe().spec.peers[GW2.public_key].endpoint == ep("127.0.0.1:40002")
    p.wg.roam(GW2.public_key, ep("198.18.0.77:1234"))
    assert p.dp.apply(netmap(GW2), {GW2.public_key: ep("127.0.0.1:40002")}).operations == 0
    assert p.wg.observe().spec.peers[GW2.public_key].endpoint == ep("198.18.0.77:1234")


def test_removing_a_peer_removes_it_and_its_routes_only() -> None:
    p = Plane()
    p.dp.apply(netmap(GW2, GW3))
    result = p.dp.apply(netmap(GW2))
    assert p.wg.applied[-1] == [RemovePeer(GW3.public_key)]
    assert (result.device_ops, result.route_ops) == (1, 2)
    assert list(p.wg.observe().spec.peers) == [GW2.public_key]
    assert p.host.installed_routes("wgm0") == ["10.2.0.0/24", "100.96.0.2/32"]


def test_shadowed_route_is_reported_and_installed_once_the_local_subnet_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = Plane()
    p.host.local = [("10.3.0.0/24", "lan"), ("198.18.0.0/24", "eth0")]
    with caplog.at_level(logging.WARNING):
        result = p.dp.apply(netmap(GW2, GW3))
    assert result.shadowed == [
        ShadowedRoute(prefix="10.3.0.0/24", gateway="gw3", interface="lan", local_prefix="10.3.0.0/24")
    ]
    assert "10.3.0.0/24" not in p.host.installed_routes("wgm0")
    assert sum("shadowed" in r.getMessage() for r in caplog.records) == 1
    # WireGuard still holds the prefix: only the route is withheld
    assert "10.3.0.0/24" in p.wg.observe().spec.peers[GW3.public_key].allowed_ips
    assert p.dp.apply(netmap(GW2, GW3)).shadowed == result.shadowed
    p.host.local = []
    again = p.dp.apply(netmap(GW2, GW3))
    assert again.shadowed == [] and again.route_ops == 1
    assert "10.3.0.0/24" in p.host.installed_routes("wgm0")


def test_a_lost_device_is_recreated_and_refilled() -> None:
    p = Plane()
    p.dp.apply(netmap(GW2, GW3))
    p.wg.cleanup()  # wireguard-go died
    result = p.dp.apply(netmap(GW2, GW3))
    assert p.wg.created == 2
    assert sorted(type(op).__name__ for op in p.wg.applied[-1]) == ["AddPeer", "AddPeer"]
    assert all(isinstance(op, AddPeer) for op in p.wg.applied[-1])
    assert result.device_ops == 2


def test_overlay_address_change_is_applied_in_place() -> None:
    p = Plane()
    p.dp.apply(netmap(GW2))
    result = p.dp.apply(netmap(GW2, overlay_ip="100.96.0.50"))
    assert result.operations == 1 and p.wg.created == 1
    assert p.host.links["wgm0"]["address"] == "100.96.0.50/16"


def test_masquerade_table_follows_the_flag() -> None:
    p = Plane(masquerade=True, mss_clamp=False)
    p.dp.apply(netmap(GW2))
    assert p.fw.tables["wgm0"].masquerade and not p.fw.tables["wgm0"].clamps
    p.dp.masquerade = False
    assert p.dp.apply(netmap(GW2)).operations == 1
    assert p.fw.tables == {}


def test_tunnel_mtu_follows_the_underlay_and_the_clamp_follows_each_peer() -> None:
    p = Plane()
    small = GW3.model_copy(update={"mtu": 1380})
    p.dp.apply(netmap(GW2, small))
    assert p.host.links["wgm0"]["mtu"] == DEFAULT_MTU and p.dp.mtu == DEFAULT_MTU
    assert [(g.mtu, g.ipv4) for g in p.fw.tables["wgm0"].clamps] == [
        (1376, ("10.3.0.0/24", "100.96.0.3/32")),  # 1380 rounded down to WireGuard's padding
        (1420, ("10.2.0.0/24", "100.96.0.2/32")),
    ]
    # The underlay shrinks (GCP's 1460 over IPv4): the interface is lowered in place, every clamp too.
    p.dp.underlay_limit = 1400
    result = p.dp.apply(netmap(GW2, small))
    assert result.device_ops == 0 and p.wg.created == 1
    assert p.host.links["wgm0"]["mtu"] == 1400 and p.dp.mtu == 1400
    assert [g.mtu for g in p.fw.tables["wgm0"].clamps] == [1376, 1392]
    assert p.dp.apply(netmap(GW2, small)).operations == 0


def test_no_mss_clamp_leaves_no_table() -> None:
    p = Plane(mss_clamp=False)
    p.dp.apply(netmap(GW2))
    assert p.fw.tables == {}


def test_observed_stats_carry_counters_handshake_and_endpoint() -> None:
    p = Plane()
    p.dp.apply(netmap(GW2, GW3))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    p.wg.stats[GW2.public_key] = PeerStats(10, 20, when, ep("198.18.0.12:51820"))
    stats = p.dp.observe_stats()
    assert stats[GW2.public_key] == PeerStats(10, 20, when, ep("198.18.0.12:51820"))
    assert stats[GW3.public_key].rx_bytes == 0 and stats[GW3.public_key].endpoint is None


def test_close_leaves_everything_and_cleanup_removes_everything() -> None:
    p = Plane(masquerade=True)
    p.dp.apply(netmap(GW2))
    p.dp.close()
    assert p.wg.device is not None and "wgm0" in p.host.links and p.fw.tables
    p.dp.cleanup()
    assert p.wg.device is None and "wgm0" not in p.host.links and not p.fw.tables
    assert p.host.installed_routes("wgm0") == []


def test_logs_name_keys_by_fingerprint_only(caplog: pytest.LogCaptureFixture) -> None:
    p = Plane()
    with caplog.at_level(logging.DEBUG):
        p.dp.up()
        p.dp.apply(netmap(GW2, GW3))
        p.dp.cleanup()
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'kv', {})}" for r in caplog.records)
    assert ME.private_key not in text
    assert GW2.psk is not None and GW2.psk not in text
    assert GW2.public_key not in text and GW2.public_key[:8] in text


def test_a_prefix_given_to_two_peers_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    p = Plane()
    twin = peer("gw4", 4, "10.2.0.0/24")
    with caplog.at_level(logging.WARNING):
        p.dp.apply(netmap(GW2, twin))
        assert p.dp.apply(netmap(GW2, twin)).operations == 0
    assert sum("two peers" in r.getMessage() for r in caplog.records) == 1
    assert "10.2.0.0/24" not in p.wg.observe().spec.peers[twin.public_key].allowed_ips


def test_bandwidth_limits_are_applied_by_diff_and_removed_when_unset() -> None:
    p = Plane()
    p.dp.up()
    limited = GW2.model_copy(update={"rate": "20mbit"})
    first = netmap(limited, GW3).model_copy(update={"rate": "50mbit"})
    p.dp.apply(first)
    minor = qos.PEER_MINOR_BASE + GW2.node_id
    assert p.shaper.observe("wgm0") == {qos.TOP_MINOR, qos.DEFAULT_MINOR, minor}
    assert p.dp.apply(first.model_copy(update={"version": 2})).operations == 0
    # Only the pair's rate changes: one class change, nothing rebuilt, the node's classes untouched.
    p.shaper.applied.clear()
    p.dp.apply(netmap(GW2.model_copy(update={"rate": "30mbit"}), GW3).model_copy(update={"rate": "50mbit"}))
    assert p.shaper.applied == [qos.SetClass(minor, qos.TOP_MINOR, 30_000_000, 30_000_000)]
    # Limits unset: the tree goes.
    p.dp.apply(netmap(GW2, GW3))
    assert p.shaper.observe("wgm0") is None


def test_a_tree_changed_behind_the_agents_back_is_rebuilt() -> None:
    p = Plane()
    p.dp.up()
    nm = netmap(GW2.model_copy(update={"rate": "20mbit"}))
    p.dp.apply(nm)
    p.shaper.classes["wgm0"].discard(qos.PEER_MINOR_BASE + GW2.node_id)  # someone ran `tc class del`
    p.shaper.applied.clear()
    p.dp.apply(nm)
    assert p.shaper.applied[0] == qos.ReplaceRoot()
    assert qos.PEER_MINOR_BASE + GW2.node_id in (p.shaper.observe("wgm0") or set())


# --- refused routes (agent/route_guard.py, issue 16) --------------------------------------------------


def test_refused_prefix_is_neither_routed_nor_allowed_and_the_rest_applies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = Plane()
    p.dp.protected = Protected(coordinator=(ipaddress.ip_address("198.18.0.1"),))
    rogue = peer("gw3", 3, "10.3.0.0/24", "198.18.0.1/32", "0.0.0.0/1")
    with caplog.at_level(logging.INFO):
        result = p.dp.apply(netmap(GW2, rogue))
        again = p.dp.apply(netmap(GW2, rogue, version=2))
    assert result.refused == [
        RefusedRoute(prefix="0.0.0.0/1", gateway="gw3", code="too_wide"),
        RefusedRoute(prefix="198.18.0.1/32", gateway="gw3", code="coordinator", address="198.18.0.1"),
    ]
    assert again.refused == result.refused
    assert again.operations == 0
    assert p.host.installed_routes("wgm0") == ["10.2.0.0/24", "10.3.0.0/24", "100.96.0.2/32", "100.96.0.3/32"]
    # WireGuard does not hold them either: replies to those addresses must not go into the tunnel
    assert p.wg.observe().spec.peers[rogue.public_key].allowed_ips == ("10.3.0.0/24", "100.96.0.3/32")
    logged = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 2  # once per change, not at every apply


def test_a_route_becomes_refused_when_a_peer_is_reached_directly_inside_it() -> None:
    p = Plane()
    lan = peer("gw3", 3, "192.0.2.0/24")
    inside = peer("gw2", 2, endpoint="192.0.2.20:51820")
    relayed = {inside.public_key: ep("127.0.0.1:40002")}
    assert p.dp.apply(netmap(inside, lan), relayed).refused == []  # the shim's loopback endpoint: no loop
    assert "192.0.2.0/24" in p.host.installed_routes("wgm0")
    result = p.dp.apply(netmap(inside, lan))  # gw2 direct at 192.0.2.20: the route would carry its packets
    assert result.refused == [
        RefusedRoute(prefix="192.0.2.0/24", gateway="gw3", code="peer_endpoint", address="192.0.2.20")
    ]
    assert "192.0.2.0/24" not in p.host.installed_routes("wgm0")
    assert p.wg.observe().spec.peers[lan.public_key].allowed_ips == ("100.96.0.3/32",)


def test_the_width_flag_installs_a_wide_route() -> None:
    wide = peer("gw3", 3, "0.0.0.0/0", "::/0")
    assert {str(r.prefix) for r in Plane().dp.apply(netmap(wide)).refused} == {"0.0.0.0/0", "::/0"}
    p = Plane()
    p.dp.width = WidthBound(allow_wide=True)
    p.dp.protected = Protected(coordinator=(ipaddress.ip_address("198.18.0.1"),))
    assert [str(r.prefix) for r in p.dp.apply(netmap(wide)).refused] == ["0.0.0.0/0"]
    assert "::/0" in p.host.installed_routes("wgm0")
