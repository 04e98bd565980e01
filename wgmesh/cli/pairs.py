"""`wgmesh pair` (alias `pairs`): the P2P switch of one node pair."""

from __future__ import annotations

import argparse
from typing import get_args

from rich import box
from rich.table import Table
from rich.text import Text

from wgmesh.cli import connection
from wgmesh.cli.common import CommandGroup, Subparsers, node_ref, print_json, rate_arg, stdout
from wgmesh.cli.connection import segment
from wgmesh.errors import ValidationError
from wgmesh.models import PairList, PairPolicy
from wgmesh.values import P2PPolicy


def register(sub: Subparsers) -> None:
    """Add `wgmesh pair` and its commands."""
    group = CommandGroup(
        sub,
        "pair",
        default=cmd_list,
        aliases=["pairs"],
        help="per-pair overrides (P2P, bandwidth limit): set, clear, list",
        description="Overrides for node pairs. P2P 'off' on the network, either node or the pair "
        "sends the pair through the relay; --rate limits what each node sends the other. Without a "
        "command: list the overrides.",
    )

    p = group.command("set", cmd_set, help="set or clear a pair's P2P override or bandwidth limit")
    p.add_argument("a", type=node_ref, metavar="A", help="one node")
    p.add_argument("b", type=node_ref, metavar="B", help="the other node")
    p.add_argument(
        "--p2p",
        choices=[*get_args(P2PPolicy), "clear"],
        help="off: always relay; auto: direct when both nodes allow it; clear: remove the override",
    )
    p.add_argument(
        "--rate", type=rate_arg, metavar="RATE", help="limit each way, e.g. 20mbit; none removes it"
    )

    group.command("list", cmd_list, help="every pair with an override")


def cmd_set(args: argparse.Namespace) -> int:
    """`wgmesh pair set A B [--p2p auto|off|clear] [--rate RATE|none]`."""
    if args.a == args.b:
        raise ValidationError("a pair needs two different nodes", code="usage")
    body: dict[str, str | None] = {}
    if args.p2p is not None:
        body["p2p"] = None if args.p2p == "clear" else args.p2p
    if args.rate is not None:
        body["rate"] = None if args.rate == "none" else args.rate
    if not body:
        raise ValidationError("nothing to change: give --p2p and/or --rate", code="usage")
    with connection.connect(args) as client:
        result = client.call_optional(
            "PUT", f"/api/v1/pairs/{segment(args.a)}/{segment(args.b)}", PairPolicy, json=body
        )
    if args.json:
        print_json(
            {
                "a": args.a,
                "b": args.b,
                "p2p": result.p2p if result else None,
                "rate": result.rate if result else None,
            }
        )
    elif result is None:
        stdout().print(f"cleared the overrides of {args.a} and {args.b}")
    else:
        stdout().print(
            f"{result.a} and {result.b}: p2p {result.p2p or 'not overridden'}, "
            f"rate limit {result.rate or 'none'} (pair overrides)"
        )
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
    for header in ("A", "B", "P2P", "RATE"):
        table.add_column(header, overflow="fold")
    for pair in sorted(pairs, key=lambda p: (p.a, p.b)):
        p2p = Text(pair.p2p or "—", style="yellow" if pair.p2p == "off" else "")
        table.add_row(pair.a, pair.b, p2p, pair.rate or "—")
    stdout().print(table)
    return 0
