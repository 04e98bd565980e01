"""Pure: view models -> rich renderables. Prefixes and addresses are never cut: cells that may not
fit wrap between words, and long lists are abbreviated with a count instead."""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from itertools import groupby

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from wgmesh import versions
from wgmesh.cli.view import NodeView, RouteView, StatusView, peer_counts
from wgmesh.models import (
    HaFailover,
    LinkCounts,
    PeerView,
    TopologyGroup,
    TopologyHaGroup,
    TopologyHaMember,
    TopologyLinkPage,
    TopologyNodePage,
    TopologyProblem,
    TopologySummary,
)
from wgmesh.printable import escape
from wgmesh.values import Prefix, RouteState

DASH = "—"
SUBNETS_SHOWN = 4  # per node in the status table; `wgmesh routes` lists them all
STATE_STYLE = {
    "active": "green",
    "standby": "cyan",
    "conflict": "bold red",
    "rejected": "red",
    "pending": "bold yellow",
    "shadowed": "yellow",
}
DETAIL_MIN = 16  # narrowest useful detail/reason column; below it routes fall back to lines
FAILOVER_MIN = 30  # narrowest useful last-failover column; below it HA groups fall back to lines
ROUTE_INDENT = 2
MEASURE_WIDTH = 10_000


def dash(value: object) -> str:
    """The value as text safe to print (wgmesh.printable.escape), or an em dash when unknown.

    Every value the CLI shows goes through here, in a `Text` (never a markup string): a report stored
    before the API refused control characters cannot drive the terminal, and `[…]` in it is not markup.
    """
    return DASH if value is None or value == "" else escape(str(value))


def cell(value: object) -> Text:
    """A table cell: the value as `dash` writes it, never read as markup."""
    return Text(dash(value))


def age(when: datetime | None, now: datetime) -> str:
    """`12s ago`, `5m ago`, `3h ago`, `2d ago`; an em dash when unknown."""
    if when is None:
        return DASH
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def human_bytes(count: int | None) -> str:
    """`512 B`, `1.5 KiB`, `20.0 MiB`…; an em dash when unknown."""
    if count is None:
        return DASH
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def rtt(ms: float | None) -> str:
    """Round-trip time: `0.42 ms`, `12 ms`; an em dash when unknown."""
    if ms is None:
        return DASH
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.0f} ms"


def _widths(renderable: RenderableType) -> tuple[int, int]:
    """The narrowest `renderable` can be without cutting a word, and its width when nothing wraps."""
    console = Console(width=MEASURE_WIDTH, color_system=None, file=io.StringIO())
    measured = console.measure(renderable)
    return measured.minimum, measured.maximum


def _pick(width: int, wide: Table, narrow: Table, lines: Callable[[], RenderableType]) -> RenderableType:
    """The wide table if it fits on one line per row, else the stacked one if no word must be cut,
    else plain lines that wrap between values."""
    if _widths(wide)[1] <= width:
        return wide
    if _widths(narrow)[0] <= width:
        return narrow
    return lines()


