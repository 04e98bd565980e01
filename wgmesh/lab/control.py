"""Running a lab: build it from the plan, start the coordinator and agents, wait for the mesh, tear it down."""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib
import ipaddress
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wgmesh.api_client import JsonValue
from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.lab import procs, system
from wgmesh.lab.api import LabApi
from wgmesh.lab.cloud import (
    LAN_MTU,
    UNDERLAY_MTU,
    check_mtu,
    lan_mtu_commands,
    sg_allow_icmp_script,
    sg_drop_icmp_script,
    underlay_mtu_commands,
    with_mtu,
)
from wgmesh.lab.converge import GatewayView, Verdict, assess, parse_ping_rtt, parse_wg_dump
from wgmesh.lab.impair import (
    block_udp_script,
    check_sites,
    describe,
    parse_rate,
    throttle_commands,
    unblock_udp_script,
    unthrottle_commands,
)
from wgmesh.lab.plan import (
    LOOPBACK_BASE_PORT,
    MAX_SLOT,
    RELAY_PORT,
    STATE_ROOT,
    LabPlan,
    Node,
    Site,
    agent_args,
    build_commands,
    choose_slot,
    coordinator_args,
    coordinator_init_args,
    loopback_forward_script,
    plan_lab,
    relay_args,
    relay_key_args,
    resolve_node,
    site_commands,
    validate_name,
)
from wgmesh.lab.state import LabState, ProcessRecord, all_states, load, machine_lock, save
from wgmesh.lab.teardown import DownReport, down, leftovers
from wgmesh.lab.timescale import scaled, time_scale
from wgmesh.lab.wait import NotYet, WaitTimeout, wait_until
from wgmesh.logs import kv
from wgmesh.values import Backend, P2PPolicy

log = logging.getLogger("wgmesh.lab")

Progress = Callable[[str], None]

COORDINATOR_START_TIMEOUT = 20.0
RELAY_START_TIMEOUT = 10.0
RELAY_PROGRAM = "wgmesh-relay"
POLL_INTERVAL = 0.2
NUDGE_INTERVAL = 1.0
# Runs the lab with another agent build (another checkout, an older release) instead of this one's.
AGENT_ENV = "WGMESH_LAB_AGENT"
# The same for the hub's relay (a path that is not a program makes the lab run without a relay).
RELAY_ENV = "WGMESH_LAB_RELAY"


def _quiet(_: str) -> None:
    """The progress sink when nobody is watching."""


def _log_warning(text: str) -> None:
    """The warning sink when nobody is watching: the log."""
    log.warning(text)


# --- preconditions --------------------------------------------------------------------------------


def agent_available() -> bool:
    """Whether there is a working agent: `wgmesh.agent.main` imports, or $WGMESH_LAB_AGENT is a program."""
    override = os.environ.get(AGENT_ENV)
    if override:
        return os.access(override, os.X_OK)
    try:
        importlib.import_module("wgmesh.agent.main")
    except (ImportError, SyntaxError):
        return False
    return True


def relay_available() -> bool:
    """Whether `wgmesh-relay` is installed (beside this Python or on PATH), or $WGMESH_LAB_RELAY is a program."""
    override = os.environ.get(RELAY_ENV)
    if override:
        return os.access(override, os.X_OK)
    try:
        program(RELAY_PROGRAM)
    except WgmeshError:
        return False
    return True


def program(name: str) -> str:
    """The path of a wgmesh console script, preferring the one next to this Python (the same venv)."""
    if name == "wgmesh-agent" and os.environ.get(AGENT_ENV):
        return os.environ[AGENT_ENV]
    if name == RELAY_PROGRAM and os.environ.get(RELAY_ENV):
        return os.environ[RELAY_ENV]
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise WgmeshError(f"{name} is not installed", code="missing_tool")
    return found


def _require_tools(names: Iterable[str]) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise WgmeshError(f"missing tools: {', '.join(missing)} (run 'make setup')", code="missing_tool")


# --- up -------------------------------------------------------------------------------------------


