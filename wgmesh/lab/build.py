"""Building a lab: choose its slot, build its namespaces, start its services, wait for its mesh.

`up` is the one way a lab comes into being; the record file is written before anything is built, so
`down` (wgmesh.lab.teardown) finds every piece even when `up` fails half-way.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence

from wgmesh.errors import ValidationError, WgmeshError
from wgmesh.lab import postgres, system
from wgmesh.lab.cloud import LAN_MTU, UNDERLAY_MTU, check_mtu
from wgmesh.lab.handle import Lab
from wgmesh.lab.impair import check_pairs, check_sites, parse_rate
from wgmesh.lab.layout import (
    DEFAULT_HA_PREEMPT_AFTER,
    LOOPBACK_BASE_PORT,
    MAX_SLOT,
    Database,
    HaReturn,
    build_commands,
    choose_slot,
    loopback_forward_script,
    plan_lab,
)
from wgmesh.lab.record import LabState, all_states, machine_lock, save
from wgmesh.lab.services import start_hubs
from wgmesh.lab.teardown import down, leftovers
from wgmesh.lab.timescale import time_scale
from wgmesh.lab.tools import RELAY_PROGRAM, agent_available, relay_available, require_tools
from wgmesh.lab.wait import Progress, quiet
from wgmesh.logs import kv
from wgmesh.values import Backend, Prefix

log = logging.getLogger("wgmesh.lab")


def _log_warning(text: str) -> None:
    """The warning sink when nobody is watching: the log."""
    log.warning(text)


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
    timeout: float | None = None,
    progress: Progress = quiet,
    relay: bool | None = None,
    block_udp: Iterable[int] = (),
    throttle_udp: Mapping[int, str] | None = None,
    block_tcp_between: Iterable[Sequence[int]] = (),
    p2p_off: Iterable[int] = (),
    lan_mtu: Mapping[int, int] | None = None,
    underlay_mtu: Mapping[int, int] | None = None,
    sg_drop_icmp: Iterable[int] = (),
    db: Database = "sqlite",
    coordinators: int = 1,
    relays: int = 1,
    ha_sites: Iterable[int] = (),
    ha_preempt_after: float = DEFAULT_HA_PREEMPT_AFTER,
    ha_return: HaReturn = "route-table",
    lans: Mapping[int, Prefix | str] | None = None,
    warn: Progress = _log_warning,
) -> Lab:
    """Build lab `name`, start its database, coordinators, relays and agents, and return once the mesh has
    converged.

    `timeout` is the convergence budget in seconds (None: the plan's, which grows with the gateways).
    `relay=None` runs the relays when `wgmesh-relay` is installed and warns when it is not.
    `db="postgresql"` keeps the registry in a private PostgreSQL cluster in the lab's state directory,
    which `coordinators` coordinators share (SQLite takes one).
    `block_tcp_between` (pairs of sites, `[(1, 2)]`) drops all TCP between each pair's gateways on the
    underlay, in both gateways' namespaces.
    `lan_mtu` and `underlay_mtu` ({site: MTU}) and `sg_drop_icmp` (sites) make sites look like cloud
    VPCs (docs/lab.md); like the other switches they are in force before any agent starts.
    `ha_sites` get a second gateway `gwIb` on their LAN advertising the same prefix (issue 18), whose
    route the lab approves as an admin would; every agent gets `ha_preempt_after` as its preemption rule;
    `ha_return` says how their VPC's replies come back (the route-table hook, or the gateways masquerade).
    `lans` ({site: LAN}, text or networks) gives sites a LAN other than 10.I.0.0/24, possibly one another site
    has too (issue 20); each site's enrollment token allows its own LAN, whatever it is.
    """
    # Bad usage is reported as such, before anything else is checked or touched.
    plan = plan_lab(
        name,
        sites,
        db=db,
        coordinators=coordinators,
        relays=relays,
        ha_sites=ha_sites,
        ha_preempt_after=ha_preempt_after,
        ha_return=ha_return,
        lans=lans,
    )
    if timeout is None:
        timeout = plan.convergence_budget
    if timeout <= 0:
        raise ValidationError(f"--timeout must be positive, not {timeout:g}", code="invalid_timeout")
    blocked = sorted(set(block_udp))
    throttled = {index: parse_rate(rate) for index, rate in sorted((throttle_udp or {}).items())}
    tcp_pairs = check_pairs(block_tcp_between, "--block-tcp-between")
    off = sorted(set(p2p_off))
    lan_mtus = {index: check_mtu(mtu, LAN_MTU) for index, mtu in sorted((lan_mtu or {}).items())}
    underlay_mtus = {
        index: check_mtu(mtu, UNDERLAY_MTU) for index, mtu in sorted((underlay_mtu or {}).items())
    }
    sg = sorted(set(sg_drop_icmp))
    check_sites(plan, blocked, "--block-udp")
    check_sites(plan, throttled, "--throttle-udp")
    check_sites(plan, sorted({index for pair in tcp_pairs for index in pair}), "--block-tcp-between")
    check_sites(plan, off, "--p2p-off")
    check_sites(plan, lan_mtus, "--lan-mtu")
    check_sites(plan, underlay_mtus, "--underlay-mtu")
    check_sites(plan, sg, "--sg-drop-icmp")
    if off and not agents:
        raise ValidationError("--p2p-off needs agents (it changes enrolled nodes)", code="invalid_p2p_off")
    if relay is False and off:
        raise ValidationError("--p2p-off needs the relay; drop --no-relay", code="invalid_p2p_off")
    if relay is False and relays > 1:
        raise ValidationError("--relays needs the relay; drop --no-relay", code="invalid_hubs")
    system.require_root()
    if db == "postgresql" and (reason := postgres.missing()) is not None:
        raise WgmeshError(reason, code="missing_tool")
    tools = ["ip", "nft", "ss"] + (["tc"] if throttled else []) + (["wg", "wireguard-go"] if agents else [])
    require_tools(tools)
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
            db=db,
            coordinators=coordinators,
            relays=relays,
            ha_sites=list(plan.ha_sites),
            ha_preempt_after=ha_preempt_after,
            ha_return=ha_return,
            # As the plan checked them (parsed, canonical), so that every later command rebuilds this plan.
            lans={index: plan.site(index).lan for index in sorted(lans or {})},
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
        for a, b in tcp_pairs:
            lab.block_tcp(a, b)
        # Also before the agents: an agent may size its tunnel from the underlay MTU when it starts.
        for index, mtu in underlay_mtus.items():
            lab.set_underlay_mtu(index, mtu)
        for index, mtu in lan_mtus.items():
            lab.set_lan_mtu(index, mtu)
        for index in sg:
            lab.sg_drop_icmp(index)
        start_hubs(state, progress)
    except BaseException:
        # Nothing worth inspecting has run yet: leave no half-built lab behind.
        down(name)
        raise
    log.info(
        "lab built", extra=kv(lab=name, sites=sites, slot=slot, seconds=round(time.monotonic() - start, 2))
    )
    if not agents:
        return lab

    def left() -> float:
        # What is left of the budget, in reference seconds (the waits scale it again).
        return timeout - (time.monotonic() - start) / time_scale()

    try:
        waves = plan.agent_waves
        for number, wave in enumerate(waves):
            if number:
                # Overlapping claims are ranked by age: the lower-numbered site of an overlap must have
                # stated its LAN first for its claim to be the active one.
                lab.wait_advertised(waves[number - 1], left(), progress)
            lab.start_agents(wave)
        if plan.ha_sites:
            # A second gateway starts once its site's own has enrolled: claims are ranked by age, so gwI
            # is always the primary and gwIb the standby.
            lab.wait_enrolled([plan.site(i).node for i in plan.ha_sites], left(), progress)
            lab.start_agents(g for g in plan.gateways if g.second)
            lab.approve_ha_routes(left(), progress)
        if off:
            # The policy can only be set on enrolled nodes; convergence is then awaited over the relay.
            lab.wait_enrolled([plan.site(i).node for i in off], left(), progress)
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
