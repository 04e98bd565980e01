"""Layout of `wgmesh status` and `wgmesh routes`: 50 subnets over 6 gateways stay readable at 80 and
120 columns; no prefix, address or endpoint is ever cut, and conflicts stay visible."""

from __future__ import annotations

import io
import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console, RenderableType

from wgmesh.cli.render import age, ha_groups_table, human_bytes, node_screen, routes_table, rtt, status_screen
from wgmesh.cli.view import NodeView, PeerView, RouteView, StatusView
from wgmesh.models import TopologyHaGroup

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
GATEWAYS = [f"gw-{site}" for site in ("fra-1", "ams-2", "sgp-3", "iad-4", "sfo-5", "tokyo-central-6")]


def fifty_routes() -> list[RouteView]:
    """50 subnets over 6 gateways, with conflicts, an HA pair, a shadowed route and long IPv6 prefixes."""
    routes: list[RouteView] = []
    for g, gw in enumerate(GATEWAYS):
        count = 9 if g < 5 else 5  # 5 * 9 + 5 = 50
        for j in range(count):
            prefix = f"10.{g}.{j * 4}.0/22"
            state, reason, other = "active", "", None
            if j == 7:
                prefix = f"2001:db8:{g:x}a00:bbbb:cccc:dddd:eeee:0/112"
            if j == 8:
                prefix = f"fd00:{g}::/64"
            if j == 3 and g > 0:
                other = f"10.{g - 1}.0.0/22@{GATEWAYS[g - 1]}"
                prefix = f"10.{g - 1}.0.0/16"
                state, reason = "conflict", f"{prefix} overlaps {other}"
            if j == 4 and g == 1:
                prefix, state = "10.0.16.0/22", "standby"
                other = f"{prefix}@{GATEWAYS[0]}"
                reason = f"standby for {other} (same prefix)"
            if j == 5 and g == 2:
                state, other = "shadowed", f"10.2.20.0/24@{GATEWAYS[4]}"
                reason = f"active, but not installed on {GATEWAYS[4]} (overlaps local 10.2.20.0/24 on lan)"
            routes.append(
                RouteView(prefix=prefix, gateway=gw, state=state, reason=reason, conflicts_with=other)
            )
    assert len(routes) == 50
    # In the coordinator's order: by address family, then prefix, then gateway.
    return sorted(
        routes,
        key=lambda r: (ipaddress.ip_network(r.prefix).version, ipaddress.ip_network(r.prefix), r.gateway),
    )


def render(renderable: RenderableType, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    return lines


def heading(lines: list[str], gateway: str) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(f"{gateway}  "))


def line_with(lines: list[str], *parts: str, start: int = 0) -> int:
    for i in range(start, len(lines)):
        if all(p in lines[i] for p in parts):
            return i
    raise AssertionError(f"no line holds {parts}:\n" + "\n".join(lines))


@pytest.mark.parametrize("width", [80, 120])
def test_routes_at_80_and_120_columns_keep_every_prefix_whole_and_grouped(width: int) -> None:
    routes = fifty_routes()
    lines = render(routes_table(routes, width), width)
    text = "\n".join(lines)
    # Grouped by gateway: headings in name order, each route after its gateway's heading and
    # before the next one, with its state on the same line as its prefix.
    headings = [heading(lines, gw) for gw in sorted(GATEWAYS)]
    assert headings == sorted(headings)
    bounds = dict(zip(sorted(GATEWAYS), [*headings[1:], len(lines)], strict=True))
    for gw, first in zip(sorted(GATEWAYS), headings, strict=True):
        mine = [r for r in routes if r.gateway == gw]
        found = [line_with(lines, f" {r.prefix} ", r.state, start=first) for r in mine]
        assert all(first < i < bounds[gw] for i in found), gw
        # Sorted by prefix within the group.
        by_line = [r.prefix for _, r in sorted(zip(found, mine, strict=True), key=lambda x: x[0])]
        assert by_line == sorted(
            by_line, key=lambda p: (ipaddress.ip_network(p).version, ipaddress.ip_network(p))
        )
    # The route a conflict collides with (or a standby stands by for) is named in full.
    for r in routes:
        if r.state in ("conflict", "standby"):
            assert r.conflicts_with is not None and r.conflicts_with in text, r.conflicts_with
        if r.state == "shadowed":  # the detail may wrap, between words
            assert "not installed on gw-sfo-5" in " ".join(text.split()) and "10.2.20.0/24" in text
    assert text.count("conflict") >= 5


