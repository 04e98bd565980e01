"""`wgmesh routes`: every advertised subnet with its verdict, grouped by gateway; approve and reject."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.text import Text

from wgmesh.cli import connection, render
from wgmesh.cli.common import CommandGroup, Subparsers, call, node_ref, prefix_arg, print_json, stdout
from wgmesh.cli.status import load
from wgmesh.cli.view import RoutesView, route_views, status_view
from wgmesh.models import Route
from wgmesh.printable import escape


def register(sub: Subparsers) -> None:
    """Add `wgmesh routes` and its commands."""
    group = CommandGroup(
        sub,
        "routes",
        default=cmd_routes,
        help="advertised subnets by gateway (active, standby, conflict, pending, rejected, shadowed); "
        "approve, reject or alias them",
        description="Every advertised subnet, grouped by gateway and sorted by prefix, with its state, "
        "the reason, who decided and the route it collides with. 'pending': no rule approved it (public "
        "space, joining another gateway's prefix, or no token or network rule covers it) and it is in no "
        "netmap until an admin approves it. 'shadowed': active, but a node does not install it because "
        "it overlaps one of that node's local subnets. Then the HA groups: gateways of one site "
        "advertising the same prefix, the primary first, with the other agents' view of each, which "
        "agents send the prefix to which member, and the last failover. Without a command: list them.",
    )
    group.command("list", cmd_routes, help="every advertised subnet with its verdict (the default)")
    for verb, run, what in (
        ("approve", cmd_approve, "route it (needed outside private space and to join another gateway)"),
        ("reject", cmd_reject, "keep it out of every netmap while the node advertises it"),
    ):
        p = group.command(verb, run, help=f"{verb} a prefix a node advertises: {what}")
        p.add_argument(
            "prefix", type=prefix_arg, metavar="PREFIX", help="the advertised prefix, e.g. 10.1.0.0/16"
        )
        p.add_argument("--node", type=node_ref, required=True, metavar="NODE", help="the node advertising it")
        p.add_argument("--reason", default="", metavar="TEXT", help="why (shown with the route, audited)")
    p = group.command(
        "alias",
        cmd_alias,
        help="publish a prefix a node advertises under an alias of the same length (overlapping VPCs)",
        description="The other sites reach PREFIX at ALIAS: the node's agent translates between the two, "
        "host part kept (10.201.5.9 is 172.31.5.9), both ways, and traffic from that VPC leaves under "
        "the alias. Two VPCs of one CIDR both need one to reach each other. The alias is a route like "
        "any other: conflict-checked and carried in netmaps. --clear publishes the prefix at itself "
        "again (or at an alias from the network's pool while it is in conflict: `wgmesh network set "
        "--alias-pool`).",
    )
    p.add_argument(
        "prefix", type=prefix_arg, metavar="PREFIX", help="the advertised prefix, e.g. 172.31.0.0/16"
    )
    p.add_argument("--node", type=node_ref, required=True, metavar="NODE", help="the node advertising it")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--as", dest="alias", type=prefix_arg, metavar="ALIAS", help="e.g. 10.201.0.0/16")
    target.add_argument("--clear", action="store_true", help="publish the prefix at itself again")


def cmd_routes(args: argparse.Namespace) -> int:
    """`wgmesh routes [list]`."""
    with connection.connect(args) as client:
        topology = load(client)
    routes = route_views(topology.routes)
    if args.json:
        print_json(RoutesView(routes=routes, ha_groups=topology.ha_groups).model_dump(mode="json"))
        return 0
    console = stdout()
    now = datetime.now(UTC)
    static = {n.name for n in topology.nodes if n.static}
    notes = render.gateway_notes(status_view(topology).nodes, now, static)
    console.print(render.routes_table(routes, console.width, notes))
    if topology.ha_groups:
        console.print(Text(""))
        console.print(Text("HA groups", style="bold underline"))
        console.print(render.ha_groups_table(topology.ha_groups, now, console.width))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """`wgmesh routes approve PREFIX --node NODE`."""
    return _decide(args, "approve")


def cmd_reject(args: argparse.Namespace) -> int:
    """`wgmesh routes reject PREFIX --node NODE`."""
    return _decide(args, "reject")


def cmd_alias(args: argparse.Namespace) -> int:
    """`wgmesh routes alias PREFIX --node NODE (--as ALIAS | --clear)`."""
    body = {"prefix": args.prefix, "alias": None if args.clear else args.alias}
    route = call(args, "POST", f"/api/v1/nodes/{args.node}/routes/alias", Route, json=body)
    return _print_route(args, route)


def _decide(args: argparse.Namespace, verb: str) -> int:
    body = {"prefix": args.prefix, "reason": args.reason}
    route = call(args, "POST", f"/api/v1/nodes/{args.node}/routes/{verb}", Route, json=body)
    return _print_route(args, route)


def _print_route(args: argparse.Namespace, route: Route) -> int:
    if args.json:
        print_json(route.model_dump(mode="json"))
        return 0
    # Text, not markup: the reason is free text from an admin.
    line = Text(f"{route.prefix} at {route.gateway}")
    line.append(f" as {route.alias}" if route.alias is not None else "")
    line.append(": ")
    line.append(route.state, style=render.STATE_STYLE.get(route.state, ""))
    detail = render.route_detail_text(route.prefix, route.reason, route.conflicting_with)
    line.append(f" ({escape(detail)})" if detail else "")
    stdout().print(line)
    return 0
