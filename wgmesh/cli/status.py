"""`wgmesh status [NODE]`: the topology listing, or one node's peers, from the coordinator; above
FULL_VIEW_MAX nodes (the coordinator's summary says `view: summary`) a summary first, details on request."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from rich.console import RenderableType

from wgmesh.agent.local_status import SOCKET_NAME, read_local_status
from wgmesh.cli import connection, render
from wgmesh.cli.common import Subparsers, add_json_flag, node_ref, print_json, stdout
from wgmesh.cli.local import show_local_status
from wgmesh.cli.view import node_view, status_view
from wgmesh.errors import ValidationError
from wgmesh.models import Topology, TopologyLinkPage, TopologyNode, TopologyNodePage, TopologySummary
from wgmesh.topology_summary import LINK_STATES, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, PROBLEMS

PROBLEM_PAGE = 20  # nodes per problem in --problems


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
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--summary", action="store_true", help="counts, problems and groups (the default above 50 nodes)"
    )
    shown.add_argument(
        "--all", action="store_true", help="every node, route and warning (the default up to 50 nodes)"
    )
    shown.add_argument("--nodes", action="store_true", help="a page of nodes with their links by state")
    shown.add_argument("--problems", action="store_true", help="the nodes of each problem (a page each)")
    shown.add_argument("--links", type=node_ref, metavar="NODE", help="a page of NODE's links")
    p.add_argument("--tag", help="with --nodes: only nodes with this tag (region:eu-west-1)")
    p.add_argument("--site", help="with --nodes: only nodes of this site")
    p.add_argument("--problem", choices=PROBLEMS, help="with --nodes: only nodes with this problem")
    p.add_argument("--name", help="with --nodes: only nodes whose name contains this")
    p.add_argument("--state", choices=LINK_STATES, help="with --links: only links in this state")
    p.add_argument("--offset", type=int, default=0, help="with --nodes, --links: skip this many (default 0)")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"with --nodes, --links: this many (default {PAGE_LIMIT_DEFAULT}, at most {PAGE_LIMIT_MAX}; "
        "--problems: 20 per problem)",
    )
    add_json_flag(p)
    connection.add_arguments(p)
    p.set_defaults(func=cmd_status)


def _check_flags(p: argparse.Namespace) -> None:
    """Filters only with the listing they filter."""
    if not p.nodes and any(getattr(p, f) is not None for f in ("tag", "site", "problem", "name")):
        raise ValidationError("--tag, --site, --problem and --name filter --nodes")
    if p.links is None and p.state is not None:
        raise ValidationError("--state filters --links")
    if not (p.nodes or p.links is not None or p.problems) and (p.offset or p.limit is not None):
        raise ValidationError("--offset and --limit page --nodes, --links and --problems")
    if p.node is not None and (p.summary or p.nodes or p.problems or p.links is not None):
        raise ValidationError(
            "NODE shows one node's peers: leave out --summary, --nodes, --problems, --links"
        )


def load(client: connection.AdminClient) -> Topology:
    """The topology, with what the nodes' status reports say joined in by the coordinator."""
    return client.get("/api/v1/topology", Topology)


Screen = Callable[[datetime], RenderableType]


def _details(client: connection.AdminClient, args: argparse.Namespace) -> tuple[Any, Screen] | None:
    """What --summary, --nodes, --problems or --links asks for: its JSON and its screen; None for the
    listing."""
    limit = args.limit
    if args.summary:
        summary = client.get("/api/v1/topology/summary", TopologySummary)
        return summary.model_dump(mode="json"), lambda now: render.summary_screen(summary)
    if args.nodes:
        query = {"tag": args.tag, "site": args.site, "problem": args.problem, "name": args.name}
        page = client.get(_path("/api/v1/topology/nodes", query, args.offset, limit), TopologyNodePage)
        return page.model_dump(mode="json"), lambda now: render.node_page_screen(page, now)
    if args.links is not None:
        path = f"/api/v1/topology/nodes/{quote(args.links, safe='')}/links"
        links = client.get(_path(path, {"state": args.state}, args.offset, limit), TopologyLinkPage)
        return links.model_dump(mode="json"), lambda now: render.link_page_screen(links, now)
    if args.problems:
        pages = {
            p: client.get(
                _path("/api/v1/topology/nodes", {"problem": p}, args.offset, limit or PROBLEM_PAGE),
                TopologyNodePage,
            )
            for p in PROBLEMS
        }

        def screen(now: datetime) -> RenderableType:
            return render.problem_pages_screen(pages, now)

        return {p: page.model_dump(mode="json") for p, page in pages.items()}, screen
    return None


def _path(path: str, query: dict[str, str | None], offset: int, limit: int | None) -> str:
    params = {k: v for k, v in query.items() if v is not None}
    params["offset"] = str(offset)
    if limit is not None:
        params["limit"] = str(limit)
    return f"{path}?{urlencode(params)}"


def cmd_status(args: argparse.Namespace) -> int:
    """`wgmesh status [NODE]`."""
    if args.local:
        show_local_status(read_local_status(Path(args.state_dir) / SOCKET_NAME), as_json=args.json)
        return 0
    _check_flags(args)
    now = datetime.now(UTC)
    console = stdout()
    with connection.connect(args) as client:
        detail = _details(client, args)
        if detail is not None:
            if args.json:
                print_json(detail[0])
            else:
                console.print(detail[1](now))
            return 0
        if args.node is not None:
            # That node alone: the coordinator joins its peers without drawing the whole mesh.
            found = client.get(f"/api/v1/topology/nodes/{quote(args.node, safe='')}", TopologyNode)
            node = node_view(found)
            if args.json:
                print_json(node.model_dump(mode="json"))
            else:
                console.print(render.node_screen(node, now, console.width, found.static))
            return 0
        # Today's listing for --all and --json (its contract), and for a network the coordinator draws
        # whole; else the summary.
        if not (args.all or args.json):
            summary = client.get("/api/v1/topology/summary", TopologySummary)
            if summary.view == "summary":
                console.print(render.summary_screen(summary))
                return 0
        topology = load(client)
    view = status_view(topology)
    if args.json:
        print_json(view.model_dump(mode="json"))
    else:
        static = {n.name for n in topology.nodes if n.static}
        console.print(render.status_screen(view, now, console.width, static))
    return 0
