"""`wgmesh status --local` / `wgmesh-agent status`: the local agent's peers, read over its unix socket."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Group
from rich.text import Text

from wgmesh.cli import render
from wgmesh.cli.common import print_json, stdout
from wgmesh.cli.view import NodeView
from wgmesh.models import LocalStatus


def node_view(status: LocalStatus) -> NodeView:
    """The local status in the shape `wgmesh status NODE` prints."""
    return NodeView(
        name=status.name,
        overlay_ip=status.overlay_ip or "—",
        eth0_ip=status.eth0_ip,
        public_ip=None,
        online=True,
        last_seen=None,
        p2p=status.p2p,
        mtu=status.mtu,
        subnets=status.subnets,
        peers=list(status.peers),
    )


def show_local_status(status: LocalStatus, *, as_json: bool) -> None:
    """Print the local agent's view (JSON: the LocalStatus document)."""
    if as_json:
        print_json(status.model_dump(mode="json"))
        return
    console = stdout()
    coordinator = Text(f"coordinator {status.coordinator} ")
    coordinator.append(
        "reachable" if status.coordinator_reachable else "UNREACHABLE (running from the cached netmap)",
        style="green" if status.coordinator_reachable else "bold red",
    )
    coordinator.append(f"  netmap v{status.netmap_version if status.netmap_version is not None else '—'}")
    coordinator.append(f"  interface {status.interface}")
    coordinator.append(f"  mss clamp {'on' if status.mss_clamp else 'off'}")
    coordinator.append(f"  direct tcp {f'port {status.tcp.port}' if status.tcp else 'off'}")
    parts = [render.node_screen(node_view(status), datetime.now(UTC), console.width), Text(""), coordinator]
    for relay in status.relays:
        line = Text(f"relay {relay.id} ")
        line.append("up" if relay.up else "DOWN", style="green" if relay.up else "bold red")
        if relay.rtt_ms is not None:
            line.append(f"  rtt {relay.rtt_ms:.2f} ms")
        if relay.home:
            line.append("  home (relayed datagrams go here)")
        if relay.error and not relay.up:
            line.append(f"  {relay.error}", style="dim")
        parts.append(line)
    now = datetime.now(UTC)
    for group in status.ha:
        line = Text(f"ha {group.prefix} (site {render.dash(status.site)}): ")
        if group.holder is None:
            line.append(
                "carried by no member yet" if group.code == "settling" else "claims nothing", style="yellow"
            )
        elif group.holder == status.name:
            line.append("this gateway carries it", style="green")
        else:
            line.append(f"sent to {render.dash(group.holder)}")
        line.append(f"  [{group.code}] {render.dash(group.reason)}", style="dim")
        if group.changed_at is not None:
            moved = f" from {render.dash(group.moved_from)}" if group.moved_from else ""
            line.append(f"  moved{moved} {render.age(group.changed_at, now)}")
        parts.append(line)
    for shadow in status.shadowed:
        parts.append(
            Text(
                f"! {shadow.prefix} not installed: overlaps {shadow.local_prefix} on "
                f"{render.dash(shadow.interface)}",
                style="yellow",
            )
        )
    for refused in status.refused:
        owner = f" of {refused.gateway}" if refused.gateway else ""
        parts.append(Text(f"! {refused.prefix}{owner} refused: {refused.reason}", style="yellow"))
    console.print(Group(*parts))