def test_routes_on_a_very_narrow_console_fall_back_to_lines_without_cutting_prefixes() -> None:
    routes = fifty_routes()
    lines = render(routes_table(routes, 44), 44)
    for r in routes:
        first = heading(lines, r.gateway)
        i = line_with(lines, f"  {r.prefix} ", start=first)
        assert r.state in lines[i] or r.state in lines[i + 1], lines[i : i + 2]


def test_routes_table_with_a_wide_console_uses_a_single_line_per_route() -> None:
    routes = fifty_routes()
    lines = render(routes_table(routes, 200), 200)
    assert len(lines) == 1 + len(GATEWAYS) + len(routes)  # header, headings, one line per route


def status(nodes: int = 6) -> StatusView:
    handshake = NOW - timedelta(seconds=95)
    names = GATEWAYS[:nodes]
    routes = fifty_routes()
    node_views = []
    for i, name in enumerate(names):
        peers = [
            PeerView(
                name=other,
                overlay_ip=f"100.96.0.{k + 1}",
                eth0_ip=f"10.{k}.0.10",
                public_ip=f"203.0.113.{k + 1}",
                path="direct" if k % 2 else "relay",
                endpoint=f"203.0.113.{k + 1}:51820" if k % 2 else None,
                relay=None if k % 2 else "relay-fra",
                rtt_ms=3.25 * (k + 1),
                rx_bytes=1536 * 1024 * (k + 1),
                tx_bytes=700,
                last_handshake=handshake,
                reason=None if k % 2 else "no UDP handshake within 5 s; moved to the relay",
            )
            for k, other in enumerate(names)
            if other != name
        ]
        node_views.append(
            NodeView(
                name=name,
                overlay_ip=f"100.96.0.{i + 1}",
                eth0_ip=f"10.{i}.0.10",
                public_ip=f"203.0.113.{i + 1}",
                online=i != 2,
                last_seen=NOW - timedelta(minutes=7),
                p2p="off" if i == 1 else "auto",
                mtu=1420 if i != 2 else None,
                subnets=[r.prefix for r in routes if r.gateway == name],
                peers=peers,
            )
        )
    warnings = ["gateway gw-sgp-3 is offline", "route 10.0.0.0/16@gw-ams-2 is inactive: overlaps"]
    return StatusView(nodes=node_views, routes=routes, warnings=warnings)


@pytest.mark.parametrize("width", [80, 120])
def test_status_at_80_and_120_columns_keeps_addresses_and_prefixes_whole(width: int) -> None:
    view = status()
    lines = render(status_screen(view, NOW, width), width)
    text = "\n".join(lines)
    for node in view.nodes:
        for value in (node.name, node.overlay_ip, node.eth0_ip, node.public_ip):
            assert value is not None and value in text, value
        shown = node.subnets if len(node.subnets) <= 4 else node.subnets[:3]
        for prefix in shown:
            assert str(prefix) in text
        if len(node.subnets) > 4:
            assert f"+{len(node.subnets) - 3} more" in text
    for route in view.routes:
        line_with(lines, str(route.prefix), route.state)
    for warning in view.warnings:
        assert warning in text
    assert line_with(lines, "Nodes") < line_with(lines, "Routes") < line_with(lines, "Warnings")


@pytest.mark.parametrize("width", [80, 120, 200])
def test_node_peers_at_any_width_keep_endpoints_and_addresses_whole(width: int) -> None:
    node = status().nodes[0]
    lines = render(node_screen(node, NOW, width), width)
    text = "\n".join(lines)
    for peer in node.peers:
        for value in (peer.name, peer.overlay_ip, peer.eth0_ip, peer.public_ip, peer.endpoint or peer.relay):
            assert value is not None and value in text, (value, width)
        assert rtt(peer.rtt_ms) in text
        assert human_bytes(peer.rx_bytes) in text
    assert age(node.peers[0].last_handshake, NOW) == "1m ago"
    assert "1m ago" in text


def test_unknown_values_show_a_dash() -> None:
    peer = PeerView(
        name="gw-b",
        overlay_ip="100.96.0.2",
        eth0_ip=None,
        public_ip=None,
        path=None,
        endpoint=None,
        relay=None,
        rtt_ms=None,
        rx_bytes=None,
        tx_bytes=None,
        last_handshake=None,
        reason=None,
    )
    node = NodeView(
        name="gw-a",
        overlay_ip="100.96.0.1",
        eth0_ip=None,
        public_ip=None,
        online=False,
        last_seen=None,
        p2p="auto",
        mtu=None,
        subnets=[],
        peers=[peer],
    )
    lines = render(node_screen(node, NOW, 120), 120)
    row = lines[line_with(lines, "gw-b")]
    assert row.count("—") >= 8, row
    assert "never seen" in lines[0]
    assert "mtu —" in lines[0]


