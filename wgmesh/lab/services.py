"""The lab's services: its coordinators (`hub`, `hub2`, …), relays (`relay`, `relay2`, …), agents (`gwI`)
and, with `--db postgresql`, its PostgreSQL server (`db`).

Started, signalled, recorded in the lab's record file and checked here; `procs` holds the pid-level
primitives underneath, `layout` the command lines.
"""

from __future__ import annotations

import base64
import binascii
import logging
import signal
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from wgmesh.errors import WgmeshError
from wgmesh.lab import postgres, procs, system
from wgmesh.lab.api import admin_client
from wgmesh.lab.layout import (
    PG_DATABASE,
    RELAY_PORT,
    Gateway,
    LabPlan,
    Service,
    agent_args,
    central_nodes,
    coordinator_args,
    coordinator_init_args,
    relay_args,
    relay_key_args,
    resolve_service,
)
from wgmesh.lab.record import LabState, ProcessRecord, Role, save
from wgmesh.lab.timescale import scaled
from wgmesh.lab.tools import RELAY_PROGRAM, program
from wgmesh.lab.wait import NotYet, Progress, WaitTimeout, quiet, wait_until
from wgmesh.logs import kv
from wgmesh.pins import PIN_LINE, Pin
from wgmesh.relay.identity import KEY_FILE, RelayIdentity, load_or_create_key
from wgmesh.values import Prefix

log = logging.getLogger("wgmesh.lab")

COORDINATOR_START_TIMEOUT = 20.0
RELAY_START_TIMEOUT = 10.0
DATABASE_START_TIMEOUT = 30.0
"""Seconds (reference machine) for initdb (about 2 s) and the server's first connection."""


def log_path(state: LabState, node: str) -> Path:
    """Where the service of `node` writes its output."""
    return state.plan().state_dir / "logs" / f"{node}.log"


def process(state: LabState, node: str) -> procs.ProcessId | None:
    """The recorded process of a coordinator, relay, agent or the database, if any."""
    rec = state.process(node)
    return procs.ProcessId(rec.pid, rec.start_ticks) if rec else None


def alive(state: LabState, node: str) -> bool:
    """Whether the recorded coordinator (`hub`), relay (`relay`) or agent (`gwI`) is running."""
    proc = process(state, node)
    return proc is not None and procs.alive(proc)


def check_alive(state: LabState, node: str) -> None:
    """Nothing when the service of `node` runs or was never started; an error with its last log line
    when it exited, so a wait fails at once instead of at its deadline."""
    proc = process(state, node)
    if proc is None or procs.alive(proc):
        return
    kind = resolve_service(state.plan(), node).kind
    what = f"agent {node}" if kind == "agent" else f"{kind} {node}"
    status = procs.exit_status(proc)
    if status is None:
        how = ""
    elif status < 0:
        how = f" on {signal.Signals(-status).name}"
    else:
        how = f" with status {status}"
    path = log_path(state, node)
    last = procs.tail(path) or "no output"
    raise WgmeshError(f"{what} exited{how}: {last} (log: {path})", code="process_exited")


def _record(state: LabState, role: Role, node: str, proc: procs.ProcessId) -> None:
    state.record(
        ProcessRecord(
            role=role,
            node=node,
            pid=proc.pid,
            start_ticks=proc.start_ticks,
            log=str(log_path(state, node)),
        )
    )
    save(state)


def start(state: LabState, node: str) -> procs.ProcessId:
    """Start (or restart) a coordinator (`hub`, `hub2`), a relay (`relay`, `relay2`), a gateway's agent
    (`gwI`) or the database (`db`)."""
    service = resolve_service(state.plan(), node)
    if alive(state, node):
        raise WgmeshError(f"{node} is already running", code="running")
    if service.kind == "database":
        proc = _start_database(state)
    elif service.kind == "relay":
        proc = _start_relay(state, service)
    elif service.kind == "coordinator":
        proc = _start_coordinator(state, service)
    else:
        proc = _start_agent(state, state.plan().gateway(node))
    log.info("process started", extra=kv(lab=state.name, node=node, pid=proc.pid))
    return proc


def _start_coordinator(state: LabState, service: Service) -> procs.ProcessId:
    plan = state.plan()
    if state.coordinator_pin is None:
        initialise(state)
    pins = [relay_pin(plan, i) for i in range(1, plan.relays + 1)] if state.relay else []
    argv = [program("wgmesh-coordinator"), *coordinator_args(plan, service.index, relay_pins=pins)]
    proc = procs.spawn(argv, log_path(state, service.node), {"WGMESH_ADMIN_TOKEN": state.admin_token})
    _record(state, "coordinator", service.node, proc)
    return proc


