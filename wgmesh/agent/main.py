"""`wgmesh-agent`: the command line (flags, signals) around the agent's wiring in `agent/agent.py`."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import get_args

from wgmesh import __version__, logs, malloc
from wgmesh.agent import config as agent_config
from wgmesh.agent import ha, route_guard
from wgmesh.agent.agent import Agent, Stopped
from wgmesh.agent.dataplane import DataPlane
from wgmesh.agent.local_status import SOCKET_NAME, read_local_status
from wgmesh.entrypoint import run_console
from wgmesh.logs import kv
from wgmesh.values import Backend

log = logging.getLogger("wgmesh.agent")


RERAISE_EVERY = 0.5
"""Seconds between repeats of a stop until the main thread unwinds."""


class StopOnSignal:
    """SIGTERM and SIGINT stop the agent: the stop event is set and Stopped is raised in the main thread,
    to unwind it out of a blocking call (a long poll, an apply).

    A raise can be lost: one that lands while the interpreter runs an object's `__del__` (a garbage
    collected event loop, in run 13 of issue 12) is printed and ignored, and the agent went on applying
    netmaps. So the stop is raised again every RERAISE_EVERY seconds (SIGALRM) until the agent begins to
    unwind and calls `disarm`, after which its clean-up runs undisturbed.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.reason = ""
        self.armed = True

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            signal.signal(sig, self)

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if signum != signal.SIGALRM:
            self.reason = self.reason or signal.Signals(signum).name
            self.stop.set()
            signal.setitimer(signal.ITIMER_REAL, RERAISE_EVERY, RERAISE_EVERY)
        if self.armed and self.stop.is_set():
            raise Stopped(self.reason)

    def disarm(self) -> None:
        """The agent is unwinding: no more raises."""
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def build_parser() -> argparse.ArgumentParser:
    """The agent's command-line parser."""
    parser = argparse.ArgumentParser(prog="wgmesh-agent", description="wgmesh agent for a gateway.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", help=f"TOML config file (default {agent_config.DEFAULT_CONFIG} if present)"
    )
    parser.add_argument("--json", action="store_true", help="with status: print JSON")
    parser.add_argument("--log-level", default="info", choices=logs.LEVELS)
    parser.add_argument("--interface", help="WireGuard interface name (default wgmesh0)")
    parser.add_argument("--backend", choices=get_args(Backend))
    parser.add_argument("--state-dir", help="state directory (default /var/lib/wgmesh-agent)")
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "status", "cleanup"],
        help="run (default); status: the running agent's peers (no coordinator needed); "
        "cleanup: remove the interface, routes and firewall rules the agent made",
    )
    parser.add_argument(
        "--coordinator",
        action="append",
        default=[],
        metavar="URL",
        help="coordinator URL, e.g. https://198.18.0.1:8080 (default: the token's); repeat it for several "
        "coordinators of one registry: the agent uses the first that answers and fails over to the next",
    )
    parser.add_argument(
        "--token", help="enrollment token (needed only for the first start; it carries the coordinator's pin)"
    )
    parser.add_argument(
        "--coordinator-pin",
        metavar="sha256:HEX",
        help="the coordinator's key, for a token without one (`wgmesh-coordinator pin`); once pinned, the "
        "state directory's pin counts",
    )
    parser.add_argument("--name", help="node name (default: the hostname)")
    parser.add_argument(
        "--advertise",
        action="append",
        default=[],
        metavar="CIDR[=ALIAS]",
        help="a subnet this gateway routes for (repeatable); with =ALIAS (same length), the other sites "
        "reach it at ALIAS, translated here (VPCs whose CIDRs overlap). Stated to the coordinator at every start as "
        "this gateway's whole list: a subnet no longer given is withdrawn, and with none (here or in the "
        "config file) every subnet of this node is withdrawn, including one an admin set through the API",
    )
    parser.add_argument(
        "--site",
        metavar="NAME",
        help="the site (VPC) this gateway serves (default: a site of its own, named after the node); "
        "gateways of one site advertising the same subnet form an HA group that fails over between them",
    )
    parser.add_argument(
        "--on-primary",
        metavar="CMD",
        help="run CMD when this gateway becomes or stops being the one carrying an HA subnet, to point the "
        "cloud's route table at it (WGMESH_HA_ROLE, WGMESH_HA_PREFIX, WGMESH_NODE, … in its environment); "
        "without it, the gateway masquerades what it forwards into an HA subnet",
    )
    parser.add_argument(
        "--ha-preempt-after",
        type=float,
        metavar="SECONDS",
        help=f"an HA subnet's earlier member takes it back only after answering for this long "
        f"(default {ha.PREEMPT_AFTER:g})",
    )
    parser.add_argument("--listen-port", type=int)
    parser.add_argument(
        "--tcp-port",
        type=int,
        metavar="PORT",
        help="take peers' datagrams over TCP on this port when UDP between them fails, straight to this "
        "agent (default: the WireGuard port's number; 0: off, such peers use the relay)",
    )
    parser.add_argument("--relay-ca", help="CA bundle to verify tls:// relays with (default: the system's)")
    parser.add_argument(
        "--metrics-listen",
        metavar="ADDRESS:PORT",
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics, or off (default 127.0.0.1:9586)",
    )
    parser.add_argument(
        "--masquerade",
        action="store_true",
        default=None,
        help="masquerade tunnel traffic leaving into the VPC",
    )
    parser.add_argument(
        "--no-mss-clamp",
        dest="mss_clamp",
        action="store_const",
        const=False,
        default=None,
        help="do not clamp the TCP MSS of forwarded traffic to the tunnel's MTU (on by default)",
    )
    parser.add_argument(
        "--min-prefix-length",
        type=int,
        metavar="N",
        help=f"refuse netmap routes into the tunnel shorter than /N for IPv4 (default {route_guard.MIN_PREFIX_V4})",
    )
    parser.add_argument(
        "--min-prefix-length6",
        type=int,
        metavar="N",
        help=f"the same for IPv6 (default {route_guard.MIN_PREFIX_V6})",
    )
    parser.add_argument(
        "--allow-wide-routes",
        action="store_true",
        default=None,
        help="install netmap routes of any width, a default route too; a route covering the coordinator, "
        "a relay, the underlay next hop or a direct peer's endpoint stays refused",
    )
    return parser


