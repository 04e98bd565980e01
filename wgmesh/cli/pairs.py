"""`wgmesh pair` (alias `pairs`): the P2P switch of one node pair."""

from __future__ import annotations

import argparse

from rich import box
from rich.table import Table
from rich.text import Text

from wgmesh.cli import connection
from wgmesh.cli.common import Subparsers, add_json_flag, node_ref, print_json, stdout
from wgmesh.cli.connection import segment
from wgmesh.errors import ValidationError
from wgmesh.models import PairList, PairPolicy


def register(sub: Subparsers) -> None:
    """Add `wgmesh pair` and its commands."""
    group = sub.add_parser(
        "pair",
        aliases=["pairs"],
        help="per-pair P2P overrides: set, clear, list",
        description="P2P overrides for node pairs. 'off' on the network, either node or the pair "
        "sends the pair through the relay. Without a command: list the overrides.",
    )
    add_json_flag(group)
    connection.add_arguments(group)
    group.set_defaults(func=cmd_list)
    cmds = group.add_subparsers(dest="pair_command", metavar="COMMAND")

    p = cmds.add_parser("set", help="set or clear the P2P override of a pair")
    p.add_argument("a", type=node_ref, metavar="A", help="one node")
    p.add_argument("b", type=node_ref, metavar="B", help="the other node")
    p.add_argument(
        "--p2p",
        required=True,
        choices=["auto", "off", "clear"],
        help="off: always relay; auto: direct when both nodes allow it; clear: remove the override",
    )
    _common(p)
    p.set_defaults(func=cmd_set)

    p = cmds.add_parser("list", help="every pair with an override")
    _common(p)
    p.set_defaults(func=cmd_list)


def _common(p: argparse.ArgumentParser) -> None:
    add_json_flag(p, nested=True)
    connection.add_arguments(p, nested=True)


def cmd_set(args: argparse.Namespace) -> int:
    """`wgmesh pair set A B --p2p auto|off|clear`."""
    if args.a == args.b:
        raise ValidationError("a pair needs two different nodes", code="usage")
    p2p = None if args.p2p == "clear" else args.p2p
    with connection.connect(args) as client:
        result = client.call_optional(
            "PUT", f"/api/v1/pairs/{segment(args.a)}/{segment(args.b)}", PairPolicy, json={"p2p": p2p}
        )
    if args.json:
        print_json({"a": args.a, "b": args.b, "p2p": result.p2p if result else None})
    elif result is None:
        stdout().print(f"cleared the P2P override of {args.a} and {args.b}")
    else:
        stdout().print(f"P2P between {result.a} and {result.b}: {result.p2p} (pair override)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """`wgmesh pair [list]`."""
    with connection.connect(args) as client:
        pairs = client.get("/api/v1/pairs", PairList).pairs
    if args.json:
        print_json({"pairs": [p.model_dump(mode="json") for p in pairs]})
        return 0
    if not pairs:
        stdout().print(Text("no pair overrides", style="dim"))
        return 0
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header in ("A", "B", "P2P"):
        table.add_column(header, overflow="fold")
    for pair in sorted(pairs, key=lambda p: (p.a, p.b)):
        table.add_row(pair.a, pair.b, Text(pair.p2p, style="yellow" if pair.p2p == "off" else ""))
    stdout().print(table)
    return 0