def _start_agent(state: LabState, gateway: Gateway) -> procs.ProcessId:
    plan = state.plan()
    token = _enroll_token(state, gateway)
    argv = [
        "ip",
        "netns",
        "exec",
        gateway.netns,
        program("wgmesh-agent"),
        # The route-table hook runs on this interpreter, the one that has this wgmesh.
        *agent_args(plan, gateway, token, state.backend, python=sys.executable),
    ]
    proc = procs.spawn(argv, log_path(state, gateway.node))
    _record(state, "agent", gateway.node, proc)
    return proc


def _start_relay(state: LabState, service: Service) -> procs.ProcessId:
    if not state.relay:
        raise WgmeshError(
            f"lab {state.name} runs no relay (it was built without one; rebuild it with {RELAY_PROGRAM} installed)",
            code="no_relay",
        )
    key = state.relay_key or prepare_relay(state)
    argv = [program(RELAY_PROGRAM), *relay_args(state.plan(), key, state.coordinator_pin, service.index)]
    proc = procs.spawn(argv, log_path(state, service.node))
    _record(state, "relay", service.node, proc)
    return proc


def _start_database(state: LabState) -> procs.ProcessId:
    """The lab's PostgreSQL: a private cluster in its state directory, run as an unprivileged user."""
    reason = postgres.missing()
    if reason is not None:
        raise WgmeshError(reason, code="missing_tool")
    plan = state.plan()
    # The cluster's owner must reach its directory through the state directory, which stays unlistable.
    plan.state_dir.chmod(0o711)
    paths = postgres.ClusterPaths(plan.pg_root)
    postgres.initdb(paths)
    proc = procs.spawn(paths.postgres_argv(), log_path(state, "db"))
    _record(state, "database", "db", proc)
    return proc


def wait_database(state: LabState, timeout: float = DATABASE_START_TIMEOUT) -> float:
    """Wait until the lab's PostgreSQL accepts connections, and make the coordinators' database once."""
    paths = postgres.ClusterPaths(state.plan().pg_root)

    def accepting() -> bool:
        check_alive(state, "db")
        return postgres.ready(paths)

    took = wait_until(accepting, timeout, f"the database of lab {state.name}", interval=0.1)
    postgres.create_database(paths, PG_DATABASE, exist_ok=True)
    return took


STOP_BUDGET = 15.0
"""Seconds a signalled process has to end: a coordinator answers held long-polls at once but lets other
requests in progress run for up to GRACEFUL_SHUTDOWN (5 s), then stops its metrics listener and relay (run 13
of issue 12 saw one still running after a 5 s budget)."""


def kill(
    state: LabState, node: str, sig: signal.Signals = signal.SIGTERM, *, wait: float = STOP_BUDGET
) -> bool:
    """Signal the recorded coordinator, relay, agent or database and wait for it to end; False when it was
    not running.

    A process still running after `wait` (scaled to the machine) is an error: a start that follows
    would find it running, and a test would go on against a component it believes stopped. The database
    is stopped with SIGINT for SIGTERM: PostgreSQL's fast shutdown, where SIGTERM would wait for every
    coordinator to disconnect.
    """
    if resolve_service(state.plan(), node).kind == "database" and sig == signal.SIGTERM:
        sig = signal.SIGINT
    proc = process(state, node)
    if proc is None or not procs.send(proc, sig):
        return False
    try:
        wait_until(lambda: not procs.alive(proc), wait, f"{node} to exit")
    except WaitTimeout as exc:
        raise WgmeshError(f"{node} still runs after {sig.name}: {exc}", code="still_running") from exc
    return True


def remove_interface(state: LabState, node: str) -> bool:
    """Delete gateway `node`'s WireGuard interface and end the userspace WireGuard serving it, as when the
    machine dies: a SIGKILL of the agent alone leaves wireguard-go (or the kernel interface) forwarding.
    Returns whether there was an interface; meant for a gateway whose agent is stopped."""
    gateway = state.plan().gateway(node)
    existed = system.run(
        ["ip", "-n", gateway.netns, "link", "show", "dev", gateway.wg_interface], check=False
    )
    system.run(["ip", "-n", gateway.netns, "link", "del", "dev", gateway.wg_interface], check=False)
    # wireguard-go usually exits once its TUN device is gone; one that does not is ended here. Only this
    # gateway's: its namespace holds nothing else of the lab's.
    wireguard = [
        proc
        for pid in system.netns_pids(gateway.netns)
        if (proc := procs.identity(pid)) is not None
        and Path(next(iter(procs.cmdline(pid)), "")).name == "wireguard-go"
    ]
    procs.terminate(wireguard, grace=1.0, sig=signal.SIGKILL)
    for sock in system.wg_sockets(gateway.wg_interface + "."):
        system.remove_file(sock)
    log.info("interface removed", extra=kv(lab=state.name, node=node, interface=gateway.wg_interface))
    return existed.returncode == 0