def _table(*columns: tuple[str, bool]) -> Table:
    """A borderless table; each column is (header, keep): `keep` columns hold addresses and prefixes
    and never wrap, the others wrap between words when the console is narrow."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header, keep in columns:
        right = header in ("RTT", "RX", "TX")
        table.add_column(header, no_wrap=keep, overflow="fold", justify="right" if right else "left")
    return table


def _seen(node: NodeView, now: datetime, static: bool) -> Text:
    if node.online:
        return Text("online", style="green")
    if static and node.last_seen is None:
        return Text("static", style="dim")
    return Text("never" if node.last_seen is None else age(node.last_seen, now), style="red")


def _peers(node: NodeView, sep: str) -> str:
    if not node.peers:
        return DASH
    direct, tcp, relayed = peer_counts(node)
    unknown = len(node.peers) - direct - tcp - relayed
    parts = [f"{direct} direct", *([f"{tcp} tcp-direct"] if tcp else []), f"{relayed} relay"]
    parts += [f"{unknown} unknown"] if unknown else []
    return sep.join(parts)


def _subnets(subnets: Sequence[Prefix], sep: str = "\n", limit: int = SUBNETS_SHOWN) -> Text:
    if not subnets:
        return Text(DASH)
    shown = subnets if len(subnets) <= limit else subnets[: limit - 1]
    text = Text(sep.join(map(str, shown)))
    if len(shown) < len(subnets):
        text.append(f"{sep}+{len(subnets) - len(shown)} more", style="dim")
    return text


def _p2p(policy: str) -> Text:
    return Text(policy, style="yellow" if policy == "off" else "")


def _name(name: str, second: str | None = None) -> Text:
    text = Text(dash(name), style="bold")
    if second is not None:
        text.append(f"\n{dash(second)}", style="")
    return text


def nodes_table(
    nodes: Sequence[NodeView], now: datetime, width: int = 80, static: Collection[str] = ()
) -> RenderableType:
    """One row per node: addresses, liveness, P2P policy, peers by path, advertised subnets.

    One line per node when that fits in `width`; else the addresses are stacked; else plain lines.
    """
    wide = _table(
        ("NODE", False),
        ("OVERLAY IP", True),
        ("ETH0 IP", True),
        ("PUBLIC IP", True),
        ("SEEN", False),
        ("P2P", True),
        ("PEERS", False),
        ("SUBNETS", True),
    )
    narrow = _table(
        ("NODE\nOVERLAY IP", False),
        ("ETH0 IP\nPUBLIC IP", True),
        ("SEEN", False),
        ("P2P", True),
        ("PEERS", False),
        ("SUBNETS", True),
    )
    for node in nodes:
        seen = _seen(node, now, node.name in static)
        wide.add_row(
            _name(node.name),
            cell(node.overlay_ip),
            cell(node.eth0_ip),
            cell(node.public_ip),
            seen,
            _p2p(node.p2p),
            cell(_peers(node, ", ")),
            _subnets(node.subnets),
        )
        narrow.add_row(
            _name(node.name, node.overlay_ip),
            Text(f"{dash(node.eth0_ip)}\n{dash(node.public_ip)}"),
            seen,
            _p2p(node.p2p),
            cell(_peers(node, "\n")),
            _subnets(node.subnets),
        )

    def lines() -> RenderableType:
        out: list[RenderableType] = []
        for node in nodes:
            head = _name(node.name)
            head.append("  ")
            head.append_text(_seen(node, now, node.name in static))
            head.append(f"  p2p {node.p2p}  peers {_peers(node, ', ')}")
            out.append(head)
            out.append(
                Text(
                    f"  overlay {dash(node.overlay_ip)}  eth0 {dash(node.eth0_ip)}  public {dash(node.public_ip)}"
                )
            )
            out.append(Text("  subnets ").append_text(_subnets(node.subnets, "  ")))
        return Group(*out)

    return _pick(width, wide, narrow, lines)


PATH_STYLE = {"direct": "green", "tcp-direct": "cyan", "relay": "yellow", "down": "red", "unknown": "dim"}
"""How a peer's or a link's path is coloured."""


def _path(peer: PeerView, sep: str) -> Text:
    if peer.path is None:
        return Text(DASH)
    via = peer.relay if peer.path == "relay" else peer.endpoint
    text = Text(peer.path, style=PATH_STYLE[peer.path])
    text.append(f"{sep}{dash(via)}")
    return text


def peers_table(node: NodeView, now: datetime, width: int = 80) -> RenderableType:
    """A node's peers: addresses, path with endpoint or relay, RTT, traffic, handshake, reason.

    One line per peer when that fits in `width`; else related values are stacked; else plain lines.
    """
    wide = _table(
        ("PEER", False),
        ("OVERLAY IP", True),
        ("ETH0 IP", True),
        ("PUBLIC IP", True),
        ("PATH", True),
        ("RTT", True),
        ("RX", True),
        ("TX", True),
        ("HANDSHAKE", True),
        ("REASON", False),
    )
    narrow = _table(
        ("PEER\nOVERLAY IP", False),
        ("ETH0 IP\nPUBLIC IP", True),
        ("PATH", True),
        ("RTT\nHANDSHAKE", True),
        ("RX\nTX", True),
        ("REASON", False),
    )
    for peer in node.peers:
        wide.add_row(
            _name(peer.name),
            cell(peer.overlay_ip),
            cell(peer.eth0_ip),
            cell(peer.public_ip),
            _path(peer, " "),
            cell(rtt(peer.rtt_ms)),
            cell(human_bytes(peer.rx_bytes)),
            cell(human_bytes(peer.tx_bytes)),
            cell(age(peer.last_handshake, now)),
            cell(peer.reason),
        )
        narrow.add_row(
            _name(peer.name, peer.overlay_ip),
            Text(f"{dash(peer.eth0_ip)}\n{dash(peer.public_ip)}"),
            _path(peer, "\n"),
            Text(f"{rtt(peer.rtt_ms)}\n{age(peer.last_handshake, now)}"),
            Text(f"{human_bytes(peer.rx_bytes)}\n{human_bytes(peer.tx_bytes)}"),
            cell(peer.reason),
        )

    def lines() -> RenderableType:
        out: list[RenderableType] = []
        for peer in node.peers:
            head = _name(peer.name)
            head.append("  ")
            head.append_text(_path(peer, " "))
            out.append(head)
            out.append(
                Text(
                    f"  overlay {dash(peer.overlay_ip)}  eth0 {dash(peer.eth0_ip)}  public {dash(peer.public_ip)}"
                )
            )
            out.append(
                Text(
                    f"  rtt {rtt(peer.rtt_ms)}  rx {human_bytes(peer.rx_bytes)}  "
                    f"tx {human_bytes(peer.tx_bytes)}  handshake {age(peer.last_handshake, now)}"
                )
            )
            if peer.reason:
                out.append(Text(f"  reason {dash(peer.reason)}"))
        return Group(*out)

    return _pick(width, wide, narrow, lines)


def routed_as(prefix: Prefix, alias: Prefix | None) -> str:
    """A prefix as the other sites reach it: `172.31.0.0/16 as 10.201.0.0/16` when it has an alias."""
    return str(prefix) if alias is None else f"{prefix} as {alias}"


def route_detail_text(prefix: Prefix, reason: str, conflicts_with: str | None) -> str:
    """The reason without the prefix it starts with, and the route it collides with if not named."""
    detail = reason.removeprefix(f"{prefix} ")
    if conflicts_with and conflicts_with.partition("@")[0] not in detail:
        detail = f"{detail} (with {conflicts_with})" if detail else f"with {conflicts_with}"
    return detail


def route_detail(route: RouteView) -> str:
    """The detail column of a route, with who approved it (a rejection's reason names who rejected it)."""
    detail = route_detail_text(route.prefix, route.reason, route.conflicts_with)
    if route.decided_by is None or route.state == "rejected":
        return detail
    approved = f"approved by {route.decided_by}"
    return f"{detail}; {approved}" if detail else approved


def _by_gateway(routes: Sequence[RouteView]) -> list[tuple[str, list[RouteView]]]:
    ordered = sorted(routes, key=lambda r: r.gateway)  # stable: prefix order kept within a gateway
    return [(gw, list(group)) for gw, group in groupby(ordered, key=lambda r: r.gateway)]


def _heading(gateway: str, routes: Sequence[RouteView], notes: Mapping[str, str]) -> Text:
    text = Text(dash(gateway), style="bold")
    note = notes.get(gateway)
    text.append(f"  {dash(note)}" if note else "", style="dim")
    text.append(f"  {len(routes)} route{'s' if len(routes) != 1 else ''}", style="dim")
    return text


def routes_table(
    routes: Sequence[RouteView], width: int = 80, notes: Mapping[str, str] | None = None
) -> RenderableType:
    """Routes grouped by gateway (a heading each, with `notes[gateway]`), sorted by prefix within.

    The prefix and state columns are as wide as their longest value in every group, so the groups
    line up and no prefix is ever cut; the detail wraps. On a console too narrow even for that, each
    route takes its own line with the detail below.
    """
    if not routes:
        return Text("no routes advertised", style="dim")
    notes = notes or {}
    groups = _by_gateway(routes)
    prefix_w = max(len(routed_as(r.prefix, r.alias)) for r in routes)
    state_w = max(len(r.state) for r in routes)
    detail_w = width - ROUTE_INDENT - prefix_w - state_w - 4  # two spaces between columns
    if detail_w < DETAIL_MIN:
        return _routes_lines(groups, notes)
    header = " " * ROUTE_INDENT + f"{'PREFIX':<{prefix_w}}  {'STATE':<{state_w}}  DETAIL"
    parts: list[RenderableType] = [Text(header, style="bold")]
    for gateway, group in groups:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), pad_edge=False)
        table.add_column("PREFIX", width=prefix_w, no_wrap=True)
        table.add_column("STATE", width=state_w, no_wrap=True)
        table.add_column("DETAIL", max_width=detail_w, overflow="fold")
        for route in group:
            table.add_row(
                cell(routed_as(route.prefix, route.alias)),
                Text(route.state, style=STATE_STYLE.get(route.state, "")),
                Text(escape(route_detail(route))),
            )
        parts += [_heading(gateway, group, notes), Padding(table, (0, 0, 0, ROUTE_INDENT), expand=False)]
    return Group(*parts)