def _taken_slots() -> tuple[set[int], set[int]]:
    """Slots and loopback ports held by other labs, or by anything addressed inside 198.18.0.0/16."""
    slots = {s.slot for s in all_states()}
    ports = {s.loopback_port for s in all_states()}
    for text in system.root_addresses():
        iface = ipaddress.ip_interface(text)
        if iface.ip in ipaddress.IPv4Network("198.18.0.0/16"):
            slots.add(int(str(iface.ip).split(".")[2]))
    return slots, ports


def _choose_port(slot: int, taken: set[int]) -> int:
    for port in range(LOOPBACK_BASE_PORT + slot, LOOPBACK_BASE_PORT + MAX_SLOT + 100):
        if port not in taken and system.loopback_port_free(port):
            return port
    raise WgmeshError("no free loopback port for the lab's API", code="no_port")


def up(
    name: str,
    sites: int,
    backend: Backend = "userspace",
    *,
    agents: bool = True,
    timeout: float = 60.0,
    progress: Progress = _quiet,
    relay: bool | None = None,
    block_udp: Iterable[int] = (),
    throttle_udp: Mapping[int, str] | None = None,
    p2p_off: Iterable[int] = (),
    lan_mtu: Mapping[int, int] | None = None,
    underlay_mtu: Mapping[int, int] | None = None,
    sg_drop_icmp: Iterable[int] = (),
    warn: Progress = _log_warning,
) -> Lab:
    """Build lab `name`, start its coordinator, relay and agents, and return once the mesh has converged.

    `relay=None` runs the relay when `wgmesh-relay` is installed and warns when it is not.
    `lan_mtu` and `underlay_mtu` ({site: MTU}) and `sg_drop_icmp` (sites) make sites look like cloud
    VPCs (docs/lab.md); like the other switches they are in force before any agent starts.
    """
    # Bad usage is reported as such, before anything else is checked or touched.
    plan = plan_lab(name, sites)
    if timeout <= 0:
        raise ValidationError(f"--timeout must be positive, not {timeout:g}", code="invalid_timeout")
    blocked = sorted(set(block_udp))
    throttled = {index: parse_rate(rate) for index, rate in sorted((throttle_udp or {}).items())}
    off = sorted(set(p2p_off))
    lan_mtus = {index: check_mtu(mtu, LAN_MTU) for index, mtu in sorted((lan_mtu or {}).items())}
    underlay_mtus = {
        index: check_mtu(mtu, UNDERLAY_MTU) for index, mtu in sorted((underlay_mtu or {}).items())
    }
    sg = sorted(set(sg_drop_icmp))
    check_sites(plan, blocked, "--block-udp")
    check_sites(plan, throttled, "--throttle-udp")
    check_sites(plan, off, "--p2p-off")
    check_sites(plan, lan_mtus, "--lan-mtu")
    check_sites(plan, underlay_mtus, "--underlay-mtu")
    check_sites(plan, sg, "--sg-drop-icmp")
    if off and not agents:
        raise ValidationError("--p2p-off needs agents (it changes enrolled nodes)", code="invalid_p2p_off")
    if relay is False and off:
        raise ValidationError("--p2p-off needs the relay; drop --no-relay", code="invalid_p2p_off")
    system.require_root()
    tools = ["ip", "nft", "ss"] + (["tc"] if throttled else []) + (["wg", "wireguard-go"] if agents else [])
    _require_tools(tools)
    if agents and not agent_available():
        raise WgmeshError(
            "wgmesh-agent is not available (wgmesh.agent.main cannot be imported); "
            "use --no-agents to build the network alone",
            code="no_agent",
        )
    if relay is None:
        relay = relay_available()
        if not relay:
            if off:
                raise WgmeshError(
                    f"--p2p-off needs the relay, and {RELAY_PROGRAM} is not installed", code="missing_tool"
                )
            # Tolerated only while the relay program does not exist yet: the lab is still useful for
            # direct paths, and the warning says what is missing.
            warn(f"{RELAY_PROGRAM} is not installed: lab {name} runs without a relay (direct paths only)")
    elif not relay_available():
        raise WgmeshError(
            f"{RELAY_PROGRAM} is not installed (use --no-relay to run without it)", code="missing_tool"
        )
    start = time.monotonic()
    with machine_lock():
        found = leftovers(name)
        if found.any():
            raise WgmeshError(
                f"lab {name} already exists ({found.describe()}); run 'wgmesh lab down --name {name}' first",
                code="lab_exists",
            )
        slots, ports = _taken_slots()
        slot = choose_slot(slots)
        state = LabState(
            name=name,
            slot=slot,
            loopback_port=_choose_port(slot, ports),
            sites=sites,
            backend=backend,
            agents=agents,
            admin_token=secrets.token_urlsafe(32),
            relay=relay,
        )
        # Written before anything is built: from here on, `down` can find every piece.
        save(state)
    lab = Lab(state)
    plan = state.plan()
    try:
        progress(f"building {sites} site(s) on {plan.underlay}")
        system.apply(build_commands(plan))
        system.nft_apply(loopback_forward_script(plan))
        # Before any agent runs, so no agent ever sees the unimpaired underlay.
        for index in blocked:
            lab.block_udp(index)
        for index, rate in throttled.items():
            lab.throttle_udp(index, rate)
        # Also before the agents: an agent may size its tunnel from the underlay MTU when it starts.
        for index, mtu in underlay_mtus.items():
            lab.set_underlay_mtu(index, mtu)
        for index, mtu in lan_mtus.items():
            lab.set_lan_mtu(index, mtu)
        for index in sg:
            lab.sg_drop_icmp(index)
        if relay:
            progress("creating the coordinator's relay key")
            lab.prepare_relay()
        progress(f"starting the coordinator on {plan.hub_url}")
        lab.start("hub")
        lab.wait_coordinator()
        if relay:
            progress(f"starting the relay on {plan.relay_url}")
            lab.start("relay")
            lab.wait_relay()
    except BaseException:
        # Nothing worth inspecting has run yet: leave no half-built lab behind.
        down(name)
        raise
    log.info(
        "lab built", extra=kv(lab=name, sites=sites, slot=slot, seconds=round(time.monotonic() - start, 2))
    )
    if not agents:
        return lab
    try:
        lab.start_agents(plan.sites)
        if off:
            # The policy can only be set on enrolled nodes; convergence is then awaited over the relay.
            # What is left of the budget, in reference seconds (wait_enrolled scales it again).
            left = timeout - (time.monotonic() - start) / time_scale()
            lab.wait_enrolled([plan.site(i).node for i in off], left, progress)
            for index in off:
                lab.set_p2p(index, "off")
        lab.wait_converged(timeout, progress, started=start)
    except WgmeshError as exc:
        # Agents have run: keep the lab so their logs and interfaces can be inspected.
        raise WgmeshError(
            f"{exc.message}; the lab is left up for inspection ('wgmesh lab down --name {name}' removes it)",
            code=exc.code,
        ) from exc
    return lab


