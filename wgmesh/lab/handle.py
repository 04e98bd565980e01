"""`Lab`, the handle on a running lab that tests, benchmarks and the CLI hold.

A facade: it keeps the lab's record and hands each call to the module that holds the concern —
`services` (coordinator, relay, agents), `switches` (runtime impairments), `observe` (peers,
convergence), `status`, `teardown`.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address
from typing import Any, TypeVar

from wgmesh.api_client import JsonValue
from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.lab import migration, procs, services, switches, system
from wgmesh.lab.api import admin_client
from wgmesh.lab.converge import GatewayView, Verdict, assess, parse_default_via
from wgmesh.lab.layout import (
    STATE_ROOT,
    Gateway,
    LabPlan,
    Node,
    Service,
    Site,
    resolve_node,
    resolve_service,
    site_commands,
    validate_name,
)
from wgmesh.lab.observe import ping_matrix, read_all, read_gateways, wait_converged
from wgmesh.lab.record import LabState, load, save
from wgmesh.lab.services import COORDINATOR_START_TIMEOUT, RELAY_START_TIMEOUT
from wgmesh.lab.status import LabStatus, lab_status
from wgmesh.lab.switches import Switch
from wgmesh.lab.teardown import DownReport, down
from wgmesh.lab.timescale import scaled
from wgmesh.lab.wait import Progress, quiet
from wgmesh.values import P2PPolicy

V = TypeVar("V")


class Lab:
    """A running lab: run commands on its nodes, call its coordinator, grow it, stop and restart pieces."""

    def __init__(self, state: LabState) -> None:
        self.state = state

    @classmethod
    def attach(cls, name: str) -> Lab:
        """The running lab `name`, or an error saying it is not up."""
        validate_name(name)
        state = load(name)
        if state is None:
            raise WgmeshError(f"lab {name} is not up (no state in {STATE_ROOT / name})", code="no_lab")
        return cls(state)

    def refresh(self) -> None:
        """Re-read the record file (after another process changed the lab, e.g. `wgmesh lab add-site`)."""
        self.state = Lab.attach(self.name).state

    # --- addressing ---

    @property
    def name(self) -> str:
        """The lab's name (the prefix of everything it creates)."""
        return self.state.name

    @property
    def plan(self) -> LabPlan:
        """The lab's current layout."""
        return self.state.plan()

    @property
    def url(self) -> str:
        """The coordinator's URL on the host's loopback."""
        return self.plan.local_url

    @property
    def pin(self) -> str:
        """The coordinator's pin (`sha256:…`): what clients of the lab trust its HTTPS by."""
        if self.state.coordinator_pin is None:
            raise WgmeshError(f"lab {self.name} has no coordinator pin yet (start its hub)", code="no_pin")
        return self.state.coordinator_pin

    @property
    def admin_token(self) -> str:
        """The coordinator's admin token."""
        return self.state.admin_token

    def node(self, name: str) -> Node:
        """A node of the lab by name (`hub`, `gwI`, `vmI`)."""
        return resolve_node(self.plan, name)

    def node_service(self, node: str) -> Service:
        """The lab process `node` names (`hub`, `hub2`, `relay`, `relay2`, `gwI`, `db`), or ValidationError."""
        return resolve_service(self.plan, node)

    def argv(self, node: str, cmd: Sequence[str]) -> list[str]:
        """The command line that runs `cmd` on `node`."""
        if not cmd:
            raise ValidationError("no command given", code="no_command")
        target = self.node(node)
        if target.netns is None:
            return list(cmd)
        return ["ip", "netns", "exec", target.netns, *cmd]

    def exec(
        self, node: str, *cmd: str, check: bool = False, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` on `node` and return its result (text); with `check`, a failure raises WgmeshError."""
        return system.run(self.argv(node, cmd), check=check, timeout=timeout, input=input)

    def popen(self, node: str, *cmd: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start `cmd` on `node` in the background (it is ended by `down` if still running in a namespace)."""
        kwargs.setdefault("text", True)
        proc: subprocess.Popen[str] = subprocess.Popen(self.argv(node, cmd), **kwargs)
        return proc

    # --- the coordinator and the relay ---

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = 10.0,
        coordinator: int | None = None,
    ) -> JsonValue:
        """Call the coordinators' API as admin (the first that answers, or only coordinator number
        `coordinator`): its JSON answer (None when empty); an error answer raises the class its code maps
        to (wgmesh.errors), with `METHOD PATH: STATUS message`."""
        url = None if coordinator is None else self.plan.coordinator_url(coordinator)
        with admin_client(self.state, url) as api:
            return api.json(method, path, json=body, timeout=scaled(timeout))

    def wait_coordinator(self, timeout: float = COORDINATOR_START_TIMEOUT, node: str = "hub") -> float:
        """Wait until coordinator `node` answers /healthz; fail at once if it exits."""
        return services.wait_coordinator(self.state, timeout, node)

    def prepare_relay(self) -> str:
        """Initialise the database and fetch the coordinator's relay-ticket public key (kept in the record)."""
        return services.prepare_relay(self.state)

    def wait_relay(self, timeout: float = RELAY_START_TIMEOUT, node: str = "relay") -> float:
        """Wait until relay `node` listens on its hub address; fail at once if it exits."""
        return services.wait_relay(self.state, timeout, node)

    def wait_started(self, node: str) -> float:
        """Wait until a service just started does its job (a coordinator answers, a relay listens, the
        database accepts connections)."""
        return services.wait_started(self.state, node)

    # --- switches ---

    def switch(self, switch: Switch[V], index: int, value: V) -> V:
        """Apply a runtime switch (wgmesh.lab.switches) to site `index`; returns its normalised value."""
        return switch.flip(self.state, index, value)

    def block_udp(self, index: int) -> None:
        """Drop all UDP to and from gateway `index` on its underlay link (idempotent)."""
        self.switch(switches.BLOCK_UDP, index, None)

    def unblock_udp(self, index: int) -> None:
        """Let UDP through gateway `index`'s underlay link again (idempotent)."""
        self.switch(switches.UNBLOCK_UDP, index, None)

    def block_tcp(self, a: int, b: int) -> None:
        """Drop all TCP between gateways `a` and `b`'s underlay addresses, both ways, in both gateways
        (idempotent); their TCP to anything else (coordinators, relays, other gateways) still flows."""
        switches.set_tcp_blocked(self.state, a, b, blocked=True)

    def unblock_tcp(self, a: int, b: int) -> None:
        """Let TCP between gateways `a` and `b` through again (idempotent); their other blocks stay."""
        switches.set_tcp_blocked(self.state, a, b, blocked=False)

    def throttle_udp(self, index: int, rate: str) -> str:
        """Limit UDP on gateway `index`'s underlay link to `rate` each way (replacing any limit); returns the rate."""
        return self.switch(switches.THROTTLE_UDP, index, rate)

    def unthrottle_udp(self, index: int) -> None:
        """Remove the UDP limit of gateway `index` (idempotent)."""
        self.switch(switches.UNTHROTTLE_UDP, index, None)

    def set_lan_mtu(self, index: int, mtu: int) -> None:
        """Give site `index`'s LAN (gateway `lan`, VPC host `eth0`) this MTU; 1500 is the default again."""
        self.switch(switches.SET_LAN_MTU, index, mtu)

    def set_underlay_mtu(self, index: int, mtu: int) -> None:
        """Give gateway `index`'s underlay link (both veth ends) this MTU; 1500 is the default again."""
        self.switch(switches.SET_UNDERLAY_MTU, index, mtu)

    def sg_drop_icmp(self, index: int) -> None:
        """Make VPC host `index` drop inbound ICMP unreachables and ICMPv6 packet-too-big (idempotent)."""
        self.switch(switches.SG_DROP_ICMP, index, None)

    def sg_allow_icmp(self, index: int) -> None:
        """Let ICMP unreachables reach VPC host `index` again (idempotent)."""
        self.switch(switches.SG_ALLOW_ICMP, index, None)

    def set_p2p(self, index: int, policy: P2PPolicy) -> None:
        """Set gateway `index`'s P2P policy through the coordinator (the node must be enrolled)."""
        switches.set_p2p(self.state, index, policy)

    # --- processes ---

    def process(self, node: str) -> procs.ProcessId | None:
        """The recorded process of a coordinator, relay, agent or the database, if any."""
        return services.process(self.state, node)

    def alive(self, node: str) -> bool:
        """Whether the recorded coordinator (`hub`, `hub2`), relay (`relay`, `relay2`), agent (`gwI`) or
        database (`db`) is running."""
        return services.alive(self.state, node)

    def start(self, node: str) -> procs.ProcessId:
        """Start (or restart) a coordinator (`hub`, `hub2`), a relay (`relay`, `relay2`), a gateway's agent
        (`gwI`) or the database (`db`)."""
        return services.start(self.state, node)

    def kill(
        self,
        node: str,
        sig: signal.Signals = signal.SIGTERM,
        *,
        wait: float = services.STOP_BUDGET,
        remove_interface: bool = False,
    ) -> bool:
        """Signal the recorded coordinator, relay, agent or database and wait for it to end; False when it
        was not running (see services.kill). With `remove_interface` (gateways only), the gateway's
        WireGuard interface is deleted afterwards, as when its machine dies."""
        if remove_interface:
            self.plan.gateway(node)  # a gateway, or ValidationError before anything is signalled
        killed = services.kill(self.state, node, sig, wait=wait)
        if remove_interface:
            self.remove_interface(node)
        return killed

    def remove_interface(self, node: str) -> bool:
        """Delete gateway `node`'s WireGuard interface (and end its wireguard-go), as when the machine
        dies; False when there was none. For a gateway whose agent is stopped."""
        return services.remove_interface(self.state, node)

    def signal(self, node: str, sig: signal.Signals) -> bool:
        """Send `sig` to a recorded lab process without waiting for anything (SIGSTOP hangs it, SIGCONT
        lets it go on); False when it was not running."""
        proc = services.process(self.state, node)
        return proc is not None and procs.send(proc, sig)

    def start_agents(self, sites: Iterable[Site | Gateway]) -> None:
        """Start the agent of each site's own gateway, or of each gateway."""
        for site in sites:
            self.start(site.node)

    def approve_ha_routes(self, timeout: float = 30.0, progress: Progress = quiet) -> float:
        """Approve each HA site's prefix on its second gateway, as an admin would, once it advertises it."""
        return services.approve_ha_routes(self.state, timeout, progress)

    def wait_advertised(self, sites: Iterable[Site], timeout: float, progress: Progress = quiet) -> float:
        """Wait until the coordinator lists each site's LAN among its own gateway's routes."""
        lans = {site.node: site.lan for site in sites}
        return services.wait_advertised(self.state, lans, timeout, progress)

    def wait_enrolled(self, nodes: Iterable[str], timeout: float, progress: Progress = quiet) -> float:
        """Wait until the coordinator lists every one of `nodes`; fail at once if an agent exits."""
        return services.wait_enrolled(self.state, nodes, timeout, progress)

    # --- convergence ---

    def observe(self) -> dict[int, GatewayView]:
        """Each site's own gateway's WireGuard peers (by site), read in parallel."""
        return read_gateways(self.plan)

    def observe_all(self) -> dict[str, GatewayView]:
        """Every gateway's WireGuard peers and public key (by node: `gw2`, `gw2b`), read in parallel."""
        return read_all(self.plan)

    def verdict(self) -> Verdict:
        """How far the mesh is from converged, right now."""
        return assess(self.plan, self.observe_all())

    def wait_converged(
        self, timeout: float | None = None, progress: Progress = quiet, *, started: float | None = None
    ) -> float:
        """Wait until every gateway lists every other site with a handshake; returns the seconds taken.

        `timeout` None is the lab's default for its size (LabPlan.convergence_budget).

        `started` (a time.monotonic() value) counts the timeout from an earlier moment, such as the start of `up`.
        """
        return wait_converged(self.state, timeout, progress, started=started)

    def vpc_route(self, index: int) -> IPv4Address | None:
        """Where VPC host `index` sends mesh traffic: its default route's next hop (on an HA site, the LAN
        address of the gateway the route-table hook last made primary), or None."""
        site = self.plan.site(index)
        done = self.exec(site.host, "ip", "-4", "route", "show", "default", check=True)
        return parse_default_via(done.stdout)

    def ping_matrix(self, count: int = 1, wait: float = 2.0) -> dict[tuple[int, int], float | None]:
        """Average RTT in ms from each VPC host to every other one (None: no answer), pinged in parallel; a
        host whose LAN another site shares (`--lan`) neither pings nor is pinged, so its pairs are missing."""
        return ping_matrix(self.plan, count, wait)

    # --- growing, status, teardown ---

    def move_to_postgresql(self, coordinators: int = 1, progress: Progress = quiet) -> float:
        """Move the registry from SQLite to a PostgreSQL cluster of the lab's own and run `coordinators`
        coordinators on it: the way from one machine to HA (docs/deploy.md). Returns the seconds the
        coordinators were down. Agents and relays keep running; they find the first coordinator back at
        its address with the same identity, keys and tokens."""
        return migration.move_to_postgresql(self.state, coordinators, progress)

    def add_site(self, timeout: float | None = None, progress: Progress = quiet) -> Site:
        """Add site N+1 (namespaces, links, agent) and wait for the mesh to include it (`timeout` None:
        the default for the grown lab's size)."""
        plan = self.plan.with_sites(self.state.sites + 1)
        site = plan.sites[-1]
        progress(f"building site {site.index}")
        system.apply(site_commands(plan, site))
        self.state.sites += 1
        save(self.state)
        if self.state.agents:
            self.start(site.node)
            self.wait_converged(timeout, progress)
        return site

    def status(self) -> LabStatus:
        """Namespaces, processes and per-gateway peers."""
        return lab_status(self.state)

    def down(self) -> DownReport:
        """Tear the lab down."""
        return down(self.name)