def _routes_lines(
    groups: Sequence[tuple[str, Sequence[RouteView]]], notes: Mapping[str, str]
) -> RenderableType:
    """For consoles too narrow for the table: each route on its own line, the detail below it."""
    lines: list[RenderableType] = []
    for gateway, group in groups:
        lines.append(_heading(gateway, group, notes))
        for route in group:
            line = Text(f"  {routed_as(route.prefix, route.alias)} ")
            line.append(route.state, style=STATE_STYLE.get(route.state, ""))
            lines.append(line)
            detail = route_detail(route)
            if detail:
                lines.append(Text(f"    {escape(detail)}", style="dim"))
    return Group(*lines)


def ha_health(member: TopologyHaMember) -> Text:
    """A member with the other agents' verdicts on it: `gw2 up 3/4`, red when some see it down, and
    `offline` when the coordinator has not heard from it."""
    h = member.health
    seen = h.up + h.down + h.unknown
    text = Text(dash(member.node), style="bold" if member.role == "primary" else "")
    if seen:
        text.append(f" up {h.up}/{seen}", style="red" if h.down else "green" if h.up == seen else "yellow")
    else:
        text.append(" no reports", style="dim")
    if not member.online:
        text.append(" offline", style="red")
    return text


def failover_text(move: HaFailover | None, now: datetime) -> Text:
    """`3m ago vm1: gw2 → gw2b (holder_down: why)`; an em dash when no agent reported a move."""
    if move is None:
        return Text(DASH)
    why = f"{move.code}: {move.reason}" if move.reason else move.code
    return Text(
        f"{age(move.at, now)} {dash(move.reported_by)}: {dash(move.moved_from)} → {dash(move.holder)} ({dash(why)})"
    )


