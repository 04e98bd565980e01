"""`wgmesh status [NODE]`: the topology listing, or one node's peers, from the coordinator."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from wgmesh.agent.local_status import SOCKET_NAME, read_local_status
from wgmesh.cli import connection, render
from wgmesh.cli.common import Subparsers, add_json_flag, node_ref, print_json, stdout
from wgmesh.cli.local import show_local_status
from wgmesh.cli.view import node_view, status_view
from wgmesh.errors import NotFoundError
from wgmesh.models import Node, Topology


def register(sub: Subparsers) -> None:
    """Add `wgmesh status`."""
    p = sub.add_parser(
        "status",
        help="nodes, paths, routes and warnings of the mesh",
        description="Every node with its addresses, liveness, P2P policy, peers by path and subnets; "
        "then the route table and the warnings. With NODE: that node's peers.",
    )
    p.add_argument("node", nargs="?", type=node_ref, metavar="NODE", help="show this node's peers")
    p.add_argument(
        "--local",
        action="store_true",
        help="read the agent on this host over its unix socket (no coordinator)",
    )
    p.add_argument(
        "--state-dir", default="/var/lib/wgmesh-agent", help="with --local: the agent's state directory"
    )
    add_json_flag(p)
    connection.add_arguments(p)
    p.set_defaults(func=cmd_status)


def load(client: connection.AdminClient) -> Topology:
    """The topology, with what the nodes' status reports say joined in by the coordinator."""
    return client.get("/api/v1/topology", Topology)


def find_node(topology: Topology, ref: str) -> Node:
    """A node of the topology by name or numeric id, or NotFoundError."""
    for node in topology.nodes:
        if node.name == ref:
            return node
    for node in topology.nodes:
        if ref.isdigit() and node.id == int(ref):
            return node
    raise NotFoundError(f"no node named {ref!r}", code="unknown_node")


def cmd_status(args: argparse.Namespace) -> int:
    """`wgmesh status [NODE]`."""
    if args.local:
        show_local_status(read_local_status(Path(args.state_dir) / SOCKET_NAME), as_json=args.json)
        return 0
    with connection.connect(args) as client:
        topology = load(client)
    now = datetime.now(UTC)
    console = stdout()
    if args.node is not None:
        found = find_node(topology, args.node)
        node = node_view(topology, found.name)
        if args.json:
            print_json(node.model_dump(mode="json"))
        else:
            console.print(render.node_screen(node, now, console.width, found.static))
        return 0
    view = status_view(topology)
    if args.json:
        print_json(view.model_dump(mode="json"))
    else:
        static = {n.name for n in topology.nodes if n.static}
        console.print(render.status_screen(view, now, console.width, static))
    return 0
