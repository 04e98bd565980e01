"""`wgmesh routes`: every advertised subnet with its verdict, grouped by gateway."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from wgmesh.cli import connection, render
from wgmesh.cli.common import Subparsers, add_json_flag, print_json, stdout
from wgmesh.cli.status import load
from wgmesh.cli.view import RoutesView, route_views, status_view


def register(sub: Subparsers) -> None:
    """Add `wgmesh routes`."""
    p = sub.add_parser(
        "routes",
        help="advertised subnets by gateway: active, standby, conflict, rejected, shadowed",
        description="Every advertised subnet, grouped by gateway and sorted by prefix, with its state, "
        "the reason and the route it collides with. 'shadowed': active, but a node does not install "
        "it because it overlaps one of that node's local subnets.",
    )
    add_json_flag(p)
    connection.add_arguments(p)
    p.set_defaults(func=cmd_routes)


def cmd_routes(args: argparse.Namespace) -> int:
    """`wgmesh routes`."""
    with connection.connect(args) as client:
        topology = load(client)
    routes = route_views(topology.routes)
    if args.json:
        print_json(RoutesView(routes=routes).model_dump(mode="json"))
        return 0
    console = stdout()
    now = datetime.now(UTC)
    static = {n.name for n in topology.nodes if n.static}
    notes = render.gateway_notes(status_view(topology).nodes, now, static)
    console.print(render.routes_table(routes, console.width, notes))
    return 0