# --- the handle -----------------------------------------------------------------------------------


@dataclass
class GatewayStatus:
    """One gateway as `status` shows it."""

    node: str
    namespace: bool
    agent: bool | None
    peers: int | None
    handshakes: int | None
    error: str | None


@dataclass
class LabStatus:
    """A running lab at a glance."""

    name: str
    underlay: str
    url: str
    coordinator: bool
    namespaces: dict[str, bool]
    gateways: list[GatewayStatus]
    # The coordinator's view of each node pair (its topology links); None when it cannot be asked.
    links: list[dict[str, Any]] | None = None
    # Whether the relay runs; None when the lab has none (it was not installed at `up`, or --no-relay).
    relay: bool | None = None
    relay_url: str | None = None
    # The switches in force, as recorded in the state file.
    blocked_udp: list[int] | None = None
    throttled_udp: dict[int, str] | None = None
    p2p_off: list[int] | None = None
    lan_mtu: dict[int, int] | None = None
    underlay_mtu: dict[int, int] | None = None
    sg_drop_icmp: list[int] | None = None

    def healthy(self) -> bool:
        """Coordinator and relay (if any) up, every namespace present, every agent (if any) alive."""
        return (
            self.coordinator
            and self.relay is not False
            and all(self.namespaces.values())
            and all(g.agent is not False for g in self.gateways)
        )

    def switches(self) -> list[str]:
        """One phrase per switch in force (`gw1: UDP blocked`)."""
        return describe(
            self.blocked_udp or [],
            self.throttled_udp or {},
            self.p2p_off or [],
            lan_mtu=self.lan_mtu,
            underlay_mtu=self.underlay_mtu,
            sg_drop_icmp=self.sg_drop_icmp or [],
        )


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
        """Re-read the state file (after another process changed the lab, e.g. `wgmesh lab add-site`)."""
        self.state = Lab.attach(self.name).state

    # --- addressing ---

    @property
    def name(self) -> str:
        """The lab's name (the prefix of everything it creates)."""
        return self.state.name

    @property
    def plan(self) -> LabPlan:
        """The lab's current plan."""
        return self.state.plan()

    @property
    def url(self) -> str:
        """The coordinator's URL on the host's loopback."""
        return self.plan.local_url

    @property
    def admin_token(self) -> str:
        """The coordinator's admin token."""
        return self.state.admin_token

    def node(self, name: str) -> Node:
        """A node of the lab by name (`hub`, `gwI`, `vmI`)."""
        return resolve_node(self.plan, name)

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

    # --- the coordinator ---

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> JsonValue:
        """Call the coordinator's API as admin: its JSON answer (None when empty); an error answer raises
        the class its code maps to (wgmesh.errors), with `METHOD PATH: STATUS message`."""
        with self._api() as api:
            return api.json(method, path, json=body, timeout=scaled(timeout))

    def _api(self) -> LabApi:
        # A client per call, as before: a restarted coordinator never meets a pooled connection to its past.
        return LabApi(self.plan.hub_url, self.admin_token, timeout=scaled(10.0))

    def wait_coordinator(self, timeout: float = COORDINATOR_START_TIMEOUT) -> float:
        """Wait until the coordinator answers /healthz; fail at once if it exits."""

        def ready() -> bool:
            self._check_alive("hub")
            try:
                self.api("GET", "/healthz", timeout=1.0)
            except WgmeshError as exc:
                raise NotYet(exc.message) from exc
            return True

        return wait_until(ready, timeout, f"the coordinator of lab {self.name}", interval=0.1)

    # --- the relay ---

    def prepare_relay(self) -> str:
        """Initialise the database and fetch the coordinator's relay-ticket public key (kept in the state)."""
        env = {"WGMESH_ADMIN_TOKEN": self.admin_token}
        coordinator = program("wgmesh-coordinator")
        try:
            # `relay-key` needs an initialised database; with the token in the environment `init`
            # takes it as the admin token and prints no secret.
            system.run([coordinator, *coordinator_init_args(self.plan)], env=env)
            done = system.run([coordinator, *relay_key_args(self.plan)], env=env)
        except WgmeshError as exc:
            raise WgmeshError(
                f"cannot get the coordinator's relay key: {exc.message} (use --no-relay to run without the relay)",
                code=exc.code,
            ) from exc
        key = _parse_public_key(done.stdout)
        self.state.relay_key = key
        self._save()
        return key

    def wait_relay(self, timeout: float = RELAY_START_TIMEOUT) -> float:
        """Wait until the relay listens on the hub address; fail at once if it exits."""

        def listening() -> bool:
            self._check_alive("relay")
            if not system.listener_pids(str(self.plan.hub_ip), RELAY_PORT):
                raise NotYet(f"nothing listens on {self.plan.hub_ip}:{RELAY_PORT} yet")
            return True

        return wait_until(listening, timeout, f"the relay of lab {self.name}", interval=0.1)

    # --- switches ---

    def block_udp(self, index: int) -> None:
        """Drop all UDP to and from gateway `index` on its underlay link (idempotent)."""
        site = self.plan.site(index)
        system.nft_apply(block_udp_script(), netns=site.gw_ns)
        self.state.blocked_udp = sorted({*self.state.blocked_udp, index})
        self._save()
        log.info("udp blocked", extra=kv(lab=self.name, node=site.node))

    def unblock_udp(self, index: int) -> None:
        """Let UDP through gateway `index`'s underlay link again (idempotent)."""
        site = self.plan.site(index)
        system.nft_apply(unblock_udp_script(), netns=site.gw_ns)
        self.state.blocked_udp = [i for i in self.state.blocked_udp if i != index]
        self._save()
        log.info("udp unblocked", extra=kv(lab=self.name, node=site.node))

    def throttle_udp(self, index: int, rate: str) -> str:
        """Limit UDP on gateway `index`'s underlay link to `rate` each way (replacing any limit); returns the rate."""
        rate = parse_rate(rate)
        site = self.plan.site(index)
        system.tc_apply(unthrottle_commands(site), absent_ok=True)
        system.tc_apply(throttle_commands(site, rate))
        self.state.throttled_udp = dict(sorted({**self.state.throttled_udp, index: rate}.items()))
        self._save()
        log.info("udp throttled", extra=kv(lab=self.name, node=site.node, rate=rate))
        return rate

    def unthrottle_udp(self, index: int) -> None:
        """Remove the UDP limit of gateway `index` (idempotent)."""
        site = self.plan.site(index)
        system.tc_apply(unthrottle_commands(site), absent_ok=True)
        self.state.throttled_udp = {i: r for i, r in self.state.throttled_udp.items() if i != index}
        self._save()
        log.info("udp unthrottled", extra=kv(lab=self.name, node=site.node))

    def set_lan_mtu(self, index: int, mtu: int) -> None:
        """Give site `index`'s LAN (gateway `lan`, VPC host `eth0`) this MTU; 1500 is the default again."""
        check_mtu(mtu, LAN_MTU)
        site = self.plan.site(index)
        system.apply(lan_mtu_commands(site, mtu))
        self.state.lan_mtu = with_mtu(self.state.lan_mtu, index, mtu)
        self._save()
        log.info("lan mtu set", extra=kv(lab=self.name, node=site.node, mtu=mtu))

    def set_underlay_mtu(self, index: int, mtu: int) -> None:
        """Give gateway `index`'s underlay link (both veth ends) this MTU; 1500 is the default again.

        No restart needed: the agent re-measures its underlay with every status report (every 10 s),
        and its next apply fits the tunnel MTU to it.
        """
        check_mtu(mtu, UNDERLAY_MTU)
        site = self.plan.site(index)
        system.apply(underlay_mtu_commands(site, mtu))
        self.state.underlay_mtu = with_mtu(self.state.underlay_mtu, index, mtu)
        self._save()
        log.info("underlay mtu set", extra=kv(lab=self.name, node=site.node, mtu=mtu))

    def sg_drop_icmp(self, index: int) -> None:
        """Make VPC host `index` drop inbound ICMP unreachables and ICMPv6 packet-too-big (idempotent)."""
        site = self.plan.site(index)
        system.nft_apply(sg_drop_icmp_script(), netns=site.vm_ns)
        self.state.sg_drop_icmp = sorted({*self.state.sg_drop_icmp, index})
        self._save()
        log.info("icmp unreachable dropped", extra=kv(lab=self.name, node=site.host))

    def sg_allow_icmp(self, index: int) -> None:
        """Let ICMP unreachables reach VPC host `index` again (idempotent)."""
        site = self.plan.site(index)
        system.nft_apply(sg_allow_icmp_script(), netns=site.vm_ns)
        self.state.sg_drop_icmp = [i for i in self.state.sg_drop_icmp if i != index]
        self._save()
        log.info("icmp unreachable allowed", extra=kv(lab=self.name, node=site.host))

    def set_p2p(self, index: int, policy: P2PPolicy) -> None:
        """Set gateway `index`'s P2P policy through the coordinator (the node must be enrolled)."""
        site = self.plan.site(index)
        self.api("PATCH", f"/api/v1/nodes/{site.node}", {"p2p": policy})
        off = {*self.state.p2p_off, index} if policy == "off" else set(self.state.p2p_off) - {index}
        self.state.p2p_off = sorted(off)
        self._save()
        log.info("p2p policy set", extra=kv(lab=self.name, node=site.node, p2p=policy))

    def wait_enrolled(self, nodes: Iterable[str], timeout: float, progress: Progress = _quiet) -> float:
        """Wait until the coordinator lists every one of `nodes`; fail at once if an agent exits."""
        wanted = set(nodes)

        def enrolled() -> bool:
            for site in self.plan.sites:
                self._check_alive(site.node)
            try:
                with self._api() as api:
                    names = api.node_names(scaled(2.0))
            except WgmeshError as exc:
                raise NotYet(exc.message) from exc
            missing = sorted(wanted - names)
            progress(f"waiting for {', '.join(missing) or 'nothing'} to enroll")
            if missing:
                raise NotYet(f"not enrolled yet: {', '.join(missing)}")
            return True

        return wait_until(enrolled, max(timeout, 0.1), f"nodes of lab {self.name} to enroll", interval=0.2)

    # --- processes ---

    def _save(self) -> None:
        save(self.state)

    def _log_path(self, node: str) -> Path:
        return self.plan.state_dir / "logs" / f"{node}.log"

    def _record(
        self, role: Literal["coordinator", "agent", "relay"], node: str, proc: procs.ProcessId
    ) -> None:
        self.state.record(
            ProcessRecord(
                role=role,
                node=node,
                pid=proc.pid,
                start_ticks=proc.start_ticks,
                log=str(self._log_path(node)),
            )
        )
        self._save()

    def process(self, node: str) -> procs.ProcessId | None:
        """The recorded process of `hub`, `relay` or a gateway, if any."""
        rec = self.state.process(node)
        return procs.ProcessId(rec.pid, rec.start_ticks) if rec else None

    def alive(self, node: str) -> bool:
        """Whether the recorded coordinator (`hub`), relay (`relay`) or agent (`gwI`) is running."""
        proc = self.process(node)
        return proc is not None and procs.alive(proc)

    def _check_alive(self, node: str) -> None:
        proc = self.process(node)
        if proc is None or procs.alive(proc):
            return
        what = {"hub": "coordinator", "relay": "relay"}.get(node, f"agent {node}")
        status = procs.exit_status(proc)
        if status is None:
            how = ""
        elif status < 0:
            how = f" on {signal.Signals(-status).name}"
        else:
            how = f" with status {status}"
        last = procs.tail(self._log_path(node)) or "no output"
        raise WgmeshError(f"{what} exited{how}: {last} (log: {self._log_path(node)})", code="process_exited")

    def start(self, node: str) -> procs.ProcessId:
        """Start (or restart) the coordinator (`hub`), the relay (`relay`) or a gateway's agent (`gwI`)."""
        if self.alive(node):
            raise WgmeshError(f"{node} is already running", code="running")
        if node == "relay":
            proc = self._start_relay()
            log.info("process started", extra=kv(lab=self.name, node=node, pid=proc.pid))
            return proc
        target = self.node(node)
        if target.role == "hub":
            argv = [
                program("wgmesh-coordinator"),
                *coordinator_args(self.plan, announce_relay=self.state.relay),
            ]
            proc = procs.spawn(argv, self._log_path(node), {"WGMESH_ADMIN_TOKEN": self.admin_token})
            self._record("coordinator", node, proc)
        elif target.site is not None and target.role == "gateway":
            site = target.site
            token = self._enroll_token()
            argv = [
                "ip",
                "netns",
                "exec",
                site.gw_ns,
                program("wgmesh-agent"),
                *agent_args(self.plan, site, token, self.state.backend),
            ]
            proc = procs.spawn(argv, self._log_path(node))
            self._record("agent", node, proc)
        else:
            raise ValidationError(f"{node} runs no lab process (only hub and gateways do)", code="no_process")
        log.info("process started", extra=kv(lab=self.name, node=node, pid=proc.pid))
        return proc

    def _start_relay(self) -> procs.ProcessId:
        if not self.state.relay:
            raise WgmeshError(
                f"lab {self.name} runs no relay (it was built without one; rebuild it with {RELAY_PROGRAM} installed)",
                code="no_relay",
            )
        key = self.state.relay_key or self.prepare_relay()
        argv = [program(RELAY_PROGRAM), *relay_args(self.plan, key)]
        proc = procs.spawn(argv, self._log_path("relay"))
        self._record("relay", "relay", proc)
        return proc

    def kill(self, node: str, sig: signal.Signals = signal.SIGTERM, *, wait: float = 5.0) -> bool:
        """Signal the recorded coordinator, relay or agent and wait for it to end; False when it was not running.

        A process still running after `wait` (scaled to the machine) is an error: a start that follows
        would find it running, and a test would go on against a component it believes stopped.
        """
        proc = self.process(node)
        if proc is None or not procs.send(proc, sig):
            return False
        try:
            wait_until(lambda: not procs.alive(proc), wait, f"{node} to exit")
        except WaitTimeout as exc:
            raise WgmeshError(f"{node} still runs after {sig.name}: {exc}", code="still_running") from exc
        return True

    def start_agents(self, sites: Iterable[Site]) -> None:
        """Start the agent of each site."""
        for site in sites:
            self.start(site.node)

    def _enroll_token(self) -> str:
        # Kept in the (root-only) state so an agent can be restarted while the coordinator is down.
        token = self.state.enroll_token
        if token is None:
            with self._api() as api:
                token = api.create_token(f"lab {self.name}")
            self.state.enroll_token = token
            self._save()
        return token

    # --- convergence ---

    def observe(self) -> dict[int, GatewayView]:
        """Each gateway's WireGuard peers, read in parallel."""
        started = {s.index: system.wg_dump_start(s.gw_ns, s.wg_interface) for s in self.plan.sites}
        views: dict[int, GatewayView] = {}
        for index, proc in started.items():
            read = system.wg_dump_finish(proc)
            if read.text is None:
                views[index] = GatewayView(error=read.error)
                continue
            try:
                views[index] = GatewayView(peers=parse_wg_dump(read.text))
            except ValidationError as exc:
                views[index] = GatewayView(error=exc.message)
        return views

    def verdict(self) -> Verdict:
        """How far the mesh is from converged, right now."""
        return assess(self.plan, self.observe())

    def wait_converged(
        self, timeout: float = 60.0, progress: Progress = _quiet, *, started: float | None = None
    ) -> float:
        """Wait until every gateway lists every other site with a handshake; returns the seconds taken.

        `started` (a time.monotonic() value) counts the timeout from an earlier moment, such as the start of `up`.
        """
        start = time.monotonic() if started is None else started
        budget = scaled(timeout)  # a budget on the reference machine; see wgmesh.lab.timescale
        deadline = start + budget
        nudger = _Nudger(self.plan)
        try:
            while True:
                for site in self.plan.sites:
                    self._check_alive(site.node)
                self._check_alive("hub")
                verdict = self.verdict()
                progress(f"{self._enrolled()}, {verdict.summary}")
                if verdict.converged:
                    seconds = time.monotonic() - start
                    log.info("lab converged", extra=kv(lab=self.name, seconds=round(seconds, 2)))
                    return seconds
                if time.monotonic() >= deadline:
                    more = f" (+{len(verdict.pending) - 1} more)" if len(verdict.pending) > 1 else ""
                    raise WgmeshError(
                        f"lab {self.name} did not converge within {budget:g}s: "
                        f"{nudger.explain(verdict.pending[0])}{more}; logs in {self.plan.state_dir / 'logs'}",
                        code="lab_timeout",
                    )
                nudger.nudge(verdict.nudge)
                time.sleep(POLL_INTERVAL)
        finally:
            nudger.close()

    def _enrolled(self) -> str:
        try:
            with self._api() as api:
                names = api.node_names(scaled(2.0))
        except WgmeshError:
            return "enrolled ?"
        count = sum(1 for s in self.plan.sites if s.node in names)
        return f"enrolled {count}/{len(self.plan.sites)}"

    def ping_matrix(self, count: int = 1, wait: float = 2.0) -> dict[tuple[int, int], float | None]:
        """Average RTT in ms from each VPC host to every other one (None: no answer), pinged in parallel."""
        pairs = [(a, b) for a in self.plan.sites for b in self.plan.sites if a.index != b.index]
        results: dict[tuple[int, int], float | None] = {}
        # Bounded so that a big lab does not fork thousands of pings at once.
        for chunk in range(0, len(pairs), 32):
            running = [
                (
                    a.index,
                    b.index,
                    self.popen(
                        a.host,
                        *("ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", f"{wait:g}", str(b.vm_ip)),
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                    ),
                )
                for a, b in pairs[chunk : chunk + 32]
            ]
            for src, dst, proc in running:
                out, _ = proc.communicate(timeout=scaled(wait * count + 10))
                results[(src, dst)] = parse_ping_rtt(out)
        return results

    # --- growing, status, teardown ---

    def add_site(self, timeout: float = 60.0, progress: Progress = _quiet) -> Site:
        """Add site N+1 (namespaces, links, agent) and wait for the mesh to include it."""
        plan = self.plan.with_sites(self.state.sites + 1)
        site = plan.sites[-1]
        progress(f"building site {site.index}")
        system.apply(site_commands(plan, site))
        self.state.sites += 1
        self._save()
        if self.state.agents:
            self.start(site.node)
            self.wait_converged(timeout, progress)
        return site

    def status(self) -> LabStatus:
        """Namespaces, processes and per-gateway peers."""
        plan = self.plan
        present = set(system.namespaces())
        views = self.observe()
        gateways = []
        for site in plan.sites:
            view = views[site.index]
            gateways.append(
                GatewayStatus(
                    node=site.node,
                    namespace=site.gw_ns in present,
                    agent=self.alive(site.node) if self.state.agents else None,
                    peers=None if view.error else len(view.peers),
                    handshakes=None if view.error else sum(1 for p in view.peers if p.latest_handshake),
                    error=view.error,
                )
            )
        links = None
        with contextlib.suppress(WgmeshError), self._api() as api:
            links = api.topology_links(scaled(3.0))
        return LabStatus(
            name=self.name,
            underlay=str(plan.underlay),
            url=plan.local_url,
            coordinator=self.alive("hub"),
            namespaces={ns: ns in present for ns in plan.namespaces()},
            gateways=gateways,
            links=links,
            relay=self.alive("relay") if self.state.relay else None,
            relay_url=plan.relay_url if self.state.relay else None,
            blocked_udp=list(self.state.blocked_udp),
            throttled_udp=dict(self.state.throttled_udp),
            p2p_off=list(self.state.p2p_off),
            lan_mtu=dict(self.state.lan_mtu),
            underlay_mtu=dict(self.state.underlay_mtu),
            sg_drop_icmp=list(self.state.sg_drop_icmp),
        )

    def down(self) -> DownReport:
        """Tear the lab down."""
        return down(self.name)


