"""`wgmesh lab`: build, inspect and tear down the network-namespace lab on this machine."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, get_args

from rich.table import Table

from wgmesh.cli.common import Parser, Subparsers, print_json, stderr, stdout
from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.lab import DEFAULT_NAME, DEFAULT_SITES, Lab, down, leftovers, switches, up
from wgmesh.lab.cloud import LAN_MTU, UNDERLAY_MTU, parse_mtu, parse_mtus
from wgmesh.lab.impair import describe, parse_pair, parse_pairs, parse_rate, parse_sites, parse_throttles
from wgmesh.lab.layout import (
    CONVERGE_BUDGET,
    CONVERGE_FLAT_GATEWAYS,
    CONVERGE_PER_GATEWAY,
    DEFAULT_HA_PREEMPT_AFTER,
    MAX_HA_SITE,
    MAX_HUBS,
    MAX_LAN_PREFIXLEN,
    Database,
    HaReturn,
    LabPlan,
    check_hubs,
    describe_lans,
    parse_lans,
)
from wgmesh.lab.wait import Progress
from wgmesh.values import Backend

LAB_ENV = "WGMESH_LAB"


def register(sub: Subparsers) -> None:
    """Add `wgmesh lab` and its commands."""
    lab = sub.add_parser(
        "lab",
        help="network-namespace lab on this machine",
        description="A multi-site mesh in network namespaces on this machine (needs root).",
    )
    cmds = lab.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    p = cmds.add_parser("up", help="build a lab and wait for its mesh to converge")
    _name(p)
    p.add_argument(
        "--sites", type=int, default=DEFAULT_SITES, help=f"number of sites (default {DEFAULT_SITES})"
    )
    p.add_argument(
        "--backend",
        choices=get_args(Backend),
        default="userspace",
        help="agents' WireGuard backend",
    )
    p.add_argument(
        "--no-agents",
        dest="agents",
        action="store_false",
        help="build namespaces, underlay and coordinator only (start agents by hand)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        help=f"seconds to wait for convergence (default {CONVERGE_BUDGET:g}, and {CONVERGE_PER_GATEWAY:g} more "
        f"per gateway beyond {CONVERGE_FLAT_GATEWAYS})",
    )
    p.add_argument(
        "--no-relay",
        dest="relay",
        action="store_const",
        const=False,
        default=None,
        help="run no relay on the hub (default: run it when wgmesh-relay is installed)",
    )
    p.add_argument(
        "--block-udp",
        action="append",
        default=[],
        metavar="I,...",
        help="drop all UDP to and from these gateways on their underlay link",
    )
    p.add_argument(
        "--throttle-udp",
        action="append",
        default=[],
        metavar="I=RATE",
        help="limit UDP of gateway I to RATE (e.g. 10mbit) both ways; repeatable or a comma list",
    )
    p.add_argument(
        "--block-tcp-between",
        action="append",
        default=[],
        metavar="I,J",
        help="drop all TCP between gateways I and J's underlay addresses, both ways (their TCP to the "
        "coordinator, the relay and other gateways flows); one pair each, repeatable",
    )
    p.add_argument(
        "--p2p-off",
        action="append",
        default=[],
        metavar="I,...",
        help="set these gateways' P2P policy to off once they enroll (their peers go via the relay)",
    )
    p.add_argument(
        "--lan-mtu",
        action="append",
        default=[],
        metavar="I=MTU",
        help=f"MTU of site I's LAN (gateway lan and VPC host eth0), {LAN_MTU.low}-{LAN_MTU.high}, "
        "e.g. 1=9001 as in AWS; repeatable or a comma list",
    )
    p.add_argument(
        "--underlay-mtu",
        action="append",
        default=[],
        metavar="I=MTU",
        help=f"MTU of gateway I's underlay link (both veth ends), {UNDERLAY_MTU.low}-{UNDERLAY_MTU.high}, "
        "e.g. 2=1460 as in GCP; repeatable or a comma list",
    )
    p.add_argument(
        "--sg-drop-icmp",
        action="append",
        default=[],
        metavar="I,...",
        help="these VPC hosts drop inbound ICMP unreachable and ICMPv6 packet-too-big, as a cloud "
        "security group does",
    )
    p.add_argument(
        "--db",
        choices=get_args(Database),
        default="sqlite",
        help="where the registry lives: SQLite in the state directory (default), or a private PostgreSQL "
        "cluster there, run as an unprivileged user",
    )
    p.add_argument(
        "--coordinators",
        type=int,
        default=1,
        metavar="N",
        help=f"coordinators on the database, hub, hub2, … (1-{MAX_HUBS}; more than one needs --db postgresql)",
    )
    p.add_argument(
        "--relays",
        type=int,
        default=1,
        metavar="N",
        help=f"relays, relay, relay2, … (1-{MAX_HUBS}; default 1)",
    )
    p.add_argument(
        "--ha-site",
        action="append",
        default=[],
        metavar="I",
        help=f"give site I a second gateway gwIb on its LAN advertising the same prefix (HA subnet routers; "
        f"sites 1-{MAX_HA_SITE}); repeatable or a comma list",
    )
    p.add_argument(
        "--ha-preempt-after",
        type=float,
        default=DEFAULT_HA_PREEMPT_AFTER,
        metavar="SECONDS",
        help=f"every agent's rule: a returning primary takes its prefix back after being healthy this long "
        f"(default {DEFAULT_HA_PREEMPT_AFTER:g})",
    )
    p.add_argument(
        "--ha-return",
        choices=get_args(HaReturn),
        default="route-table",
        help="how an HA site's VPC replies reach the gateway carrying its prefix: its route-table hook "
        "rewrites the VPC host's default route (default), or the gateways masquerade",
    )
    p.add_argument(
        "--lan",
        action="append",
        default=[],
        metavar="I=CIDR",
        help=f"site I's LAN instead of 10.I.0.0/24 (gateway .1, VPC host .10), e.g. 2=10.1.0.0/24 to overlap "
        f"site 1 (VPCs whose CIDRs overlap); private IPv4, /{MAX_LAN_PREFIXLEN} or wider; repeatable "
        "or a comma list",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_up)

    p = cmds.add_parser("kill", help="stop a lab process: hub, hubN, relay, relayN, gwN, gwNb or db")
    _name(p)
    p.add_argument(
        "node", help="hub, hubN (coordinators), relay, relayN, gwN, gwNb (agents) or db (PostgreSQL)"
    )
    p.add_argument(
        "--signal",
        choices=("TERM", "KILL", "INT"),
        default="TERM",
        help="TERM (default: a clean stop; the database's fast shutdown) or KILL (a crash)",
    )
    p.add_argument(
        "--remove-interface",
        action="store_true",
        help="gateways: then delete its WireGuard interface (and end its wireguard-go), as when the machine dies",
    )
    p.set_defaults(func=cmd_kill)

    p = cmds.add_parser(
        "start", help="start a stopped lab process: hub, hubN, relay, relayN, gwN, gwNb or db"
    )
    _name(p)
    p.add_argument(
        "node", help="hub, hubN (coordinators), relay, relayN, gwN, gwNb (agents) or db (PostgreSQL)"
    )
    p.set_defaults(func=cmd_start)

    p = cmds.add_parser(
        "move-to-postgresql",
        help="move the lab's registry from SQLite to PostgreSQL (wgmesh-coordinator migrate), with N coordinators",
    )
    _name(p)
    p.add_argument(
        "--coordinators", type=int, default=1, metavar="N", help=f"coordinators on it (1-{MAX_HUBS})"
    )
    p.set_defaults(func=cmd_move)

    p = cmds.add_parser("add-site", help="add one site to a running lab")
    _name(p)
    p.add_argument(
        "--timeout",
        type=float,
        help=f"seconds to wait for convergence (default {CONVERGE_BUDGET:g}, and {CONVERGE_PER_GATEWAY:g} more "
        f"per gateway beyond {CONVERGE_FLAT_GATEWAYS})",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_add_site)

    p = cmds.add_parser("exec", help="run a command on a node: hub, gwN, gwNb or vmN")
    _name(p)
    p.add_argument("node", help="hub (root namespace), gwN or gwNb (gateway) or vmN (VPC host)")
    p.add_argument(
        "cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments"
    )
    p.set_defaults(func=cmd_exec)

    p = cmds.add_parser("env", help="print shell exports for the CLI to reach the lab's coordinator")
    _name(p)
    p.add_argument("--json", action="store_true", help="print the variables as JSON")
    p.set_defaults(func=cmd_env)

    p = cmds.add_parser("status", help="namespaces, processes and per-gateway peers")
    _name(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_status)

    p = cmds.add_parser("ping", help="ping matrix between all VPC hosts, over the mesh")
    _name(p)
    p.add_argument("--count", type=int, default=1, help="pings per pair (default 1)")
    p.add_argument("--json", action="store_true", help="print the matrix as JSON")
    p.set_defaults(func=cmd_ping)

    for switch in SWITCHES:
        p = cmds.add_parser(switch.command, help=switch.help)
        _name(p)
        p.add_argument("sites", metavar="I[,I...]", help=f"{switch.target} numbers, e.g. 1 or 1,3")
        if switch.value is not None:
            p.add_argument(switch.value.metavar, metavar=switch.value.metavar, help=switch.value.help)
        p.set_defaults(func=switch.run)

    for blocked in (True, False):
        p = cmds.add_parser(
            "block-tcp" if blocked else "unblock-tcp",
            help="drop all TCP between two gateways' underlay addresses, both ways"
            if blocked
            else "let TCP between two gateways through again",
        )
        _name(p)
        p.add_argument(
            "pairs",
            nargs="+",
            metavar="I,J",
            help="two gateways' site numbers, e.g. 1,2; more pairs may follow",
        )
        p.set_defaults(func=_tcp_switch(blocked))

    p = cmds.add_parser("down", help="remove everything the lab created (also after a crash)")
    _name(p)
    p.add_argument("--json", action="store_true", help="print what was removed as JSON")
    p.set_defaults(func=cmd_down)


def _name(parser: Parser) -> None:
    parser.add_argument(
        "--name",
        default=os.environ.get(LAB_ENV, DEFAULT_NAME),
        help=f"lab name, the prefix of everything it creates (default ${LAB_ENV} or {DEFAULT_NAME!r})",
    )


@contextmanager
def _progress(quiet: bool) -> Iterator[Progress]:
    """A spinner on a terminal, one line per change otherwise; nothing with --json."""
    console = stderr()
    start = time.monotonic()
    if quiet:
        yield lambda _: None
    elif console.is_terminal:
        with console.status("starting") as spinner:
            yield lambda text: spinner.update(f"{text}  [dim]{time.monotonic() - start:.1f}s[/dim]")
    else:
        last = [""]

        def line(text: str) -> None:
            if text != last[0]:
                last[0] = text
                console.print(f"[{time.monotonic() - start:5.1f}s] {text}")

        yield line


def _lab_summary(lab: Lab, seconds: float) -> dict[str, object]:
    plan = lab.plan
    state = lab.state
    return {
        "name": lab.name,
        "seconds": round(seconds, 2),
        "url": plan.local_url,
        "hub": plan.hub_url,
        "relay": plan.relay_url if state.relay else None,
        "db": plan.db,
        "coordinators": list(plan.coordinator_urls),
        "relays": [plan.relay_url_of(i) for i in range(1, plan.relays + 1)] if state.relay else [],
        "blocked_udp": state.blocked_udp,
        "throttled_udp": state.throttled_udp,
        "blocked_tcp": state.blocked_tcp,
        "p2p_off": state.p2p_off,
        "lan_mtu": state.lan_mtu,
        "underlay_mtu": state.underlay_mtu,
        "sg_drop_icmp": state.sg_drop_icmp,
        "agents": lab.state.agents,
        "ha_sites": list(plan.ha_sites),
        "ha_preempt_after": plan.ha_preempt_after,
        "ha_return": plan.ha_return,
        "lans": {index: str(lan) for index, lan in state.lans.items()},
        "sites": [
            {
                "gateway": g.node,
                "namespace": g.netns,
                "underlay_ip": str(g.underlay_ip),
                "lan": str(s.lan),
                "lan_ip": str(g.lan_ip),
                "host": s.host,
                "host_ip": str(s.vm_ip),
            }
            for s in plan.sites
            for g in s.gateways
        ],
    }


def _print_summary(summary: dict[str, object], verb: str, lans: str | None = None) -> None:
    out = stdout()
    table = Table(title=f"lab {summary['name']} {verb} in {summary['seconds']}s", title_justify="left")
    for column in ("gateway", "namespace", "underlay_ip", "lan", "lan_ip", "host", "host_ip"):
        table.add_column(column)
    sites = summary["sites"]
    assert isinstance(sites, list)
    for site in sites:
        table.add_row(*(str(v) for v in site.values()))
    out.print(table)
    coordinators, relays = summary["coordinators"], summary["relays"]
    assert isinstance(coordinators, list) and isinstance(relays, list)
    out.print(f"dashboard and API: {summary['url']}/ (agents use {', '.join(coordinators)})")
    out.print(f"registry: {summary['db']}")
    out.print(f"relay: {', '.join(relays) or 'none'}")
    for line in _switch_lines(summary):
        out.print(f"switch: {line}")
    ha_sites, preempt = summary["ha_sites"], summary["ha_preempt_after"]
    assert isinstance(ha_sites, list) and isinstance(preempt, float)
    if ha_sites:
        out.print(f"HA sites: {_ha_line(ha_sites, preempt, str(summary['ha_return']))}")
    if lans:
        out.print(f"LANs: {lans}")
    if not summary["agents"]:
        out.print("no agents started (--no-agents)")
    out.print(f'CLI access: eval "$(wgmesh lab env --name {summary["name"]})"')


def _switch_lines(summary: dict[str, object]) -> list[str]:
    blocked, throttled, off = summary["blocked_udp"], summary["throttled_udp"], summary["p2p_off"]
    lan, underlay, sg = summary["lan_mtu"], summary["underlay_mtu"], summary["sg_drop_icmp"]
    ha, tcp = summary["ha_sites"], summary["blocked_tcp"]
    assert isinstance(blocked, list) and isinstance(throttled, dict) and isinstance(off, list)
    assert isinstance(lan, dict) and isinstance(underlay, dict) and isinstance(sg, list)
    assert isinstance(ha, list) and isinstance(tcp, list)
    return describe(
        blocked,
        throttled,
        off,
        lan_mtu=lan,
        underlay_mtu=underlay,
        sg_drop_icmp=sg,
        ha_sites=ha,
        blocked_tcp=tcp,
    )


def _ha_line(ha_sites: list[int], preempt_after: float | None, ha_return: str | None = None) -> str:
    """`vpc2 (gw2 and gw2b); preempt after 10s; replies by route-table`: which gateways share a site's
    prefix, the agents' rule, and how the VPC's replies come back."""
    names = ", ".join(f"vpc{i} (gw{i} and gw{i}b)" for i in ha_sites)
    how = f"; replies by {ha_return}" if ha_return else ""
    return f"{names}; preempt after {preempt_after or 0:g}s{how}"


def _lans_line(plan: LabPlan, given: list[int]) -> str | None:
    """`vpc2 10.1.0.0/24 (the same as vpc1)`: the LANs `--lan` gave, or None when it gave none."""
    return describe_lans(plan, given) if given else None


def _warn(text: str) -> None:
    stderr().print(f"[yellow]warning:[/yellow] {text}")


def _site_lists(items: list[str], what: str) -> list[int]:
    return sorted({index for item in items for index in parse_sites(item, what)})


def cmd_up(args: argparse.Namespace) -> int:
    """`wgmesh lab up`."""
    block_udp = _site_lists(args.block_udp, "--block-udp")
    throttle_udp = parse_throttles(args.throttle_udp)
    block_tcp = parse_pairs(args.block_tcp_between, "--block-tcp-between")
    p2p_off = _site_lists(args.p2p_off, "--p2p-off")
    lan_mtu = parse_mtus(args.lan_mtu, LAN_MTU)
    underlay_mtu = parse_mtus(args.underlay_mtu, UNDERLAY_MTU)
    sg_drop_icmp = _site_lists(args.sg_drop_icmp, "--sg-drop-icmp")
    ha_sites = _site_lists(args.ha_site, "--ha-site")
    lans = parse_lans(args.lan)
    start = time.monotonic()
    with _progress(args.json) as progress:
        lab = up(
            args.name,
            args.sites,
            args.backend,
            agents=args.agents,
            timeout=args.timeout,
            progress=progress,
            relay=args.relay,
            block_udp=block_udp,
            throttle_udp=throttle_udp,
            block_tcp_between=block_tcp,
            p2p_off=p2p_off,
            lan_mtu=lan_mtu,
            underlay_mtu=underlay_mtu,
            sg_drop_icmp=sg_drop_icmp,
            db=args.db,
            coordinators=args.coordinators,
            relays=args.relays,
            ha_sites=ha_sites,
            ha_preempt_after=args.ha_preempt_after,
            ha_return=args.ha_return,
            lans=lans,
            warn=_warn,
        )
    summary = _lab_summary(lab, time.monotonic() - start)
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary, "up", _lans_line(lab.plan, sorted(lab.state.lans)))
    return 0


def cmd_add_site(args: argparse.Namespace) -> int:
    """`wgmesh lab add-site`."""
    lab = Lab.attach(args.name)
    start = time.monotonic()
    with _progress(args.json) as progress:
        site = lab.add_site(timeout=args.timeout, progress=progress)
    seconds = round(time.monotonic() - start, 2)
    if args.json:
        print_json({"name": lab.name, "site": site.index, "gateway": site.node, "seconds": seconds})
    else:
        stdout().print(f"site {site.index} ({site.node}, {site.lan}) added to lab {lab.name} in {seconds}s")
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    """`wgmesh lab exec NODE -- CMD ...`: replaces this process, so the exit status is the command's."""
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ValidationError("no command given: wgmesh lab exec NODE -- CMD ...", code="no_command")
    argv = Lab.attach(args.name).argv(args.node, cmd)
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)  # noqa: S606 - an argv list, never a shell string
    except FileNotFoundError as exc:
        raise WgmeshError(f"{argv[0]}: command not found", code="not_found") from exc


