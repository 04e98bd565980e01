"""`wgmesh admin-tokens`: create, list and revoke named admin tokens (read-only ones see, never change)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from wgmesh.cli import connection, render
from wgmesh.cli.common import (
    CommandGroup,
    Subparsers,
    call,
    node_ref,
    print_json,
    print_listing,
    print_result,
    print_secret_once,
    stderr,
)
from wgmesh.models import AdminTokenCreated, AdminTokenInfo, AdminTokenList


def register(sub: Subparsers) -> None:
    """Add `wgmesh admin-tokens` and its commands."""
    group = CommandGroup(
        sub,
        "admin-tokens",
        default=cmd_list,
        aliases=["admin-token"],
        help="admin tokens: create, list, revoke",
        description="Named admin tokens for people and tools. Without a command: list them.",
    )
    create = group.command(
        "create",
        cmd_create,
        help="create a named admin token; its secret is printed once",
        description="Create an admin token. Only the secret goes to stdout (TOKEN=$(wgmesh admin-tokens "
        "create ci --read-only)); what it is goes to stderr. The secret cannot be shown again.",
    )
    _name_argument(create, "a name for the audit log (a hostname label)")
    create.add_argument("--read-only", action="store_true", help="it sees everything and changes nothing")
    group.command("list", cmd_list, help="every admin token, revoked ones too; secrets are never shown")
    revoke = group.command(
        "revoke", cmd_revoke, help="revoke an admin token at once, with the dashboard sessions opened with it"
    )
    _name_argument(revoke, "its name, as `wgmesh admin-tokens list` shows")


def _name_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("name", type=node_ref, metavar="NAME", help=help)


def admin_tokens_table(tokens: Sequence[AdminTokenInfo], now: datetime) -> RenderableType:
    """One line per admin token."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header in ("NAME", "ACCESS", "STATE", "SOURCE", "CREATED"):
        table.add_column(header, overflow="fold")
    for token in tokens:
        revoked = token.revoked_at is not None
        table.add_row(
            token.name,
            "read-only" if token.read_only else "full",
            Text(f"revoked {render.age(token.revoked_at, now)}", style="red")
            if revoked
            else Text("valid", style="green"),
            token.source,
            render.age(token.created_at, now),
        )
    return table


def cmd_create(args: argparse.Namespace) -> int:
    """`wgmesh admin-tokens create NAME [--read-only]`."""
    body = {"name": args.name, "read_only": args.read_only}
    created = call(args, "POST", "/api/v1/admin-tokens", AdminTokenCreated, json=body)
    if args.json:
        print_json(created.model_dump(mode="json"))
        return 0
    stderr().print(f"created {'read-only' if created.read_only else 'full'} admin token {created.name}")
    print_secret_once(created.token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """`wgmesh admin-tokens [list]`."""
    tokens = call(args, "GET", "/api/v1/admin-tokens", AdminTokenList).admin_tokens
    print_listing(args.json, "admin_tokens", tokens, lambda: admin_tokens_table(tokens, datetime.now(UTC)))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """`wgmesh admin-tokens revoke NAME`."""
    path = f"/api/v1/admin-tokens/{connection.segment(args.name)}"
    token = call(args, "DELETE", path, AdminTokenInfo)
    print_result(
        args.json, token, lambda: f"revoked admin token {token.name}; its dashboard sessions are logged out"
    )
    return 0