def _parse_public_key(text: str) -> str:
    """The base64 Ed25519 public key `relay-key` printed (its last non-empty line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    key = lines[-1] if lines else ""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise WgmeshError(
            f"wgmesh-coordinator relay-key printed {key[:60]!r}, not a base64 Ed25519 public key",
            code="relay_key",
        )
    return key


class _Nudger:
    """Starts one ping across each peer pair that has no handshake yet, since WireGuard only
    handshakes when there is traffic; remembers why a ping failed, for the timeout message."""

    def __init__(self, plan: LabPlan) -> None:
        self.plan = plan
        self.running: dict[tuple[int, int], subprocess.Popen[str]] = {}
        self.last: dict[frozenset[int], float] = {}
        self.failures: dict[str, str] = {}

    def nudge(self, pairs: Iterable[tuple[int, int]]) -> None:
        self._harvest()
        now = time.monotonic()
        for src, dst in pairs:
            key = frozenset((src, dst))
            if now - self.last.get(key, -NUDGE_INTERVAL) < NUDGE_INTERVAL:
                continue
            self.last[key] = now
            a, b = self.plan.site(src), self.plan.site(dst)
            self.running[(src, dst)] = subprocess.Popen(
                ["ip", "netns", "exec", a.gw_ns, "ping", "-n", "-q", "-c", "1", "-W", "1", str(b.gw_lan_ip)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def _harvest(self) -> None:
        for (src, dst), proc in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[(src, dst)]
            out = proc.communicate()[0]
            a, b = self.plan.site(src), self.plan.site(dst)
            key = f"{a.node} has no handshake with {b.node}"
            if proc.returncode != 0:
                lines = [line for line in out.splitlines() if line.strip()]
                self.failures[key] = (
                    f"ping {b.gw_lan_ip} from {a.node}: {lines[-1] if lines else 'no answer'}"
                )

    def explain(self, pending: str) -> str:
        """`pending`, with the last ping failure that concerns it."""
        self._harvest()
        why = self.failures.get(pending)
        return f"{pending} ({why})" if why else pending

    def close(self) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.running.clear()
