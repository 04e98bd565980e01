"""A running lab at a glance, as `wgmesh lab status` shows it: namespaces, services, peers, switches."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from wgmesh.errors import WgmeshError
from wgmesh.lab import services, system
from wgmesh.lab.api import admin_client
from wgmesh.lab.impair import describe
from wgmesh.lab.layout import central_nodes
from wgmesh.lab.observe import read_all
from wgmesh.lab.record import LabState
from wgmesh.lab.timescale import scaled


@dataclass
class GatewayStatus:
    """One gateway as `status` shows it."""

    node: str
    namespace: bool
    agent: bool | None
    peers: int | None
    handshakes: int | None
    error: str | None
    # Its site's LAN (10.I.0.0/24 unless `--lan` gave another, which other sites may share).
    lan: str = ""


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
    # The switches in force, as recorded in the lab's record file.
    blocked_udp: list[int] | None = None
    throttled_udp: dict[int, str] | None = None
    blocked_tcp: list[tuple[int, int]] | None = None
    p2p_off: list[int] | None = None
    lan_mtu: dict[int, int] | None = None
    underlay_mtu: dict[int, int] | None = None
    sg_drop_icmp: list[int] | None = None
    # Every central process by node (`hub`, `hub2`, `relay`, `relay2`, `db`): whether it runs.
    services: dict[str, bool] | None = None
    database: str = "sqlite"
    # Sites with a second gateway `gwIb` (issue 18), and the agents' preemption rule.
    ha_sites: list[int] | None = None
    ha_preempt_after: float | None = None
    ha_return: str | None = None
    # Every site's LAN by site, and the sites whose LAN `--lan` gave (issue 20).
    lans: dict[int, str] | None = None
    given_lans: list[int] | None = None

    def healthy(self) -> bool:
        """Coordinators, relays (if any) and database up, every namespace present, every agent (if any)
        alive."""
        return (
            self.coordinator
            and self.relay is not False
            and all((self.services or {}).values())
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
            ha_sites=self.ha_sites or [],
            blocked_tcp=self.blocked_tcp or [],
        )


def lab_status(state: LabState) -> LabStatus:
    """Namespaces, processes and per-gateway peers of the lab, read now."""
    plan = state.plan()
    present = set(system.namespaces())
    views = read_all(plan)
    gateways = []
    for gateway in plan.gateways:
        view = views[gateway.node]
        gateways.append(
            GatewayStatus(
                node=gateway.node,
                namespace=gateway.netns in present,
                agent=services.alive(state, gateway.node) if state.agents else None,
                peers=None if view.error else len(view.peers),
                handshakes=None if view.error else sum(1 for p in view.peers if p.latest_handshake),
                error=view.error,
                lan=str(plan.site(gateway.site).lan),
            )
        )
    links = None
    with contextlib.suppress(WgmeshError), admin_client(state) as api:
        links = api.topology_links(scaled(3.0))
    return LabStatus(
        name=state.name,
        underlay=str(plan.underlay),
        url=plan.local_url,
        coordinator=services.alive(state, "hub"),
        namespaces={ns: ns in present for ns in plan.namespaces()},
        gateways=gateways,
        links=links,
        relay=services.alive(state, "relay") if state.relay else None,
        relay_url=plan.relay_url if state.relay else None,
        blocked_udp=list(state.blocked_udp),
        throttled_udp=dict(state.throttled_udp),
        blocked_tcp=list(state.blocked_tcp),
        p2p_off=list(state.p2p_off),
        lan_mtu=dict(state.lan_mtu),
        underlay_mtu=dict(state.underlay_mtu),
        sg_drop_icmp=list(state.sg_drop_icmp),
        services={node: services.alive(state, node) for node in central_nodes(plan, state.relay)},
        database=plan.db,
        ha_sites=list(plan.ha_sites),
        ha_preempt_after=plan.ha_preempt_after,
        ha_return=plan.ha_return if plan.ha_sites else None,
        lans={site.index: str(site.lan) for site in plan.sites},
        given_lans=sorted(state.lans),
    )