def _enroll_token(state: LabState, gateway: Gateway) -> str:
    # One per site, allowing that site's LAN: its route is approved with no manual step, and no site's
    # token approves another's. Kept in the (root-only) record so an agent can be restarted while the
    # coordinator is down. An HA site's second gateway gets a token of its own that allows nothing: its
    # claim joins another gateway's prefix, which only an admin approves (approve_ha_routes).
    site = state.plan().site(gateway.site)
    tokens = state.ha_tokens if gateway.second else state.site_tokens
    token = tokens.get(site.index)
    if token is None:
        allowed = [] if gateway.second else [site.lan]
        with admin_client(state) as api:
            token = api.create_token(f"lab {state.name} {gateway.node}", allow_subnets=allowed)
        tokens[site.index] = token
        save(state)
    return token


def prepare_relay(state: LabState) -> str:
    """Initialise the database and fetch the coordinator's relay-ticket public key (kept in the record)."""
    env = {"WGMESH_ADMIN_TOKEN": state.admin_token}
    coordinator = program("wgmesh-coordinator")
    plan = state.plan()
    try:
        # `relay-key` needs an initialised database; with the token in the environment `init`
        # takes it as the admin token and prints no secret.
        initialise(state)
        done = system.run([coordinator, *relay_key_args(plan)], env=env)
    except WgmeshError as exc:
        raise WgmeshError(
            f"cannot get the coordinator's relay key: {exc.message} (use --no-relay to run without the relay)",
            code=exc.code,
        ) from exc
    key = parse_public_key(done.stdout)
    state.relay_key = key
    save(state)
    return key


def relay_pin(plan: LabPlan, index: int = 1) -> str:
    """The pin of relay `index`'s TLS key, made here first if the relay has not run yet (the coordinators
    announce the pin before the relay starts)."""
    key = load_or_create_key(plan.relay_state_dir_of(index) / KEY_FILE)
    return str(RelayIdentity.from_key(key).pin)


def initialise(state: LabState) -> str:
    """Initialise the database (idempotent) and keep the coordinator's pin, which `init` prints, in the record."""
    done = system.run(
        [program("wgmesh-coordinator"), *coordinator_init_args(state.plan())],
        env={"WGMESH_ADMIN_TOKEN": state.admin_token},
    )
    found = [line for line in done.stdout.splitlines() if line.startswith(PIN_LINE)]
    if not found:
        raise WgmeshError("wgmesh-coordinator init printed no pin", code="no_pin")
    state.coordinator_pin = str(Pin.parse(found[-1].removeprefix(PIN_LINE)))
    save(state)
    return state.coordinator_pin


def parse_public_key(text: str) -> str:
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


def wait_coordinator(state: LabState, timeout: float = COORDINATOR_START_TIMEOUT, node: str = "hub") -> float:
    """Wait until coordinator `node` answers /healthz; fail at once if it exits."""
    url = state.plan().coordinator_url(resolve_service(state.plan(), node).index)

    def ready() -> bool:
        check_alive(state, node)
        try:
            with admin_client(state, url) as api:
                api.json("GET", "/healthz", timeout=scaled(1.0))
        except WgmeshError as exc:
            raise NotYet(exc.message) from exc
        return True

    return wait_until(ready, timeout, f"coordinator {node} of lab {state.name}", interval=0.1)


def wait_relay(state: LabState, timeout: float = RELAY_START_TIMEOUT, node: str = "relay") -> float:
    """Wait until relay `node` listens on its hub address; fail at once if it exits."""
    address = state.plan().hub_address(resolve_service(state.plan(), node).index)

    def listening() -> bool:
        check_alive(state, node)
        if not system.listener_pids(str(address), RELAY_PORT):
            raise NotYet(f"nothing listens on {address}:{RELAY_PORT} yet")
        return True

    return wait_until(listening, timeout, f"relay {node} of lab {state.name}", interval=0.1)


