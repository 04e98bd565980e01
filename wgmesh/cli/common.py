"""What every command group shares: the parser class, output helpers and the handler type."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias, TypeVar

from pydantic import BaseModel
from rich.console import Console

from wgmesh import ipam, rates
from wgmesh.cli import connection
from wgmesh.errors import ValidationError
from wgmesh.models import MAX_MTU, MIN_MTU, check_name

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: MESSAGE` and a pointer to --help, then exit 2."""
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


# The stub's generic is not subscriptable at run time before Python 3.12's argparse.
if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[Parser]
else:
    Subparsers = argparse._SubParsersAction


def stdout() -> Console:
    """Where results go."""
    return Console(highlight=False)


def stderr() -> Console:
    """Where progress goes, so results on stdout stay clean for pipes."""
    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    """Print a JSON document (the `--json` output of every command)."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


_M = TypeVar("_M", bound=BaseModel)


def call(args: argparse.Namespace, method: str, path: str, model: type[_M], *, json: Any = None) -> _M:
    """One admin call to the coordinator the command line names, answering a `model`."""
    with connection.connect(args) as client:
        return client.call(method, path, model, json=json)


def print_result(as_json: bool, result: BaseModel, text: Callable[[], str]) -> None:
    """A command's result: the model as JSON with --json, else the line `text()` makes."""
    if as_json:
        print_json(result.model_dump(mode="json"))
    else:
        stdout().print(text())


def print_listing(as_json: bool, key: str, items: Sequence[BaseModel], table: Callable[[], Any]) -> None:
    """A list command's result: `{KEY: [item, …]}` with --json, else the rich table `table()` makes."""
    if as_json:
        print_json({key: [item.model_dump(mode="json") for item in items]})
    else:
        stdout().print(table())


def print_secret_once(secret: str) -> None:
    """A new secret alone on stdout (`TOKEN=$(wgmesh … create)`), the warning that it is never shown again
    on stderr."""
    stderr().print("the secret below is shown only this once: store it now", style="bold yellow")
    print(secret)


def add_json_flag(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """`--json`; `nested` for a subcommand whose group already has it (keeps the group's value)."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="print the result as JSON (see docs/cli.md)",
    )


def add_coordinator_flags(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """`--json` and the connection flags of a command that talks to the coordinator; `nested` for a
    subcommand whose group already has them (keeps the group's values)."""
    add_json_flag(parser, nested=nested)
    connection.add_arguments(parser, nested=nested)


class CommandGroup:
    """A group of commands that talk to the coordinator (`wgmesh nodes …`).

    Every command takes the connection flags and `--json`, before or after its name; the group
    alone, without a command, runs `default`.
    """

    def __init__(
        self,
        sub: Subparsers,
        name: str,
        *,
        default: Handler,
        help: str,
        description: str,
        aliases: Sequence[str] = (),
    ) -> None:
        self.parser = sub.add_parser(name, aliases=list(aliases), help=help, description=description)
        add_coordinator_flags(self.parser)
        self.parser.set_defaults(func=default)
        self._commands = self.parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")

    def command(
        self,
        name: str,
        run: Handler,
        *,
        help: str,
        description: str | None = None,
        aliases: Sequence[str] = (),
    ) -> Parser:
        """Add `wgmesh GROUP NAME`; the caller adds its own arguments to the parser returned."""
        parser = self._commands.add_parser(name, aliases=list(aliases), help=help, description=description)
        add_coordinator_flags(parser, nested=True)
        parser.set_defaults(func=run)
        return parser


def node_ref(text: str) -> str:
    """An argparse type: a node name (a hostname label) or a numeric node id."""
    try:
        return check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"node {text!r}: {exc}") from exc


def prefix_arg(text: str) -> str:
    """An argparse type: a CIDR prefix, host bits clear (`ipam.parse_cidr` says why not), canonical."""
    try:
        return str(ipam.parse_cidr(text))
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def prefixes_arg(text: str) -> list[str]:
    """An argparse type: comma-separated CIDR prefixes; empty or `none` is the empty list."""
    if text.strip().lower() in ("", "none"):
        return []
    return [prefix_arg(part) for part in text.split(",")]


def rate_arg(text: str) -> str:
    """argparse type of `--rate`: a tc rate (`20mbit`) in its canonical spelling, or `none`."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return rates.normalize_rate(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message}, or none") from None


def mtu_arg(text: str) -> int:
    """argparse type of a tunnel MTU: a whole number of bytes in the range the coordinator accepts."""
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or not MIN_MTU <= int(value) <= MAX_MTU:
        raise argparse.ArgumentTypeError(
            f"MTU {text!r} must be a whole number of bytes from {MIN_MTU} to {MAX_MTU}"
        )
    return int(value)


def mtu_or_none_arg(text: str) -> int | Literal["none"]:
    """argparse type of a node's `--mtu`: a tunnel MTU, or `none` for the network's default (a string,
    as with `--rate`, because None is what argparse leaves when the flag is not given)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return mtu_arg(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or none for the network's default") from None
