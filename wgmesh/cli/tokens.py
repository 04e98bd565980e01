"""`wgmesh tokens` (alias `token`): create, list and revoke enrollment tokens."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, get_args

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
    prefix_arg,
    print_json,
    print_listing,
    print_result,
    print_secret_once,
    stderr,
)
from wgmesh.models import TokenCreated, TokenInfo, TokenList
from wgmesh.values import P2PPolicy

_DURATION = re.compile(r"^(\d{1,9})([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_EXPIRY = 10 * 365 * 86400  # what the coordinator accepts


def expiry(text: str) -> int | None:
    """An argparse type: `30m`, `24h`, `7d`, `2w`, `90s` as seconds; `never` as None."""
    if text == "never":
        return None
    match = _DURATION.fullmatch(text)
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: use a number with s, m, h, d or w (30m, 24h, 7d), or never"
        )
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if seconds > MAX_EXPIRY:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than 10 years; use never")
    return seconds


def token_id(text: str) -> int:
    """An argparse type: a token id (a positive number, as `wgmesh tokens list` shows)."""
    if not (text.isascii() and text.isdigit()) or int(text) == 0 or len(text) > 19:
        raise argparse.ArgumentTypeError(f"{text!r} is not a token id (a positive number)")
    return int(text)


def register(sub: Subparsers) -> None:
    """Add `wgmesh tokens` and its commands."""
    group = CommandGroup(
        sub,
        "tokens",
        default=cmd_list,
        aliases=["token"],
        help="enrollment tokens: create, list, revoke",
        description="Enrollment tokens for agents. Without a command: list them.",
    )

    p = group.command(
        "create",
        cmd_create,
        help="create a token; its secret is printed once",
        description="Create an enrollment token. Only the secret goes to stdout (TOKEN=$(wgmesh tokens "
        "create)); what it is goes to stderr. The secret cannot be shown again.",
    )
    p.add_argument("--reusable", action="store_true", help="allow any number of enrollments")
    p.add_argument(
        "--expires",
        type=expiry,
        default=86400,
        metavar="DURATION",
        help="30m, 24h, 7d, 2w … or never (default 24h)",
    )
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="tag given to the nodes")
    p.add_argument("--p2p", choices=get_args(P2PPolicy), help="P2P policy given to the nodes")
    p.add_argument("--description", default="", metavar="TEXT", help="a note for `tokens list`")
    p.add_argument(
        "--allow-subnet",
        action="append",
        default=[],
        type=prefix_arg,
        metavar="PREFIX",
        help="approve the routes its nodes advertise inside PREFIX (repeatable; private, CGNAT and ULA "
        "space only: anything else, or another gateway's prefix, still waits for `wgmesh routes approve`)",
    )
    p.add_argument(
        "--replace",
        type=node_ref,
        metavar="NODE",
        help="enroll only NODE, replacing it (a dead instance): the new one keeps its id, overlay IP and "
        "routes, and the old credential, relay tickets and preshared keys stop working at once",
    )

    p = group.command("list", cmd_list, help="every token, newest first; secrets are never shown")

    p = group.command("revoke", cmd_revoke, help="revoke a token (nodes it enrolled stay)")
    p.add_argument("id", type=token_id, metavar="ID", help="token id, as `wgmesh tokens list` shows")


def state(token: TokenInfo, now: datetime) -> str:
    """`revoked`, `used` (a one-time token redeemed), `expired` or `valid`."""
    if token.revoked:
        return "revoked"
    if not token.reusable and token.uses > 0:
        return "used"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "valid"


def expires_in(token: TokenInfo, now: datetime) -> str:
    """`never`, `in 23h`, `2h ago`."""
    if token.expires_at is None:
        return "never"
    seconds = int((token.expires_at - now).total_seconds())
    if seconds <= 0:
        return render.age(token.expires_at, now)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"in {seconds // size}{unit}"
    return f"in {seconds}s"


def tokens_table(tokens: Sequence[TokenInfo], now: datetime) -> RenderableType:
    """One line per token."""
    if not tokens:
        return Text("no tokens", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header in ("ID", "KIND", "STATE", "USES", "EXPIRES", "TAGS", "P2P", "ALLOWS", "DESCRIPTION"):
        table.add_column(header, overflow="fold", justify="right" if header in ("ID", "USES") else "left")
    styles = {"valid": "green", "revoked": "red", "expired": "dim", "used": "dim"}
    for token in tokens:
        st = state(token, now)
        table.add_row(
            str(token.id),
            "reusable" if token.reusable else "one-time",
            Text(st, style=styles[st]),
            str(token.uses),
            expires_in(token, now),
            ", ".join(token.tags) or render.DASH,
            token.p2p or render.DASH,
            ", ".join(str(p) for p in token.allow_subnets) or render.DASH,
            render.cell(
                token.description
                if not token.replaces
                else f"replaces {token.replaces}; {token.description}".rstrip("; ")
            ),
        )
    return table


def cmd_create(args: argparse.Namespace) -> int:
    """`wgmesh tokens create`."""
    body: dict[str, Any] = {
        "reusable": args.reusable,
        "expires_in": args.expires,
        "tags": args.tag,
        "p2p": args.p2p,
        "description": args.description,
        "allow_subnets": args.allow_subnet,
    }
    if args.replace is not None:
        body["replaces"] = args.replace
    with connection.connect(args) as client:
        created = client.call("POST", "/api/v1/tokens", TokenCreated, json=body)
    if args.json:
        print_json(created.model_dump(mode="json"))
        return 0
    now = datetime.now(UTC)
    kind = "reusable" if created.reusable else "one-time"
    when = created.expires_at.strftime(" (%Y-%m-%d %H:%M UTC)") if created.expires_at else ""
    extras = [f"expires {expires_in(created, now)}{when}"]
    if created.tags:
        extras.append(f"tags {', '.join(created.tags)}")
    if created.p2p:
        extras.append(f"p2p {created.p2p}")
    if created.allow_subnets:
        extras.append(f"allows {', '.join(str(p) for p in created.allow_subnets)}")
    if created.replaces:
        extras.append(f"replaces node {created.replaces} (enrolls that name only)")
    stderr().print(f"created {kind} token {created.id}: {'; '.join(extras)}")
    print_secret_once(created.token)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """`wgmesh tokens [list]`."""
    tokens = call(args, "GET", "/api/v1/tokens", TokenList).tokens
    print_listing(args.json, "tokens", tokens, lambda: tokens_table(tokens, datetime.now(UTC)))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """`wgmesh tokens revoke ID`."""
    token = call(args, "DELETE", f"/api/v1/tokens/{args.id}", TokenInfo)
    print_result(
        args.json,
        token,
        lambda: f"revoked token {token.id} ({token.uses} use{'s' if token.uses != 1 else ''} so far)",
    )
    return 0