def run(argv: Sequence[str]) -> int:
    """The agent's command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level)
    if args.command == "cleanup":
        cfg = agent_config.load(args, require_coordinator=False)
        DataPlane.cleanup_interface(cfg.interface)
        log.info("cleaned up", extra=kv(interface=cfg.interface))
        return 0
    if args.command == "status":
        cfg = agent_config.load(args, require_coordinator=False)
        status = read_local_status(cfg.state_dir / SOCKET_NAME)
        from wgmesh.cli.local import show_local_status  # noqa: PLC0415 - rich only for this command

        show_local_status(status, as_json=args.json)
        return 0
    cfg = agent_config.load(args)
    agent = Agent(cfg)
    # Everything made so far (modules, pydantic's schemas) lives as long as the process: out of the
    # collector's sight, a full collection at 1,000 peers takes half as long (~25 ms instead of ~50 ms,
    # during which a netmap is not applied).
    gc.freeze()
    malloc.map_large_blocks()  # a report or netmap of 1,000 peers is a block of its own, unmapped when freed
    stopper = StopOnSignal(agent.stop)
    agent.on_unwind = stopper.disarm
    stopper.install()
    try:
        agent.run()
    except Stopped as exc:
        agent.stop.set()
        log.info("stopping; the interface stays up", extra=kv(reason=str(exc) or "interrupt"))
    finally:
        stopper.disarm()
    return 0


def main() -> None:
    """Console entry point: bad usage exits 2, failures exit 1, each with one line."""
    run_console("wgmesh-agent", run)