def ha_groups_table(groups: Sequence[TopologyHaGroup], now: datetime, width: int = 80) -> RenderableType:
    """One row per HA group: prefix, site, primary, standbys in order (each with the other agents'
    verdicts), which agents send the prefix to which member, and the last failover. Names and prefixes
    are never cut: on a console too narrow for that, each group takes a few lines instead."""
    if not groups:
        return Text("no HA groups", style="dim")
    table = _table(
        ("PREFIX", True),
        ("SITE", True),
        ("PRIMARY", True),
        ("STANDBYS", True),
        ("CARRIED-BY", True),
        ("LAST FAILOVER", False),
    )
    table.columns[-1].min_width = FAILOVER_MIN  # a move folded into a sliver reads worse than lines
    for group in groups:
        primary, *standbys = group.members
        carried = "\n".join(
            f"{dash(m.node)} ← {', '.join(dash(a) for a in m.carried_by)}"
            for m in group.members
            if m.carried_by
        )
        table.add_row(
            cell(group.prefix),
            cell(group.site),
            ha_health(primary),
            Text("\n").join(ha_health(m) for m in standbys),
            Text(carried or DASH),
            failover_text(group.last_failover, now),
        )
    return table if _widths(table)[0] <= width else _ha_lines(groups, now)


def _ha_lines(groups: Sequence[TopologyHaGroup], now: datetime) -> RenderableType:
    """For consoles too narrow for the table: a group's heading, then a line per member, then its move."""
    lines: list[RenderableType] = []
    for group in groups:
        lines.append(Text(f"{group.prefix}  site {dash(group.site)}", style="bold"))
        for member in group.members:
            line = Text(f"  {member.role} ").append_text(ha_health(member))
            if member.carried_by:
                line.append(f" ← {', '.join(dash(a) for a in member.carried_by)}")
            lines.append(line)
        lines.append(Text("  last failover"))
        lines.append(Padding(failover_text(group.last_failover, now), (0, 0, 0, 4)))
    return Group(*lines)


