"""`wgmesh audit`: the coordinator's audit log, every admin change with who made it and from where."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from wgmesh.cli import connection, render
from wgmesh.cli.common import Subparsers, add_json_flag, print_listing
from wgmesh.cli.tokens import expiry
from wgmesh.models import AuditEntry, AuditList


def since_arg(text: str) -> datetime:
    """argparse type of `--since`: a duration back from now (30m, 24h, 7d) or an ISO 8601 time."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            seconds = expiry(text) if text != "never" else None
        except argparse.ArgumentTypeError:
            seconds = None
        if seconds is None:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a duration (30m, 24h, 7d) nor a time (2026-12-01T10:00:00Z)"
            ) from None
        return datetime.now(UTC) - timedelta(seconds=seconds)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def limit_arg(text: str) -> int:
    """argparse type of `--limit`: 1 to 1000 entries."""
    if not (text.isascii() and text.isdigit() and len(text) <= 4) or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1000")
    return int(text)


def register(sub: Subparsers) -> None:
    """Add `wgmesh audit`."""
    p = sub.add_parser(
        "audit",
        help="the audit log: every admin change, who made it, when and from where",
        description="The coordinator's audit log, oldest first: every admin change (token or dashboard "
        "session, what, when, from which address). Secrets are never in it.",
    )
    p.add_argument("--since", type=since_arg, metavar="DURATION|TIME", help="30m, 24h, 7d, or an ISO time")
    p.add_argument("--limit", type=limit_arg, default=100, metavar="N", help="the latest N entries (100)")
    add_json_flag(p)
    connection.add_arguments(p)
    p.set_defaults(func=cmd_audit)


def audit_table(entries: Sequence[AuditEntry], now: datetime) -> RenderableType:
    """One line per entry."""
    if not entries:
        return Text("no audit entries", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header in ("WHEN", "ACTOR", "ACTION", "TARGET", "DETAIL", "CLIENT"):
        table.add_column(header, overflow="fold")
    for e in entries:
        # Every cell a Text: the detail holds admin-written free text (a token's description), which
        # must neither drive the terminal nor be read as rich markup (`[/x]` would break the listing).
        table.add_row(
            render.cell(f"{e.at:%Y-%m-%d %H:%M:%S} ({render.age(e.at, now)})"),
            render.cell(e.actor),
            render.cell(e.action),
            render.cell(e.target),
            render.cell(json.dumps(e.detail, sort_keys=True) if e.detail else None),
            render.cell(e.client),
        )
    return table


def cmd_audit(args: argparse.Namespace) -> int:
    """`wgmesh audit [--since DURATION|TIME] [--limit N]`."""
    params = {"limit": str(args.limit)}
    if args.since is not None:
        params["since"] = args.since.isoformat()
    with connection.connect(args) as client:
        response = client.request("GET", "/api/v1/audit", params=params)
        entries = client.parse(response, "/api/v1/audit", AuditList).entries
    print_listing(args.json, "entries", entries, lambda: audit_table(entries, datetime.now(UTC)))
    return 0
