"""The lab's `--on-primary` hook: the VPC host's default route plays the cloud's route table.

In a cloud VPC with two gateways, the VPC's route table sends mesh-bound traffic to one of them; when the
other takes the prefix over, a hook run by its agent rewrites the table (docs/deploy.md). In the lab the
VPC host's default route is that table: on `primary` this hook points it at the gateway's LAN address
(`ip -n LAB-vmI route replace default via 10.I.0.x`); on `standby` it does nothing, since the member that
became primary rewrites the route itself (and a standby rewriting it back could undo that).

    python -m wgmesh.lab.route_table_hook --vm-netns LAB-vm2 --via 10.2.0.2

reads WGMESH_HA_ROLE, WGMESH_HA_PREFIX, WGMESH_HA_SITE, WGMESH_NODE, WGMESH_HA_HOLDER and
WGMESH_MESH_PREFIXES from its environment, as the agent sets them, and logs one key=value line.
Bad input: exit 2 with one line; `ip` failing: exit 1.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from wgmesh import logs
from wgmesh.errors import ValidationError
from wgmesh.logs import kv

log = logging.getLogger("wgmesh.lab.route_table_hook")

Role = Literal["primary", "standby"]
ROLES: tuple[Role, ...] = ("primary", "standby")
IP_TIMEOUT = 10.0


@dataclass(frozen=True)
class HookEvent:
    """What the agent told the hook, parsed once."""

    role: Role
    prefix: str
    site: str
    node: str
    holder: str
    mesh_prefixes: tuple[str, ...]


def parse_event(env: Mapping[str, str]) -> HookEvent:
    """The event in the hook's environment, or ValidationError naming what is missing or wrong."""
    role = env.get("WGMESH_HA_ROLE", "")
    if role not in ROLES:
        raise ValidationError(f"WGMESH_HA_ROLE must be primary or standby, not {role!r}", code="invalid_role")
    prefix = env.get("WGMESH_HA_PREFIX", "")
    try:
        prefix = str(ipaddress.ip_network(prefix, strict=False))
    except ValueError as exc:
        raise ValidationError(f"WGMESH_HA_PREFIX {prefix!r} is not a prefix", code="invalid_prefix") from exc
    return HookEvent(
        role="primary" if role == "primary" else "standby",
        prefix=prefix,
        site=env.get("WGMESH_HA_SITE", ""),
        node=env.get("WGMESH_NODE", ""),
        holder=env.get("WGMESH_HA_HOLDER", ""),
        mesh_prefixes=tuple(env.get("WGMESH_MESH_PREFIXES", "").split()),
    )


def route_command(event: HookEvent, vm_netns: str, via: str) -> list[str] | None:
    """The `ip` command this event calls for: on `primary`, the VPC host's default route via this
    gateway; on `standby`, none."""
    if event.role != "primary":
        return None
    return ["ip", "-n", vm_netns, "route", "replace", "default", "via", via]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wgmesh.lab.route_table_hook",
        description="The lab's --on-primary hook: point the VPC host's default route at this gateway.",
    )
    parser.add_argument("--vm-netns", required=True, help="the VPC host's namespace, e.g. wgl-vm2")
    parser.add_argument("--via", required=True, help="this gateway's LAN address, e.g. 10.2.0.2")
    return parser


def run(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The hook: 0 done, 1 `ip` failed, 2 bad input (one line on stderr)."""
    args = _parser().parse_args(argv)
    try:
        via = str(ipaddress.IPv4Address(args.via))
        event = parse_event(env)
    except (ValueError, ValidationError) as exc:
        print(f"route_table_hook: {exc}", file=sys.stderr)
        return 2
    command = route_command(event, args.vm_netns, via)
    fields = {
        "role": event.role,
        "prefix": event.prefix,
        "site": event.site,
        "node": event.node,
        "holder": event.holder,
        "vm_netns": args.vm_netns,
    }
    if command is None:
        log.info("route table left as is", extra=kv(**fields))
        return 0
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
        error = (done.stderr.strip().splitlines() or ["no output"])[-1] if done.returncode else None
    except (OSError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
    if error is not None:
        log.error("route table not updated", extra=kv(**fields, via=via, error=error))
        return 1
    log.info("route table updated", extra=kv(**fields, via=via))
    return 0


def main() -> None:
    """Entry point of `python -m wgmesh.lab.route_table_hook`."""
    logs.setup("info")
    sys.exit(run(sys.argv[1:], os.environ))


if __name__ == "__main__":
    main()