def warnings_block(warnings: Sequence[str]) -> RenderableType:
    """The warnings, one per line; a quiet line when there are none."""
    if not warnings:
        return Text("no warnings", style="dim")
    text = Text()
    for i, warning in enumerate(warnings):
        text.append(("\n" if i else "") + "! ", style="bold yellow")
        text.append(escape(warning))
    return text


def liveness(node: NodeView, now: datetime, static: bool = False) -> str:
    """`online`, `static`, `never seen` or `last seen 5m ago`."""
    if node.online:
        return "online"
    if node.last_seen is None:
        return "static" if static else "never seen"
    return f"last seen {age(node.last_seen, now)}"


def gateway_notes(nodes: Sequence[NodeView], now: datetime, static: Collection[str] = ()) -> dict[str, str]:
    """Per node, its overlay IP and liveness, for the route table's group headings."""
    return {n.name: f"{n.overlay_ip}  {liveness(n, now, n.name in static)}" for n in nodes}


def status_screen(
    view: StatusView, now: datetime, width: int = 80, static: Collection[str] = ()
) -> RenderableType:
    """`wgmesh status`: nodes (the coordinators their agents follow, the versions they run), then routes,
    the HA groups (when there are any), then warnings."""
    followed = coordinators_line(view.nodes)
    running = agent_versions_line(view.nodes, static)
    return Group(
        Text("Nodes", style="bold underline"),
        nodes_table(view.nodes, now, width, static) if view.nodes else Text("no nodes enrolled", style="dim"),
        *([followed] if followed is not None else []),
        *([running] if running is not None else []),
        Text(""),
        Text("Routes", style="bold underline"),
        routes_table(view.routes, width, gateway_notes(view.nodes, now, static)),
        Text(""),
        *(
            (Text("HA groups", style="bold underline"), ha_groups_table(view.ha_groups, now, width), Text(""))
            if view.ha_groups
            else ()
        ),
        Text("Warnings", style="bold underline"),
        warnings_block(view.warnings),
    )


def coordinators_line(nodes: Sequence[NodeView]) -> Text | None:
    """`agents follow URL (gw1, gw3); URL (gw2)`: which coordinator each agent long-polls, as it last
    reported; None when no agent reported one (agents before issue 17)."""
    by_url: dict[str, list[str]] = {}
    for node in nodes:
        if node.coordinator is not None:
            by_url.setdefault(node.coordinator, []).append(node.name)
    if not by_url:
        return None
    parts = [f"{url} ({', '.join(names)})" for url, names in sorted(by_url.items())]
    return Text(f"agents follow {'; '.join(parts)}", style="dim")


def agent_versions_line(nodes: Sequence[NodeView], static: Collection[str] = ()) -> Text | None:
    """`agents run 0.2.0 (gw1, gw3); 0.1.9 (gw2); unknown (gw4)`: the version each node's agent runs, as it
    last reported, the newest first; `unknown` for nodes whose report names none (sent by another client, stored before 0.2.0, or no
    report yet);
    None when no agent reported one. Static peers (`static`, by name) run no agent."""
    by_version: dict[str | None, list[str]] = {}
    for node in nodes:
        if node.name not in static:
            by_version.setdefault(node.agent_version, []).append(node.name)
    known = [v for v in by_version if v is not None]
    if not known:
        return None
    # Ordered as versions (0.10 after 0.9), those that are none (not a version) after them.
    known.sort(key=lambda v: (versions.version_key(v) or ((), -1), v), reverse=True)
    parts = [f"{dash(v)} ({', '.join(dash(n) for n in by_version[v])})" for v in known]
    if None in by_version:
        parts.append(f"unknown ({', '.join(dash(n) for n in by_version[None])})")
    return Text(f"agents run {'; '.join(parts)}", style="dim")


