"""`wgmesh nodes` (alias `node`): list, show, add a static peer, change, rotate keys, remove."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, get_args

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from wgmesh.cli import connection, render
from wgmesh.cli.common import (
    CommandGroup,
    Subparsers,
    mtu_or_none_arg,
    node_ref,
    print_json,
    rate_arg,
    stderr,
    stdout,
)
from wgmesh.cli.connection import segment
from wgmesh.errors import NotFoundError, ValidationError, WgmeshError
from wgmesh.models import Network, Node, NodeList, NodeStatus, Route, RouteList
from wgmesh.netmap import effective_mtu
from wgmesh.values import P2PPolicy


def register(sub: Subparsers) -> None:
    """Add `wgmesh nodes` and its commands."""
    group = CommandGroup(
        sub,
        "nodes",
        default=cmd_list,
        aliases=["node"],
        help="list, show, add, change and remove nodes",
        description="Nodes of the mesh. Without a command: list them.",
    )

    p = group.command("list", cmd_list, help="one line per node")

    p = group.command("show", cmd_show, help="everything the coordinator knows about one node")
    p.add_argument("node", type=node_ref, metavar="NODE", help="node name or id")

    p = group.command(
        "add",
        cmd_add,
        help="add a static peer (a device without an agent; see `wgmesh export`)",
        description="Add a static peer. By default the coordinator generates its key pair, and "
        "`wgmesh export NAME` writes its wg-quick file; with --public-key the device keeps its own.",
    )
    p.add_argument("name", type=node_ref, metavar="NAME", help="node name (a hostname label)")
    p.add_argument("--public-key", metavar="KEY", help="the device's own public key (base64)")
    p.add_argument("--subnet", action="append", default=[], metavar="CIDR", help="advertised subnet")
    p.add_argument(
        "--endpoint", action="append", default=[], metavar="ADDR:PORT", help="where peers reach it"
    )
    p.add_argument("--listen-port", type=int, default=51820, metavar="PORT", help="default 51820")
    p.add_argument("--p2p", choices=get_args(P2PPolicy), default="auto", help="P2P policy (default auto)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag (repeatable)")

    p = group.command(
        "set",
        cmd_set,
        help="change a node's P2P policy, tags, bandwidth limit or MTU ceiling",
        description="Change a node. --tag replaces the node's tags with those given. --rate limits what "
        "the node sends into the mesh (its WireGuard interface's egress); --rate none removes the limit. "
        "--mtu gives the node its own tunnel MTU ceiling instead of the network's default (its agent may "
        "still go lower to fit its underlay); --mtu none goes back to the network's default.",
    )
    p.add_argument("node", type=node_ref, metavar="NODE", help="node name or id")
    p.add_argument("--p2p", choices=get_args(P2PPolicy), help="auto: direct when possible; off: always relay")
    p.add_argument("--rate", type=rate_arg, metavar="RATE", help="egress limit, e.g. 50mbit; none removes it")
    p.add_argument(
        "--mtu",
        type=mtu_or_none_arg,
        metavar="BYTES",
        help="tunnel MTU ceiling, 1280-9000; none: the network's default",
    )
    tags = p.add_mutually_exclusive_group()
    tags.add_argument("--tag", action="append", metavar="TAG", help="set the tags (repeatable)")
    tags.add_argument("--clear-tags", action="store_true", help="remove every tag")

    p = group.command(
        "rotate",
        cmd_rotate,
        help="rotate a node's WireGuard key and credential (its agent does it, without downtime)",
        description="Ask a node's agent for a new WireGuard key and credential: it makes the key, the "
        "coordinator gives its peers the new key in their netmaps and the old credential stops working "
        "at the agent's next call. A static peer whose keys the coordinator made gets new keys at once: "
        "export its configuration again. With --wait, wait until the agent has rotated.",
    )
    p.add_argument("node", type=node_ref, metavar="NODE", help="node name or id")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for the agent to rotate (default: do not wait)",
    )

    p = group.command(
        "rm",
        cmd_rm,
        aliases=["remove"],
        help="remove a node with its routes and credentials",
        description="Remove a node. Asks for confirmation on a terminal; elsewhere needs --yes.",
    )
    p.add_argument("node", type=node_ref, metavar="NODE", help="node name or id")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")


def _path(ref: str) -> str:
    return f"/api/v1/nodes/{segment(ref)}"


def _dump(node: Node) -> dict[str, Any]:
    return node.model_dump(mode="json")


# --- list and show ------------------------------------------------------------------------------


def mtu_text(node: Node, network: Network) -> str:
    """The node's effective tunnel MTU, and where it comes from unless it is the network's default:
    `(node)` for the node's own ceiling, `(underlay)` when its agent reported less room than that."""
    ceiling = node.mtu if node.mtu is not None else network.mtu
    effective = effective_mtu(network, node)
    if effective < ceiling:
        return f"{effective} (underlay)"
    return f"{effective} (node)" if node.mtu is not None else str(effective)


