"""`wgmesh`: the operator's command line, dispatching to one module per command group."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from wgmesh import __version__, logs
from wgmesh.cli import admin_tokens, audit, export, lab, network, nodes, pairs, routes, status, tokens
from wgmesh.cli.common import Handler, Parser, Subparsers
from wgmesh.entrypoint import run_console

PROG = "wgmesh"

# Each group module exposes `register(subparsers)`, which adds its parser and sets `func` on it.
GROUPS: tuple[Callable[[Subparsers], None], ...] = (
    status.register,
    routes.register,
    nodes.register,
    pairs.register,
    network.register,
    tokens.register,
    admin_tokens.register,
    audit.register,
    export.register,
    lab.register,
)


def build_parser() -> Parser:
    """The full `wgmesh` parser with every command group registered."""
    parser = Parser(prog=PROG, description="wgmesh: WireGuard mesh manager for interconnecting clouds.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=logs.LEVELS,
        help="key=value log lines on stderr at this level (default: warning)",
    )
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True, parser_class=Parser)
    for register in GROUPS:
        register(sub)
    return parser


def run(argv: Sequence[str]) -> int:
    """Parse `argv`, run the command and return its exit status."""
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    handler: Handler = args.func
    return handler(args)


def main() -> None:
    """Console entry point: bad usage exits 2, failures exit 1, each with one line."""
    run_console(PROG, run)