def node_screen(node: NodeView, now: datetime, width: int = 80, static: bool = False) -> RenderableType:
    """`wgmesh status NODE`: a heading with the node's own addresses, then its peers."""
    head = Text(dash(node.name), style="bold")
    head.append(
        f"  {dash(node.overlay_ip)}  eth0 {dash(node.eth0_ip)}  public {dash(node.public_ip)}  p2p {node.p2p}  "
        f"mtu {dash(node.mtu)}  "
    )
    if node.coordinator is not None:
        head.append(f"coordinator {node.coordinator}  ")
    if node.agent_version is not None:
        head.append(f"agent {dash(node.agent_version)}  ")
    head.append(liveness(node, now, static))
    body: RenderableType = peers_table(node, now, width) if node.peers else Text("no peers", style="dim")
    return Group(head, Text(""), body)


# --- the summary of a large network and its pages (issue 19) -------------------------------------------

PROBLEM_LABEL: dict[TopologyProblem, str] = {
    "offline": "offline",
    "links_down": "links down",
    "relayed": "relayed links",
    "conflicts": "route conflicts",
}
PROBLEM_UNIT = {"offline": "nodes", "links_down": "links", "relayed": "links", "conflicts": "routes"}
SITES_SHOWN = 10  # sites in the summary, those with the most problems first; --nodes --site lists any


def _counts(counts: Mapping[str, int] | Mapping[RouteState, int]) -> str:
    shown = [f"{n} {state}" for state, n in counts.items() if n]
    return ", ".join(shown) if shown else "none"


def _group_table(groups: Sequence[TopologyGroup], title: str) -> Table:
    table = _table(
        (title, True),
        ("NODES", True),
        ("OFFLINE", True),
        *((PROBLEM_LABEL[p].upper(), True) for p in PROBLEM_LABEL if p != "offline"),
    )
    for g in groups:
        table.add_row(
            cell(g.value),
            str(g.nodes.total),
            Text(str(g.nodes.offline), style="red" if g.nodes.offline else ""),
            *(
                Text(str(g.problems[p]), style="yellow" if g.problems[p] else "")
                for p in PROBLEM_LABEL
                if p != "offline"
            ),
        )
    return table


def _problem_weight(g: TopologyGroup) -> int:
    return sum(g.problems.values())


def summary_screen(summary: TopologySummary) -> RenderableType:
    """`wgmesh status` of a large network: counts, the problems with the command that lists them, the
    groups by tag and the sites with the most problems, and how to see details."""
    total_links = sum(summary.links.model_dump().values())
    net = summary.network
    head = Text(f"{dash(net.name)}  {net.overlay_cidr}  version {summary.version}", style="bold")
    counts = Table.grid(padding=(0, 2))
    counts.add_row(
        "Nodes", f"{summary.nodes.total} ({summary.nodes.online} online, {summary.nodes.offline} offline)"
    )
    counts.add_row("Links", f"{total_links}: {_counts(summary.links.model_dump())}")
    counts.add_row("Routes", f"{sum(summary.routes.values())}: {_counts(summary.routes)}")
    counts.add_row("HA groups", str(summary.ha_groups))
    counts.add_row("Warnings", _counts(summary.warnings))
    problems = Table.grid(padding=(0, 2))
    for p in summary.problems:
        if p.count:
            problems.add_row(
                Text(PROBLEM_LABEL[p.problem], style="bold yellow"),
                f"{p.count} nodes"
                if PROBLEM_UNIT[p.problem] == "nodes"
                else f"{p.count} {PROBLEM_UNIT[p.problem]} on {p.nodes} nodes",
                Text(f"wgmesh status --nodes --problem {p.problem}", style="dim"),
            )
    parts: list[RenderableType] = [head, counts, Text(""), Text("Problems", style="bold underline")]
    parts.append(problems if problems.row_count else Text("no problems", style="dim"))
    if summary.tags:
        parts += [Text(""), Text("By tag", style="bold underline"), _group_table(summary.tags, "TAG")]
    troubled = sorted(
        (g for g in summary.sites if _problem_weight(g)), key=lambda g: (-_problem_weight(g), g.value)
    )
    if troubled:
        parts += [
            Text(""),
            Text("Sites with problems", style="bold underline"),
            _group_table(troubled[:SITES_SHOWN], "SITE"),
        ]
        if len(troubled) > SITES_SHOWN:
            parts.append(Text(f"+{len(troubled) - SITES_SHOWN} more sites with problems", style="dim"))
    parts += [
        Text(""),
        Text(
            "Details: wgmesh status --nodes [--tag T] [--site S] [--problem P] | --problems | --links NODE | --all",
            style="dim",
        ),
    ]
    return Group(*parts)


