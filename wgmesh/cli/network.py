"""`wgmesh network`: the network-wide settings (P2P policy, default tunnel MTU).

NetworkPatch also takes `listen_port`, but nothing reads the network's listen port (each node keeps the
one it enrolled with), so the CLI offers no flag that would look like it changes something.
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from rich.console import RenderableType
from rich.table import Table

from wgmesh.cli import connection
from wgmesh.cli.common import CommandGroup, Subparsers, mtu_arg, print_json, stdout
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

    p = group.command("show", cmd_show, help="name, overlay, P2P policy and default tunnel MTU")

    p = group.command(
        "set",
        cmd_set,
        help="change the P2P policy or the default tunnel MTU",
        description="Change network-wide settings. --p2p off sends every pair through the relay. "
        "--mtu is every node's tunnel MTU unless the node has its own ceiling (`wgmesh node set "
        "--mtu`); each agent lowers its own to what its underlay carries.",
    )
    p.add_argument("--p2p", choices=get_args(P2PPolicy), help="auto: direct when possible; off: always relay")
    p.add_argument("--mtu", type=mtu_arg, metavar="BYTES", help="default tunnel MTU, 1280-9000")


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
    """`wgmesh network set [--p2p auto|off] [--mtu BYTES]`."""
    body: dict[str, Any] = {}
    if args.p2p is not None:
        body["p2p"] = args.p2p
    if args.mtu is not None:
        body["mtu"] = args.mtu
    if not body:
        raise ValidationError("nothing to change: give --p2p and/or --mtu", code="usage")
    with connection.connect(args) as client:
        network = client.call("PATCH", "/api/v1/network", Network, json=body)
    if args.json:
        print_json(network.model_dump(mode="json"))
    else:
        stdout().print(f"network {network.name}: p2p {network.p2p}, MTU {network.mtu}")
    return 0