def cmd_env(args: argparse.Namespace) -> int:
    """`wgmesh lab env`: `eval "$(wgmesh lab env)"` points the CLI at the lab."""
    lab = Lab.attach(args.name)
    # The first coordinator on loopback, the others on their hub addresses (the CLI fails over along them).
    urls = [lab.url, *lab.plan.coordinator_urls[1:]]
    env = {"WGMESH_URL": ",".join(urls), "WGMESH_TOKEN": lab.admin_token, "WGMESH_PIN": lab.pin}
    if args.json:
        print_json(env)
    else:
        print("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """`wgmesh lab status`."""
    try:
        lab = Lab.attach(args.name)
    except WgmeshError:
        found = leftovers(args.name)
        if found.any():
            raise WgmeshError(
                f"lab {args.name} has no state but leftovers exist ({found.describe()}); "
                f"run 'wgmesh lab down --name {args.name}'",
                code="lab_leftovers",
            ) from None
        raise
    status = lab.status()
    if args.json:
        print_json({**asdict(status), "healthy": status.healthy()})
        return 0
    out = stdout()
    mark = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}
    running = "[green]running[/green]" if status.coordinator else "[red]not running[/red]"
    out.print(f"lab {status.name}: underlay {status.underlay}, coordinator {running}")
    out.print(f"dashboard and API: {status.url}/")
    if status.relay is None:
        out.print("relay: none")
    else:
        relay = "[green]running[/green]" if status.relay else "[red]not running[/red]"
        out.print(f"relay: {status.relay_url} {relay}")
    central = status.services or {}
    if len(central) > 2 or status.database != "sqlite":
        shown = ", ".join(
            f"{node} {'running' if up_ else '[red]not running[/red]'}" for node, up_ in central.items()
        )
        out.print(f"registry: {status.database}; {shown}")
    for line in status.switches():
        out.print(f"switch: {line}")
    if status.ha_sites:
        out.print(f"HA sites: {_ha_line(status.ha_sites, status.ha_preempt_after, status.ha_return)}")
    if (lans := _lans_line(lab.plan, status.given_lans or [])) is not None:
        out.print(f"LANs: {lans}")
    table = Table(title_justify="left")
    for column in ("gateway", "lan", "namespace", "agent", "peers", "handshakes", "note"):
        table.add_column(column)
    for g in status.gateways:
        table.add_row(
            g.node,
            g.lan,
            mark[g.namespace],
            mark[g.agent],
            "-" if g.peers is None else str(g.peers),
            "-" if g.handshakes is None else str(g.handshakes),
            g.error or "",
        )
    out.print(table)
    if status.links:
        links = Table(title="links (as the coordinator sees them)", title_justify="left")
        for column in ("a", "b", "path", "p2p", "rtt ms", "last handshake"):
            links.add_column(column)
        for link in status.links:
            rtt = link.get("rtt_ms")
            links.add_row(
                str(link["a"]),
                str(link["b"]),
                str(link["path"]),
                str(link["p2p"]),
                "-" if rtt is None else f"{rtt:.2f}",
                str(link.get("last_handshake") or "-"),
            )
        out.print(links)
    missing = [ns for ns, ok in status.namespaces.items() if not ok]
    if missing:
        out.print(f"[red]missing namespaces:[/red] {', '.join(missing)}")
    return 0


_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "INT": signal.SIGINT}


def cmd_kill(args: argparse.Namespace) -> int:
    """`wgmesh lab kill NODE`: exit 1 when it was not running."""
    lab = Lab.attach(args.name)
    lab.node_service(args.node)  # an unknown node is bad usage, before anything is signalled
    if args.remove_interface:
        lab.plan.gateway(args.node)  # the same for --remove-interface on anything but a gateway
    killed = lab.kill(args.node, _SIGNALS[args.signal])
    removed = lab.remove_interface(args.node) if args.remove_interface else False
    interface = f", interface {lab.plan.gateway(args.node).wg_interface} removed" if removed else ""
    if not killed:
        stderr().print(f"{args.node} of lab {lab.name} was not running{interface}")
        return 1
    stdout().print(f"{args.node} of lab {lab.name} stopped ({args.signal}){interface}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """`wgmesh lab start NODE`: started, and ready (a coordinator answers, a relay listens)."""
    lab = Lab.attach(args.name)
    proc = lab.start(args.node)
    seconds = lab.wait_started(args.node)
    stdout().print(f"{args.node} of lab {lab.name} started (pid {proc.pid}), ready in {seconds:.1f}s")
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    """`wgmesh lab move-to-postgresql`."""
    check_hubs(args.coordinators, "--coordinators")  # bad usage, before the lab is looked for
    lab = Lab.attach(args.name)
    with _progress(False) as progress:
        down = lab.move_to_postgresql(args.coordinators, progress)
    urls = ", ".join(lab.plan.coordinator_urls)
    stdout().print(f"lab {lab.name} registry on PostgreSQL; coordinators {urls} (down {down:.1f}s)")
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    """`wgmesh lab ping`: exit 1 when any VPC host cannot reach another."""
    if not 1 <= args.count <= 100:
        raise ValidationError(f"--count must be between 1 and 100, not {args.count}", code="invalid_count")
    lab = Lab.attach(args.name)
    matrix = lab.ping_matrix(count=args.count)
    failed = sum(1 for rtt in matrix.values() if rtt is None)
    sites = lab.plan.sites
    # Hosts whose LAN another site shares (--lan) neither ping nor are pinged: their address proves nothing.
    skipped = [(a, b) for a in sites for b in sites if a is not b and (a.index, b.index) not in matrix]
    if args.json:
        print_json(
            {
                "pairs": [
                    {"from": lab.plan.site(a).host, "to": lab.plan.site(b).host, "rtt_ms": rtt}
                    for (a, b), rtt in sorted(matrix.items())
                ],
                "failed": failed,
                "skipped": [{"from": a.host, "to": b.host} for a, b in skipped],
            }
        )
    else:
        table = Table(title="ping (avg RTT in ms), from row to column", title_justify="left")
        table.add_column("")
        for site in sites:
            table.add_column(f"{site.host} {site.vm_ip}", justify="right")
        for a in sites:
            cells = []
            for b in sites:
                rtt = matrix.get((a.index, b.index))
                if a is b:
                    cells.append("")
                elif (a.index, b.index) not in matrix:
                    cells.append("-")
                else:
                    cells.append("[red]lost[/red]" if rtt is None else f"{rtt:.2f}")
            table.add_row(a.host, *cells)
        stdout().print(table)
        if skipped:
            shared = ", ".join(lab.plan.site(i).host for i in sorted(lab.plan.shared_lans))
            stdout().print(
                f"-: not pinged: the LAN of {shared} overlaps another site's (--lan), "
                "so an address there names no one host, either way"
            )
    if failed:
        raise WgmeshError(f"{failed} of {len(matrix)} host pairs cannot reach each other", code="unreachable")
    return 0


@dataclass(frozen=True)
class SwitchValue:
    """The one value a runtime switch takes after the site list (a rate, an MTU), parsed before anything changes."""

    metavar: str
    help: str
    parse: Callable[[str], object]


@dataclass(frozen=True)
class Switch:
    """A runtime switch of the lab as a command: `wgmesh lab COMMAND I[,I...] [VALUE]`, idempotent,
    applied site by site through the lab's own table (wgmesh.lab.switches)."""

    command: str
    help: str
    target: str  # what the numbers name, for the help
    switch: switches.Switch[Any]
    said: Callable[[Any], str]  # what is now true, for the one line printed
    value: SwitchValue | None = None

    def run(self, args: argparse.Namespace) -> int:
        """Parse the value and the sites (usage errors before any change), apply, and say what holds."""
        value = None if self.value is None else self.value.parse(getattr(args, self.value.metavar))
        indexes = parse_sites(args.sites, "site list")
        lab = Lab.attach(args.name)
        sites = [lab.plan.site(i) for i in indexes]
        for index in indexes:
            lab.switch(self.switch, index, value)
        names = ", ".join(s.host if self.switch.on_host else s.node for s in sites)
        stdout().print(f"lab {lab.name}: {names}: {self.said(value)}")
        return 0


SWITCHES = (
    Switch(
        "block-udp",
        "drop all UDP to and from gateways on their underlay link",
        "gateway",
        switches.BLOCK_UDP,
        lambda _: "UDP blocked on the underlay link",
    ),
    Switch(
        "unblock-udp",
        "let UDP through gateways' underlay link again",
        "gateway",
        switches.UNBLOCK_UDP,
        lambda _: "UDP unblocked",
    ),
    Switch(
        "throttle-udp",
        "limit UDP on gateways' underlay link, both ways (replaces any earlier limit)",
        "gateway",
        switches.THROTTLE_UDP,
        lambda rate: f"UDP limited to {rate} each way",
        SwitchValue("RATE", "e.g. 10mbit (units: bit, kbit, mbit, gbit)", parse_rate),
    ),
    Switch(
        "unthrottle-udp",
        "remove the UDP limit of gateways",
        "gateway",
        switches.UNTHROTTLE_UDP,
        lambda _: "UDP limit removed",
    ),
    Switch(
        "lan-mtu",
        "set the MTU of sites' LAN (gateway lan and VPC host eth0)",
        "site",
        switches.SET_LAN_MTU,
        lambda mtu: f"LAN MTU {mtu} (gateway lan and VPC host eth0)",
        SwitchValue(
            "MTU", f"{LAN_MTU.low}-{LAN_MTU.high}; 1500 is the default", lambda t: parse_mtu(t, LAN_MTU)
        ),
    ),
    Switch(
        "underlay-mtu",
        "set the MTU of gateways' underlay link (both veth ends)",
        "gateway",
        switches.SET_UNDERLAY_MTU,
        lambda mtu: f"underlay MTU {mtu} (agents fit their tunnel to it within about 10 s)",
        SwitchValue(
            "MTU",
            f"{UNDERLAY_MTU.low}-{UNDERLAY_MTU.high}; 1500 is the default",
            lambda t: parse_mtu(t, UNDERLAY_MTU),
        ),
    ),
    Switch(
        "sg-drop-icmp",
        "VPC hosts drop inbound ICMP unreachables (security group)",
        "VPC host",
        switches.SG_DROP_ICMP,
        lambda _: "inbound ICMP unreachable dropped (security group)",
    ),
    Switch(
        "sg-allow-icmp",
        "let ICMP unreachables reach VPC hosts again",
        "VPC host",
        switches.SG_ALLOW_ICMP,
        lambda _: "inbound ICMP unreachable allowed",
    ),
)


def _tcp_switch(blocked: bool) -> Callable[[argparse.Namespace], int]:
    """`wgmesh lab block-tcp I,J [I,J ...]` (or `unblock-tcp`): every pair parsed (usage errors) before
    any change, then applied pair by pair in both gateways; idempotent."""

    def run(args: argparse.Namespace) -> int:
        pairs = sorted({parse_pair(text, "site pair") for text in args.pairs})
        lab = Lab.attach(args.name)
        # Unknown sites are bad usage, found before anything changes.
        named = [(lab.plan.site(a).node, lab.plan.site(b).node) for a, b in pairs]
        said = "TCP blocked between their underlay addresses" if blocked else "TCP unblocked"
        for (a, b), (node_a, node_b) in zip(pairs, named, strict=True):
            if blocked:
                lab.block_tcp(a, b)
            else:
                lab.unblock_tcp(a, b)
            stdout().print(f"lab {lab.name}: {node_a} <-> {node_b}: {said}")
        return 0

    return run


def cmd_down(args: argparse.Namespace) -> int:
    """`wgmesh lab down`: idempotent; says when there was nothing to remove."""
    start = time.monotonic()
    report = down(args.name)
    seconds = round(time.monotonic() - start, 2)
    if args.json:
        print_json({**asdict(report), "seconds": seconds})
    elif report.removed_anything():
        stdout().print(
            f"lab {args.name} removed in {seconds}s: {report.processes} process(es), "
            f"{len(report.namespaces)} namespace(s), {len(report.links)} link(s)"
        )
    else:
        stdout().print(f"lab {args.name}: nothing to remove")
    return 0