def _links_cell(links: LinkCounts) -> Text:
    text = Text(f"{links.direct} direct")
    for n, label, style in (
        (links.tcp_direct, "tcp-direct", "cyan"),
        (links.relay, "relay", "yellow"),
        (links.down, "down", "red"),
        (links.unknown, "unknown", "dim"),
    ):
        if n:
            text.append(", ").append(f"{n} {label}", style=style)
    return text


def _more(shown: int, offset: int, total: int, what: str) -> Text:
    if not total:
        return Text(f"no {what}", style="dim")
    line = (
        f"{what} {offset + 1}-{offset + shown} of {total}"
        if shown
        else f"no {what} from {offset + 1} (of {total})"
    )
    if offset + shown < total:
        line += f"; the next page: --offset {offset + shown}"
    return Text(line, style="dim")


def node_page_screen(page: TopologyNodePage, now: datetime) -> RenderableType:
    """`wgmesh status --nodes`: one page of nodes with their links by state and their problems."""
    table = _table(
        ("NAME", True),
        ("SITE", True),
        ("STATUS", False),
        ("OVERLAY IP", True),
        ("LINKS", False),
        ("PROBLEMS", False),
        ("AGENT", True),
    )
    for r in page.nodes:
        status = (
            Text("online", style="green")
            if r.online
            else (
                Text("static", style="dim")
                if r.static
                else Text("never" if r.last_seen is None else age(r.last_seen, now), style="red")
            )
        )
        table.add_row(
            Text(dash(r.name), style="bold"),
            cell(r.site),
            status,
            cell(r.overlay_ip),
            _links_cell(r.links),
            Text(
                ", ".join(PROBLEM_LABEL[p] for p in r.problems) or DASH, style="yellow" if r.problems else ""
            ),
            # As the dashboard and `nodes show` say it; a static peer runs no agent.
            cell(r.agent_version or (None if r.static else "unknown")),
        )
    return Group(table, _more(len(page.nodes), page.offset, page.total, "nodes"))


def link_page_screen(page: TopologyLinkPage, now: datetime) -> RenderableType:
    """`wgmesh status --links NODE`: one page of the node's links."""
    table = _table(
        ("PEER", True),
        ("PATH", False),
        ("RTT", True),
        ("HANDSHAKE", False),
        ("RX", True),
        ("TX", True),
        ("P2P", False),
    )
    for lk in page.links:
        table.add_row(
            Text(dash(lk.b), style="bold"),
            Text(lk.path, style=PATH_STYLE[lk.path]),
            rtt(lk.rtt_ms),
            age(lk.last_handshake, now),
            human_bytes(lk.rx_bytes),
            human_bytes(lk.tx_bytes),
            _p2p(lk.p2p),
        )
    return Group(
        Text(f"Links of {dash(page.node)}", style="bold"),
        table,
        _more(len(page.links), page.offset, page.total, "links"),
    )


def problem_pages_screen(pages: Mapping[TopologyProblem, TopologyNodePage], now: datetime) -> RenderableType:
    """`wgmesh status --problems`: for each problem, a page of the nodes that have it."""
    parts: list[RenderableType] = []
    for problem, page in pages.items():
        parts += [Text(f"{PROBLEM_LABEL[problem].capitalize()} ({page.total} nodes)", style="bold underline")]
        if page.nodes:
            parts.append(node_page_screen(page, now))
        else:
            parts.append(Text("none", style="dim"))
        parts.append(Text(""))
    return Group(*parts)
