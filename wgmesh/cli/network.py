"""`wgmesh network`: the network-wide settings (P2P policy, default tunnel MTU, the auto-approve rule,
the alias pool).

NetworkPatch also takes `listen_port`, but nothing reads the network's listen port (each node keeps the
one it enrolled with), so the CLI offers no flag that would look like it changes something.
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from rich.console import RenderableType
from rich.table import Table

from wgmesh.cli import connection
from wgmesh.cli.common import CommandGroup, Subparsers, mtu_arg, prefix_arg, prefixes_arg, print_json, stdout
from wgmesh.errors import ValidationError
from wgmesh.models import Network
from wgmesh.values import P2PPolicy


def register(sub: Subparsers) -> None:
    """Add `wgmesh network` and its commands."""
    group = CommandGroup(
        sub,
        "network",
        default=cmd_show,
        help="show and change the network-wide settings",
        description="The overlay network's settings. Without a command: show them.",
    )

    p = group.command(
        "show", cmd_show, help="name, overlay, P2P policy, default tunnel MTU, auto-approve rule"
    )

    p = group.command(
        "set",
        cmd_set,
        help="change the P2P policy, the default tunnel MTU or the auto-approve rule",
        description="Change network-wide settings. --p2p off sends every pair through the relay. "
        "--mtu is every node's tunnel MTU unless the node has its own ceiling (`wgmesh node set "
        "--mtu`); each agent lowers its own to what its underlay carries. --auto-approve replaces the "
        "rule approving any node's routes inside the prefixes given (private, CGNAT and ULA space only; "
        "a route joining another gateway's prefix still waits for `wgmesh routes approve`).",
    )
    p.add_argument("--p2p", choices=get_args(P2PPolicy), help="auto: direct when possible; off: always relay")
    p.add_argument("--mtu", type=mtu_arg, metavar="BYTES", help="default tunnel MTU, 1280-9000")
    p.add_argument(
        "--auto-approve",
        type=prefixes_arg,
        metavar="PREFIX[,…]",
        help="approve every node's routes inside these prefixes; none clears the rule",
    )
    p.add_argument(
        "--alias-pool",
        type=pool_arg,
        metavar="PREFIX|none",
        help="give every prefix in conflict with another site's an alias from this pool, at once and "
        "from then on (aliases given stay when the pool changes); none removes the pool",
    )


def pool_arg(text: str) -> str:
    """argparse type of `--alias-pool`: a prefix, or `none` to remove the pool."""
    return "none" if text.strip().lower() == "none" else prefix_arg(text)


def network_detail(network: Network) -> RenderableType:
    """Every setting of the network, one per line."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in (
        ("name", network.name),
        ("overlay", str(network.overlay_cidr)),
        ("p2p", network.p2p),
        ("MTU", f"{network.mtu} (default tunnel MTU)"),
        ("auto-approve", ", ".join(str(p) for p in network.auto_approve) or "none"),
        ("alias pool", str(network.alias_pool) if network.alias_pool is not None else "none"),
    ):
        grid.add_row(label, value)
    return grid


def cmd_show(args: argparse.Namespace) -> int:
    """`wgmesh network [show]`."""
    with connection.connect(args) as client:
        network = client.get("/api/v1/network", Network)
    if args.json:
        print_json(network.model_dump(mode="json"))
    else:
        stdout().print(network_detail(network))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    """`wgmesh network set [--p2p auto|off] [--mtu BYTES] [--auto-approve PREFIX[,…]]`."""
    body: dict[str, Any] = {}
    if args.p2p is not None:
        body["p2p"] = args.p2p
    if args.mtu is not None:
        body["mtu"] = args.mtu
    if args.auto_approve is not None:
        body["auto_approve"] = args.auto_approve
    if args.alias_pool == "none":
        body["clear_alias_pool"] = True
    elif args.alias_pool is not None:
        body["alias_pool"] = args.alias_pool
    if not body:
        raise ValidationError(
            "nothing to change: give --p2p, --mtu, --auto-approve and/or --alias-pool", code="usage"
        )
    with connection.connect(args) as client:
        network = client.call("PATCH", "/api/v1/network", Network, json=body)
    if args.json:
        print_json(network.model_dump(mode="json"))
    else:
        rule = ", ".join(str(p) for p in network.auto_approve) or "none"
        pool = str(network.alias_pool) if network.alias_pool is not None else "none"
        stdout().print(
            f"network {network.name}: p2p {network.p2p}, MTU {network.mtu}, auto-approve {rule}, "
            f"alias pool {pool}"
        )
    return 0
