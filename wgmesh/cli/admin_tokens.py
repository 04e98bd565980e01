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
from wgmesh.cli.common import CommandGroup, Subparsers, node_ref, print_json, stderr, stdout
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
    p = group.command(
        "create",
        cmd_create,
        help="create a named admin token; its secret is printed once",
        description="Create an admin token. Only the secret goes to stdout (TOKEN=$(wgmesh admin-tokens "
        "create ci --read-only)); what it is goes to stderr. The secret cannot be shown again.",
    )
    p.add_argument("name", type=node_ref, metavar="NAME", help="a name for the audit log (a hostname label)")
    p.add_argument("--read-only", action="store_true", help="it sees everything and changes nothing")
    group.command("list", cmd_list, help="every admin token, revoked ones too; secrets are never shown")
    p = group.command(
        "revoke",
        cmd_revoke,
        help="revoke an admin token at once, with the dashboard sessions opened with it",
    )
    p.add_argument(
        "name", type=node_ref, metavar="NAME", help="its name, as `wgmesh admin-tokens list` shows"
    )


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
    with connection.connect(args) as client:
        created = client.call("POST", "/api/v1/admin-tokens", AdminTokenCreated, json=body)
    if args.json:
        print_json(created.model_dump(mode="json"))
        return 0
    err = stderr()
    access = "read-only" if created.read_only else "full"
    err.print(f"created {access} admin token {created.name}")
    err.print("the secret below is shown only this once: store it now", style="bold yellow")
    print(created.token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """`wgmesh admin-tokens [list]`."""
    with connection.connect(args) as client:
        tokens = client.get("/api/v1/admin-tokens", AdminTokenList).admin_tokens
    if args.json:
        print_json({"admin_tokens": [t.model_dump(mode="json") for t in tokens]})
    else:
        stdout().print(admin_tokens_table(tokens, datetime.now(UTC)))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """`wgmesh admin-tokens revoke NAME`."""
    path = f"/api/v1/admin-tokens/{connection.segment(args.name)}"
    with connection.connect(args) as client:
        token = client.call("DELETE", path, AdminTokenInfo)
    if args.json:
        print_json(token.model_dump(mode="json"))
    else:
        stdout().print(f"revoked admin token {token.name}; its dashboard sessions are logged out")
    return 0