def nodes_table(nodes: Sequence[Node], network: Network, now: datetime) -> RenderableType:
    """One line per node; MTU is the effective tunnel MTU the node's netmap carries."""
    if not nodes:
        return Text("no nodes", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    # SITE only when it says something: a node that names no site is a site of its own (its name).
    sites = any(n.site != n.name for n in nodes)
    for header, keep in (
        ("NAME", False),
        *((("SITE", False),) if sites else ()),
        ("ID", True),
        ("OVERLAY IP", True),
        ("KIND", True),
        ("SEEN", False),
        ("P2P", True),
        ("MTU", True),
        ("TAGS", False),
        ("SUBNETS", True),
    ):
        table.add_column(header, no_wrap=keep, overflow="fold", justify="right" if header == "ID" else "left")
    for node in nodes:
        seen = (
            "online"
            if node.online
            else ("never" if node.last_seen is None else render.age(node.last_seen, now))
        )
        table.add_row(
            Text(node.name, style="bold"),
            *((Text(node.site, style="dim" if node.site == node.name else ""),) if sites else ()),
            str(node.id),
            node.overlay_ip,
            "static" if node.static else "agent",
            Text(seen, style="green" if node.online else "red" if not node.static else "dim"),
            node.p2p,
            mtu_text(node, network),
            ", ".join(node.tags) or render.DASH,
            str(len(node.subnets)),
        )
    return table


def node_detail(
    node: Node, network: Network, routes: Sequence[Route], now: datetime, agent_version: str | None = None
) -> RenderableType:
    """Every field of a node, with the verdict on each of its subnets and the version its agent runs."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    states = {r.prefix: r for r in routes if r.gateway_id == node.id}
    subnets = Text()
    for i, prefix in enumerate(node.subnets):
        route = states.get(prefix)
        alias = route.alias if route is not None else None
        subnets.append(("\n" if i else "") + render.routed_as(prefix, alias))
        if route is not None:
            subnets.append(f"  {route.state}", style=render.STATE_STYLE.get(route.state, ""))
            detail = render.route_detail_text(route.prefix, route.reason, route.conflicting_with)
            subnets.append(f"  {detail}" if detail else "", style="dim")
    seen = "online" if node.online else "offline"
    if node.last_seen is not None:
        seen += f", last seen {render.age(node.last_seen, now)} ({node.last_seen.isoformat()})"
    # A static peer runs no agent; a report stored before 0.2.0 names no version.
    agent = [] if node.static else [("agent version", render.cell(agent_version or "unknown (not reported)"))]
    rows: list[tuple[str, str | Text]] = [
        ("name", node.name),
        ("site", node.site if node.site != node.name else f"{node.site} (its own)"),
        ("id", str(node.id)),
        ("kind", "static peer (keys generated by the coordinator)" if node.static else "agent"),
        *agent,
        ("public key", node.public_key),
        ("overlay IP", node.overlay_ip),
        ("eth0 IP", render.dash(node.eth0_ip)),
        ("public IP", render.dash(node.public_ip)),
        ("listen port", str(node.listen_port)),
        ("endpoints", "\n".join(map(str, node.endpoints)) or render.DASH),
        ("status", seen),
        ("p2p", node.p2p),
        ("rate limit", node.rate or render.DASH),
        ("MTU", mtu_text(node, network)),
        ("MTU ceiling", str(node.mtu) if node.mtu is not None else f"network default ({network.mtu})"),
        ("underlay max MTU", render.dash(node.max_mtu)),
        ("tags", ", ".join(node.tags) or render.DASH),
        ("created", node.created_at.isoformat()),
    ]
    if node.rotate_requested_at is not None:
        rows.append(("key rotation", f"requested {render.age(node.rotate_requested_at, now)}"))
    for label, value in rows:
        grid.add_row(label, value)
    grid.add_row("subnets", subnets if node.subnets else Text(render.DASH))
    return Group(grid)


def cmd_list(args: argparse.Namespace) -> int:
    """`wgmesh nodes [list]`."""
    with connection.connect(args) as client:
        nodes = client.get("/api/v1/nodes", NodeList).nodes
        network = None if args.json else client.get("/api/v1/network", Network)
    if network is None:
        print_json({"nodes": [_dump(n) for n in nodes]})
    else:
        stdout().print(nodes_table(nodes, network, datetime.now(UTC)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """`wgmesh nodes show NODE`."""
    with connection.connect(args) as client:
        node = client.get(_path(args.node), Node)
        if args.json:
            print_json(_dump(node))
            return 0
        routes = client.get("/api/v1/routes", RouteList).routes
        network = client.get("/api/v1/network", Network)
        version: str | None = None
        if not node.static:  # a static peer runs no agent and reports nothing
            # From its last report, as `wgmesh status NODE` shows it (the node itself holds no report); a node
            # that has not reported yet, or went meanwhile, just has no version to show.
            try:
                version = client.get(
                    f"/api/v1/nodes/{segment(node.name)}/status", NodeStatus
                ).report.agent_version
            except NotFoundError:
                version = None
    stdout().print(node_detail(node, network, routes, datetime.now(UTC), version))
    return 0


# --- add, set, rm -------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    """`wgmesh nodes add NAME`: a static peer."""
    body: dict[str, Any] = {
        "name": args.name,
        "listen_port": args.listen_port,
        "subnets": args.subnet,
        "endpoints": args.endpoint,
        "p2p": args.p2p,
        "tags": args.tag,
    }
    if args.public_key:
        body["public_key"] = args.public_key
    else:
        body["generate_keys"] = True
    with connection.connect(args) as client:
        node = client.call("POST", "/api/v1/nodes", Node, json=body)
    if args.json:
        print_json(_dump(node))
        return 0
    stdout().print(f"added static peer {node.name} (id {node.id}) with overlay IP {node.overlay_ip}")
    if not args.public_key:
        stderr().print(f"its keys are on the coordinator: `wgmesh export {node.name} -o {node.name}.conf`")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    """`wgmesh node set NODE --p2p … --tag …`."""
    body: dict[str, Any] = {}
    if args.p2p is not None:
        body["p2p"] = args.p2p
    if args.rate is not None:
        body["rate"] = None if args.rate == "none" else args.rate
    if args.mtu is not None:
        body["mtu"] = None if args.mtu == "none" else args.mtu
    if args.tag is not None:
        body["tags"] = args.tag
    elif args.clear_tags:
        body["tags"] = []
    if not body:
        raise ValidationError(
            "nothing to change: give --p2p, --rate, --mtu, --tag or --clear-tags", code="usage"
        )
    with connection.connect(args) as client:
        node = client.call("PATCH", _path(args.node), Node, json=body)
    if args.json:
        print_json(_dump(node))
    else:
        stdout().print(
            f"{node.name}: p2p {node.p2p}, rate limit {node.rate or 'none'}, "
            f"MTU ceiling {node.mtu or 'network default'}, tags {', '.join(node.tags) or render.DASH}"
        )
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    """`wgmesh nodes rotate NODE [--wait SECONDS]`."""
    if not 0 <= args.wait <= 3600:
        raise ValidationError("--wait must be between 0 and 3600 seconds", code="usage")
    with connection.connect(args) as client:
        before = client.get(_path(args.node), Node)
        node = client.call("POST", f"{_path(before.name)}/rotate-key", Node)
        deadline = time.monotonic() + args.wait
        while node.rotate_requested_at is not None and time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            node = client.get(_path(node.name), Node)
    if args.json:
        print_json(_dump(node))
    elif node.rotate_requested_at is None:
        stdout().print(f"{node.name}: new key {node.public_key}")
        if node.static:
            stderr().print(f"export its configuration again: `wgmesh export {node.name} -o {node.name}.conf`")
    else:
        stdout().print(f"{node.name}: key rotation requested; its agent rotates at its next netmap")
    if node.rotate_requested_at is not None and args.wait > 0:
        raise WgmeshError(
            f"{node.name}'s agent has not rotated its key within {args.wait:g} s (is it online?); "
            "the request stands",
            code="timeout",
        )
    return 0


def confirm(question: str) -> bool:
    """Ask on the terminal; True only for an explicit yes."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_rm(args: argparse.Namespace) -> int:
    """`wgmesh nodes rm NODE [--yes]`."""
    if not args.yes and not sys.stdin.isatty():
        raise ValidationError(
            f"refusing to remove {args.node} without confirmation: stdin is not a terminal; pass --yes",
            code="usage",
        )
    with connection.connect(args) as client:
        if not args.yes:
            node = client.get(_path(args.node), Node)
            subnets = f", {len(node.subnets)} subnet{'s' if len(node.subnets) != 1 else ''}"
            question = (
                f"Remove node {node.name} ({node.overlay_ip}{subnets if node.subnets else ''}) "
                "with its routes and credentials?"
            )
            if not confirm(question):
                raise WgmeshError("not removed", code="aborted")
            ref = node.name  # the node confirmed, even when NODE was an id
        else:
            ref = args.node
        removed = client.call("DELETE", _path(ref), Node)
    if args.json:
        print_json(_dump(removed))
    else:
        stdout().print(f"removed node {removed.name} ({removed.overlay_ip})")
    return 0