def wait_started(state: LabState, node: str) -> float:
    """Wait until a service just started does its job: a coordinator answers, a relay listens, the
    database accepts connections (an agent: nothing to wait for here, `wait_converged` is its measure)."""
    kind = resolve_service(state.plan(), node).kind
    if kind == "coordinator":
        return wait_coordinator(state, node=node)
    if kind == "relay":
        return wait_relay(state, node=node)
    if kind == "database":
        return wait_database(state)
    return 0.0


def start_hubs(state: LabState, progress: Progress = quiet) -> None:
    """Start the database (if any), every coordinator, then every relay (if any), each ready before the next."""
    for node in central_nodes(state.plan(), state.relay):
        if node == "relay" and state.relay_key is None:
            progress("creating the coordinator's relay key")
            prepare_relay(state)
        progress(f"starting {node}")
        start(state, node)
        wait_started(state, node)


def wait_enrolled(state: LabState, nodes: Iterable[str], timeout: float, progress: Progress = quiet) -> float:
    """Wait until the coordinator lists every one of `nodes`; fail at once if an agent exits."""
    wanted = set(nodes)

    def enrolled() -> bool:
        for gateway in state.plan().gateways:
            check_alive(state, gateway.node)
        try:
            with admin_client(state) as api:
                names = api.node_names(scaled(2.0))
        except WgmeshError as exc:
            raise NotYet(exc.message) from exc
        missing = sorted(wanted - names)
        progress(f"waiting for {', '.join(missing) or 'nothing'} to enroll")
        if missing:
            raise NotYet(f"not enrolled yet: {', '.join(missing)}")
        return True

    return wait_until(enrolled, max(timeout, 0.1), f"nodes of lab {state.name} to enroll", interval=0.2)


def wait_advertised(
    state: LabState, lans: Mapping[str, Prefix], timeout: float, progress: Progress = quiet
) -> float:
    """Wait until the coordinator lists each node's LAN among its routes ({node: LAN}). Enrollment carries
    no subnets (the agent states them right after, from a thread of its own): being enrolled says nothing
    yet about a route's age, which is what ranks overlapping claims."""
    wanted = dict(lans)

    def advertised() -> bool:
        for node in wanted:
            check_alive(state, node)
        try:
            with admin_client(state) as api:
                found = api.json("GET", "/api/v1/routes", timeout=scaled(2.0))
        except WgmeshError as exc:
            raise NotYet(exc.message) from exc
        routes = found.get("routes") if isinstance(found, dict) else None
        listed = {
            (r.get("gateway"), r.get("prefix"))
            for r in (routes if isinstance(routes, list) else [])
            if isinstance(r, dict)
        }
        missing = sorted(node for node, lan in wanted.items() if (node, str(lan)) not in listed)
        progress(f"waiting for {', '.join(missing) or 'nothing'} to advertise its LAN")
        if missing:
            raise NotYet(f"LAN not advertised yet by {', '.join(missing)}")
        return True

    return wait_until(advertised, max(timeout, 0.1), f"LANs of lab {state.name} advertised", interval=0.2)


def approve_ha_routes(state: LabState, timeout: float, progress: Progress = quiet) -> float:
    """Approve each HA site's prefix on its second gateway, as an admin would (`wgmesh routes approve`):
    approval rules never approve a claim that joins another gateway's prefix. Waits until each second
    gateway advertises it (the approval needs the route) and the coordinator has judged it."""
    plan = state.plan()
    pending = {site.second.node: site.lan for site in plan.sites if site.second is not None}

    def approved() -> bool:
        for node, prefix in sorted(pending.items()):
            check_alive(state, node)
            try:
                with admin_client(state) as api:
                    route = api.json(
                        "POST",
                        f"/api/v1/nodes/{node}/routes/approve",
                        json={"prefix": str(prefix), "reason": f"lab {state.name}: HA site"},
                        timeout=scaled(5.0),
                    )
            except WgmeshError as exc:
                # Mostly "not found": not enrolled yet, or its first statement of subnets has not arrived.
                # Anything else is kept as the reason the wait names if it runs out.
                raise NotYet(exc.message) from exc
            verdict = route.get("state") if isinstance(route, dict) else None
            progress(f"route {prefix} of {node}: {verdict}")
            if verdict in (None, "pending"):
                raise NotYet(f"route {prefix} of {node} is {verdict}")
            log.info("ha route approved", extra=kv(lab=state.name, node=node, prefix=prefix, state=verdict))
            del pending[node]
        return True

    return wait_until(
        approved, max(timeout, 0.1), f"HA routes of lab {state.name} to be approved", interval=0.2
    )