def test_human_readable_figures() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"
    assert human_bytes(None) == "—"
    assert rtt(0.42) == "0.42 ms" and rtt(12.4) == "12 ms" and rtt(None) == "—"
    assert age(NOW - timedelta(seconds=5), NOW) == "5s ago"
    assert age(NOW - timedelta(hours=3, minutes=5), NOW) == "3h ago"
    assert age(NOW - timedelta(days=2), NOW) == "2d ago"
    assert age(NOW + timedelta(seconds=3), NOW) == "0s ago"  # clock skew never shows a negative age


def test_status_says_which_coordinator_each_agent_follows_and_nothing_when_none_reported() -> None:
    view = status(3)
    text = "\n".join(render(status_screen(view, NOW, 120), 120))
    assert "agents follow" not in text
    a, b = "https://198.18.0.1:8080", "https://198.18.0.2:8080"
    followed = [
        n.model_copy(update={"coordinator": url}) for n, url in zip(view.nodes, (b, a, b), strict=True)
    ]
    lines = render(status_screen(view.model_copy(update={"nodes": followed}), NOW, 120), 120)
    names = [n.name for n in view.nodes]
    line = lines[line_with(lines, "agents follow")]
    assert line.strip() == f"agents follow {a} ({names[1]}); {b} ({names[0]}, {names[2]})"
    assert line_with(lines, "agents follow") < line_with(lines, "Routes")


def test_status_says_which_version_each_agent_runs_newest_first_and_nothing_when_none_reported() -> None:
    view = status(4)
    text = "\n".join(render(status_screen(view, NOW, 120), 120))
    assert "agents run" not in text  # agents before 0.2.0 report no version
    names = [n.name for n in view.nodes]
    running = [
        n.model_copy(update={"agent_version": v})
        for n, v in zip(view.nodes, ("0.9.0", "0.10.0", None, "0.9.0"), strict=True)
    ]
    static = {names[3]}  # a static peer runs no agent: not listed, though its (made-up) version is
    lines = render(status_screen(view.model_copy(update={"nodes": running}), NOW, 120, static), 120)
    line = lines[line_with(lines, "agents run")]
    assert line.strip() == f"agents run 0.10.0 ({names[1]}); 0.9.0 ({names[0]}); unknown ({names[2]})"
    assert line_with(lines, "agents run") < line_with(lines, "Routes")
    one = render(node_screen(running[1], NOW, 120), 120)
    assert "agent 0.10.0" in one[0]


def ha_groups() -> list[TopologyHaGroup]:
    """Two HA groups with long gateway names, one of them moved by an agent with a long reason."""
    move = {
        "at": (NOW - timedelta(minutes=3)).isoformat(),
        "reported_by": "vm-frankfurt-a",
        "code": "holder_down",
        "holder": "gw-tokyo-central-6b",
        "moved_from": "gw-tokyo-central-6",
        "reason": "gw-tokyo-central-6 answered no probe for 3 s",
    }

    def member(name: str, role: str, carried: list[str]) -> dict[str, object]:
        health = {"up": 2, "down": 1, "unknown": 0}
        return {
            "node": name,
            "node_id": 1,
            "role": role,
            "online": True,
            "health": health,
            "carried_by": carried,
        }

    return [
        TopologyHaGroup.model_validate(
            {
                "prefix": "2001:db8:aa00:bbbb:cccc:dddd:eeee:0/112",
                "site": "vpc-tokyo",
                "members": [
                    member("gw-tokyo-central-6", "primary", ["vm-amsterdam-b"]),
                    member("gw-tokyo-central-6b", "standby", ["vm-frankfurt-a", "gw-tokyo-central-6b"]),
                ],
                "last_failover": move,
            }
        ),
        TopologyHaGroup.model_validate(
            {
                "prefix": "10.2.0.0/24",
                "site": "vpc2",
                "members": [member("gw2", "primary", []), member("gw2b", "standby", [])],
                "last_failover": None,
            }
        ),
    ]


@pytest.mark.parametrize("width", [40, 80, 120, 200])
def test_ha_groups_at_any_width_keep_prefixes_and_names_whole(width: int) -> None:
    out = "\n".join(render(ha_groups_table(ha_groups(), NOW, width), width))
    for whole in (
        "2001:db8:aa00:bbbb:cccc:dddd:eeee:0/112",
        "10.2.0.0/24",
        "vpc-tokyo",
        "gw-tokyo-central-6 up 2/3",
        "gw-tokyo-central-6b up 2/3",
        "vm-frankfurt-a",
        "3m ago",
    ):
        assert whole in out, (whole, width, out)
    assert "—" in out  # no move reported for 10.2.0.0/24
