"""The pure plan of a lab: names, addresses and the `ip`/`nft` text that builds it, with no side effects.

Every name a lab creates in a shared place (root-namespace links, namespace names, WireGuard interface
names, whose UAPI sockets share `/var/run/wireguard`) starts with `LAB-`, and lab names cannot contain
`-`, so `LAB-` belongs to exactly one lab. A second lab on the same machine takes the next *slot*:
underlay `198.18.SLOT.0/24` and loopback port `8080 + SLOT` (the first lab gets the plan of docs/lab.md exactly).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Literal

from wgmesh.errors import ValidationError
from wgmesh.ipam import parse_cidr
from wgmesh.lab.postgres import ClusterPaths
from wgmesh.values import Prefix

DEFAULT_NAME = "wgl"
DEFAULT_SITES = 3
# Site i owns 10.i.0.0/24 (unless `--lan` gives it another) and 198.18.SLOT.(10+i); 200 keeps both inside
# their octet with room to spare.
MAX_SITES = 200
# 198.18.0.0/15 (RFC 2544 benchmarking space) holds 512 /24s; the first 256 are plenty of labs.
MAX_SLOT = 255
CONVERGE_BUDGET = 60.0
"""Seconds (on the reference machine, scaled by wgmesh/lab/timescale.py) `up` and `add-site` wait for a lab
of up to CONVERGE_FLAT_GATEWAYS gateways to converge, unless told otherwise."""
CONVERGE_FLAT_GATEWAYS = 4
CONVERGE_PER_GATEWAY = 5.0
"""Seconds more per gateway beyond CONVERGE_FLAT_GATEWAYS: each agent is a Python program starting on the
machine's few cores and the pairs to handshake grow as N², so a fixed 60 s that 3 sites use a third of
would not hold 12 sites on a loaded machine (docs/lab.md, "Sizes")."""
API_PORT = 8080
# The hub's relay, next to the coordinator on the hub address.
RELAY_PORT = 8443
# Prometheus /metrics (docs/metrics.md): the coordinator and the relay on the hub address, each agent on its
# underlay address.
COORDINATOR_METRICS_PORT = 9585
RELAY_METRICS_PORT = 9587
AGENT_METRICS_PORT = 9586
LOOPBACK_BASE_PORT = 8080
STATE_ROOT = Path("/run/wgmesh-lab")
LAB_UNDERLAY = IPv4Network("198.18.0.0/15")
"""Every lab's underlay slots (RFC 2544 benchmarking space): no site's LAN may overlap it."""
# The only destinations lab tooling may address from the root namespace.
SAFE_NETWORKS = (LAB_UNDERLAY, IPv4Network("127.0.0.1/32"))

GATEWAY_LAN_OFFSET = 1
SECOND_GATEWAY_LAN_OFFSET = 2
HOST_LAN_OFFSET = 10
"""A site's LAN addresses, from its network address: its gateway .1, an HA site's second gateway .2, the VPC
host .10."""
LAN_SPACE = (IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16"))
"""Where `--lan` may put a site's LAN: RFC 1918 space, which route approval rules cover (so the site's
enrollment token approves it, docs/security.md) and which meets neither the underlay nor the overlay (CGNAT
space, also approvable, is left out: the coordinator's overlay lives there, 100.96.0.0/16 by default)."""
MAX_LAN_PREFIXLEN = 28
"""The narrowest LAN `--lan` takes: a /28 (.0-.15) still holds the VPC host's .10 below its broadcast."""

HA_UNDERLAY_OFFSET = 200
"""gwIb's underlay address is gwI's plus this: .(210+I), above every site's .(10+I) (sites stop at .210) and
the hubs' .1-.3."""
MAX_HA_SITE = 254 - 10 - HA_UNDERLAY_OFFSET
"""The last site that can have a second gateway: .(210+I) must stay below the underlay's broadcast (.255)."""
HA_SUFFIX = "b"
"""What names a site's second gateway: `gw2b`, namespace `LAB-gw2b`, interface `LAB-wg2b`, uplink `LAB-g2b`."""
DEFAULT_HA_PREEMPT_AFTER = 10.0
"""Seconds a returning primary must stay healthy before it takes its prefix back (the agents' rule, given
to every agent of the lab with `--ha-preempt-after`)."""
HOST_BRIDGE = "eth0"
"""On an HA site the VPC host's address sits on a bridge named like a plain host's only link, so what
addresses the host's `eth0` (the security-group switch, `ip route`) works on both."""
ROUTE_TABLE_HOOK = "wgmesh.lab.route_table_hook"
"""The module both gateways of an HA site run on becoming (or ceasing to be) the prefix's carrier: it plays
the cloud's route table by pointing the VPC host's default route at the new primary."""

MAX_HUBS = 3
"""Coordinators, and relays, a lab may run: hub machine I holds coordinator I and relay I on 198.18.SLOT.I
(sites start at .11)."""
DATABASE_NODE = "db"
"""The lab's PostgreSQL, as `wgmesh lab kill/start` name it."""

_NAME = re.compile(r"^[a-z][a-z0-9]{0,5}$")
_NODE = re.compile(r"^(gw|vm)([1-9][0-9]{0,2})(b?)$")
_SERVICE = re.compile(r"^(hub|relay)([1-9]?)$")

HaReturn = Literal["route-table", "masquerade"]
"""How an HA site's VPC replies reach the member carrying its prefix: the route-table hook rewrites the VPC
host's default route (`--on-primary`), or the gateways masquerade (no hook: the agent's default)."""
NodeRole = Literal["hub", "gateway", "host"]
Database = Literal["sqlite", "postgresql"]
ServiceKind = Literal["coordinator", "relay", "agent", "database"]


@dataclass(frozen=True)
class Gateway:
    """One gateway of a site: the site's own (`gwI`) or, on an HA site, its second (`gwIb`)."""

    node: str
    site: int
    netns: str
    uplink: str
    wg_interface: str
    underlay_ip: IPv4Address
    lan_ip: IPv4Address
    # Its LAN veth's far end: the VPC host's `eth0` on a plain site, a port of the host's bridge on an HA site.
    host_port: str

    @property
    def second(self) -> bool:
        """Whether this is an HA site's second gateway (`gwIb`)."""
        return self.node.endswith(HA_SUFFIX)


@dataclass(frozen=True)
class Site:
    """One site: a gateway namespace on the underlay and a VPC host namespace behind it; an HA site has a
    second gateway (`gwIb`) on the same LAN, advertising the same prefix."""

    index: int
    node: str
    host: str
    gw_ns: str
    vm_ns: str
    uplink: str
    wg_interface: str
    underlay_ip: IPv4Address
    lan: IPv4Network
    gw_lan_ip: IPv4Address
    vm_ip: IPv4Address
    ha: bool = False

    @property
    def name(self) -> str:
        """The site's name as its agents declare it (`--site`): one VPC, whatever its gateways."""
        return f"vpc{self.index}"

    @property
    def gateway(self) -> Gateway:
        """The site's own gateway, `gwI` (the primary of an HA site as the lab builds it)."""
        port = self.node if self.ha else HOST_BRIDGE
        return Gateway(
            self.node,
            self.index,
            self.gw_ns,
            self.uplink,
            self.wg_interface,
            self.underlay_ip,
            self.gw_lan_ip,
            port,
        )

    @property
    def second(self) -> Gateway | None:
        """An HA site's second gateway, `gwIb` (None on a plain site): its own namespace, uplink, interface and
        underlay address (.(210+I)), LAN address .2."""
        if not self.ha:
            return None
        node = self.node + HA_SUFFIX
        return Gateway(
            node=node,
            site=self.index,
            netns=self.gw_ns + HA_SUFFIX,
            uplink=self.uplink + HA_SUFFIX,
            wg_interface=self.wg_interface + HA_SUFFIX,
            underlay_ip=self.underlay_ip + HA_UNDERLAY_OFFSET,
            lan_ip=self.lan.network_address + SECOND_GATEWAY_LAN_OFFSET,
            host_port=node,
        )

    @property
    def gateways(self) -> tuple[Gateway, ...]:
        """The site's gateways, its own first."""
        second = self.second
        return (self.gateway,) if second is None else (self.gateway, second)


@dataclass(frozen=True)
class LabPlan:
    """Everything a lab is made of, derived from its name, size and slot."""

    name: str
    slot: int
    underlay: IPv4Network
    hub_ip: IPv4Address
    bridge: str
    api_port: int
    loopback_port: int
    nft_table: str
    sites: tuple[Site, ...]
    state_dir: Path
    db: Database = "sqlite"
    coordinators: int = 1
    relays: int = 1
    ha_preempt_after: float = DEFAULT_HA_PREEMPT_AFTER
    ha_return: HaReturn = "route-table"

    @property
    def prefix(self) -> str:
        """The prefix of every shared name this lab creates."""
        return f"{self.name}-"

    def hub_address(self, index: int) -> IPv4Address:
        """The underlay address of hub machine `index` (1-based): coordinator and relay `index` listen there."""
        return self.underlay.network_address + index

    @property
    def hub_addresses(self) -> tuple[IPv4Address, ...]:
        """Every hub machine's address, the first being `hub_ip`."""
        return tuple(self.hub_address(i) for i in range(1, max(self.coordinators, self.relays) + 1))

    @property
    def hub_url(self) -> str:
        """The first coordinator as agents see it, on the underlay."""
        return self.coordinator_url(1)

    def coordinator_url(self, index: int) -> str:
        """Coordinator `index` (1-based) as agents see it, on the underlay."""
        return f"https://{self.hub_address(index)}:{self.api_port}"

    @property
    def coordinator_urls(self) -> tuple[str, ...]:
        """Every coordinator, the first one first: what tokens carry and the lab's clients fail over across."""
        return tuple(self.coordinator_url(i) for i in range(1, self.coordinators + 1))

    @property
    def relay_url(self) -> str:
        """The first relay as the coordinator announces it to agents (with its pin after a `#`)."""
        return self.relay_url_of(1)

    def relay_url_of(self, index: int) -> str:
        """Relay `index` (1-based) as coordinators announce it (with its pin after a `#`)."""
        return f"tls://{self.hub_address(index)}:{RELAY_PORT}"

    @property
    def relay_state_dir(self) -> Path:
        """Where the lab's first relay keeps its TLS key."""
        return self.relay_state_dir_of(1)

    def relay_state_dir_of(self, index: int) -> Path:
        """Where relay `index` keeps its TLS key (`relay`, `relay2`, …)."""
        return self.state_dir / relay_node(index)

    @property
    def pg_root(self) -> Path:
        """Where the lab's PostgreSQL cluster lives (with `--db postgresql`)."""
        return self.state_dir / "pg"

    @property
    def local_url(self) -> str:
        """The coordinator as the host sees it, on loopback."""
        return f"https://127.0.0.1:{self.loopback_port}"

    def site(self, index: int) -> Site:
        """Site `index` (1-based), or ValidationError."""
        if not 1 <= index <= len(self.sites):
            raise ValidationError(
                f"lab {self.name} has sites 1..{len(self.sites)}, not {index}", code="unknown_site"
            )
        return self.sites[index - 1]

    @property
    def gateways(self) -> tuple[Gateway, ...]:
        """Every gateway of the lab by site, each site's own first (`gw1`, `gw2`, `gw2b`, `gw3`)."""
        return tuple(g for s in self.sites for g in s.gateways)

    @property
    def convergence_budget(self) -> float:
        """The default convergence wait for this lab's size (see convergence_budget)."""
        return convergence_budget(len(self.gateways))

    @property
    def ha_sites(self) -> tuple[int, ...]:
        """The sites with a second gateway."""
        return tuple(s.index for s in self.sites if s.ha)

    def gateway(self, node: str) -> Gateway:
        """Gateway `node` (`gwI` or `gwIb`), or ValidationError."""
        found = next((g for g in self.gateways if g.node == node), None)
        if found is None:
            names = ", ".join(g.node for g in self.gateways)
            raise ValidationError(
                f"lab {self.name} has no gateway {node!r}: it has {names}", code="unknown_node"
            )
        return found

    def namespaces(self) -> list[str]:
        """Every namespace of the plan, gateways first."""
        return [g.netns for g in self.gateways] + [s.vm_ns for s in self.sites]

    @cached_property
    def shared_lans(self) -> frozenset[int]:
        """The sites whose LAN overlaps another site's (`--lan`, issue 20). Their addresses are not unique
        in the lab, so nothing may find such a site by its LAN: the mesh routes its real prefix to one site
        at most (the others' claims are conflicts until an alias publishes them elsewhere), and its host's
        address may be the pinging host's own."""
        # Compared as integer spans, once per plan: convergence asks about every pair at every poll.
        spans = [(s.index, int(s.lan.network_address), int(s.lan.broadcast_address)) for s in self.sites]
        return frozenset(
            index
            for index, first, last in spans
            if any(other != index and first <= end and start <= last for other, start, end in spans)
        )

    @property
    def agent_waves(self) -> tuple[tuple[Site, ...], ...]:
        """The sites in the order their agents start, a wave at a time, each once the one before has stated its LAN.

        The coordinator ranks overlapping claims by age, so a site whose LAN overlaps a lower-numbered site's
        starts in a later wave: the lower-numbered site's claim is then the active one, every time, and the
        later one the conflict (issue 20). Without `--lan` overlaps, one wave holds every site.
        """
        wave: dict[int, int] = {}
        for site in self.sites:
            earlier = (
                [wave[o.index] for o in self.sites[: site.index - 1] if o.lan.overlaps(site.lan)]
                if site.index in self.shared_lans
                else []
            )
            wave[site.index] = 1 + max(earlier) if earlier else 0
        return tuple(
            tuple(s for s in self.sites if wave[s.index] == number)
            for number in range(max(wave.values()) + 1)
        )

    def with_sites(self, count: int) -> LabPlan:
        """The same lab grown (or shrunk) to `count` sites (the HA sites it still has stay HA, and the sites
        it keeps keep their LAN; a new site gets the default 10.I.0.0/24)."""
        _check_sites(count)
        ha = set(self.ha_sites)
        lans = {s.index: s.lan for s in self.sites}
        return replace(
            self,
            sites=tuple(_site(self.name, self.slot, i, i in ha, lans.get(i)) for i in range(1, count + 1)),
        )

    def coordinators_for(self, site: Site | Gateway) -> list[str]:
        """The coordinator URLs a gateway's agent is given, its preferred one first: agents are spread over
        the coordinators (gwI and gwIb prefer coordinator ((I-1) mod N) + 1), as a load balancer would."""
        index = site.index if isinstance(site, Site) else site.site
        urls = list(self.coordinator_urls)
        first = (index - 1) % len(urls)
        return urls[first:] + urls[:first]


@dataclass(frozen=True)
class Service:
    """A process the lab runs: coordinator I (`hub`, `hub2`, …), relay I (`relay`, `relay2`, …), a gateway's
    agent (`gwI`) or the PostgreSQL server (`db`)."""

    node: str
    kind: ServiceKind
    index: int


def coordinator_node(index: int) -> str:
    """The node name of coordinator `index`: `hub` for the first (as before several), then `hub2`, …"""
    return "hub" if index == 1 else f"hub{index}"


def relay_node(index: int) -> str:
    """The node name of relay `index`: `relay`, then `relay2`, …"""
    return "relay" if index == 1 else f"relay{index}"


def central_nodes(plan: LabPlan, relays: bool) -> list[str]:
    """The central node's processes in the order they start: the database (PostgreSQL labs), every
    coordinator, then every relay (when the lab runs relays)."""
    nodes = [DATABASE_NODE] if plan.db == "postgresql" else []
    nodes += [coordinator_node(i) for i in range(1, plan.coordinators + 1)]
    nodes += [relay_node(i) for i in range(1, plan.relays + 1)] if relays else []
    return nodes


def resolve_service(plan: LabPlan, node: str) -> Service:
    """The lab process `node` names, or ValidationError naming the choices."""
    if node == DATABASE_NODE and plan.db == "postgresql":
        return Service(node, "database", 1)
    match = _SERVICE.fullmatch(node)
    if match is not None:
        index = int(match.group(2) or "1")
        if match.group(1) == "hub" and 1 <= index <= plan.coordinators and node == coordinator_node(index):
            return Service(node, "coordinator", index)
        if match.group(1) == "relay" and 1 <= index <= plan.relays and node == relay_node(index):
            return Service(node, "relay", index)
    if any(g.node == node for g in plan.gateways):
        return Service(node, "agent", int(node[2:].removesuffix(HA_SUFFIX)))
    choices = [coordinator_node(i) for i in range(1, plan.coordinators + 1)]
    choices += [relay_node(i) for i in range(1, plan.relays + 1)]
    choices += [f"gw1..gw{len(plan.sites)}"] + [f"gw{i}{HA_SUFFIX}" for i in plan.ha_sites]
    choices += [DATABASE_NODE] if plan.db == "postgresql" else []
    raise ValidationError(
        f"{node!r} runs no process of lab {plan.name}: it has {', '.join(choices)}", code="no_process"
    )


@dataclass(frozen=True)
class Node:
    """A node addressed by `wgmesh lab exec`: the hub (root namespace), a gateway or a VPC host."""

    name: str
    role: NodeRole
    netns: str | None
    site: Site | None
    gateway: Gateway | None = None


@dataclass(frozen=True)
class IpCommand:
    """One `ip` command, run in `netns` (None: the root namespace)."""

    netns: str | None
    args: tuple[str, ...]


def validate_name(name: str) -> str:
    """The lab name if usable: 1-6 characters of a-z and 0-9, starting with a letter (no `-`)."""
    if not _NAME.fullmatch(name):
        raise ValidationError(
            f"lab name {name!r} must be 1-6 characters of a-z and 0-9, starting with a letter",
            code="invalid_lab_name",
        )
    return name


def convergence_budget(gateways: int) -> float:
    """Seconds (reference machine) to wait for `gateways` gateways to converge when no timeout is given:
    CONVERGE_BUDGET, plus CONVERGE_PER_GATEWAY for each gateway beyond CONVERGE_FLAT_GATEWAYS."""
    return CONVERGE_BUDGET + CONVERGE_PER_GATEWAY * max(0, gateways - CONVERGE_FLAT_GATEWAYS)


def _check_sites(count: int) -> None:
    if not 1 <= count <= MAX_SITES:
        raise ValidationError(f"--sites must be between 1 and {MAX_SITES}, not {count}", code="invalid_sites")


def default_lan(index: int) -> IPv4Network:
    """Site `index`'s LAN when `--lan` gives it none: 10.I.0.0/24."""
    return IPv4Network(f"10.{index}.0.0/24")


def check_lan(index: int, lan: Prefix | str) -> IPv4Network:
    """Site `index`'s LAN as `--lan` gives it (text or a network), if a lab can build it, or ValidationError:
    an IPv4 prefix with its host bits clear, wide enough for the VPC host's .10, inside private space its
    enrollment token may approve (LAN_SPACE) and clear of the lab underlay."""
    try:
        network = parse_cidr(lan) if isinstance(lan, str) else lan
    except ValidationError as exc:
        raise ValidationError(f"--lan {index}: {exc.message}", code="invalid_lan") from exc
    given = f"--lan {index}={network}"
    if not isinstance(network, IPv4Network):
        raise ValidationError(f"{given}: a lab LAN must be IPv4", code="invalid_lan")
    if network.prefixlen > MAX_LAN_PREFIXLEN:
        raise ValidationError(
            f"{given}: too narrow for its VPC host {network.network_address + HOST_LAN_OFFSET} "
            f"(a lab LAN is a /{MAX_LAN_PREFIXLEN} or wider)",
            code="invalid_lan",
        )
    # Before the private-space test, which it would fail as well, because this says what is wrong.
    if network.overlaps(LAB_UNDERLAY):
        raise ValidationError(f"{given}: overlaps the lab underlay {LAB_UNDERLAY}", code="invalid_lan")
    if not any(network.subnet_of(space) for space in LAN_SPACE):
        raise ValidationError(
            f"{given}: a lab LAN must be inside {', '.join(map(str, LAN_SPACE[:-1]))} or {LAN_SPACE[-1]} "
            "(private space its enrollment token can approve)",
            code="invalid_lan",
        )
    return network


def check_lans(sites: int, lans: Mapping[int, Prefix | str]) -> dict[int, IPv4Network]:
    """The LANs `--lan` gives ({site: LAN}), checked against a lab of `sites` sites, or ValidationError."""
    checked: dict[int, IPv4Network] = {}
    for index, lan in sorted(lans.items()):
        if not 1 <= index <= sites:
            raise ValidationError(f"--lan {index}={lan}: the lab has sites 1..{sites}", code="invalid_lan")
        checked[index] = check_lan(index, lan)
    return checked


def parse_lans(items: Iterable[str]) -> dict[int, IPv4Network]:
    """`I=CIDR` items (`--lan`, repeatable or a comma list) as {site: LAN}, or ValidationError: each must be
    SITE=CIDR with a LAN `check_lan` takes, and a site may be given once only (two LANs for one site is a
    mistake, not an override). Whether the sites exist is the plan's check (plan_lab)."""
    found: dict[int, IPv4Network] = {}
    for item in items:
        for part in item.split(","):
            index, sep, text = part.partition("=")
            if not sep or not index.strip().isdigit() or not text.strip():
                raise ValidationError(
                    f"--lan {part!r} must be SITE=CIDR, e.g. 2=10.1.0.0/24", code="invalid_lan"
                )
            site = int(index)
            if not 1 <= site <= MAX_SITES:
                raise ValidationError(
                    f"--lan {part.strip()}: site {site} is not between 1 and {MAX_SITES}", code="invalid_lan"
                )
            lan = check_lan(site, text)
            if site in found:
                raise ValidationError(
                    f"--lan: site {site} is given twice ({found[site]} and {lan})", code="invalid_lan"
                )
            found[site] = lan
    return dict(sorted(found.items()))


def describe_lans(plan: LabPlan, indexes: Iterable[int]) -> str:
    """`vpc2 10.1.0.0/24 (the same as vpc1); vpc3 192.168.0.0/16`: the LANs of `indexes` (those `--lan`
    gave), each with the sites whose LAN it meets, for `up` and `status`."""
    parts = []
    for index in sorted(set(indexes)):
        site = plan.site(index)
        others = [s for s in plan.sites if s.index != index]
        same = [s.name for s in others if s.lan == site.lan]
        overlapping = [
            f"{s.name}'s {s.lan}" for s in others if s.lan != site.lan and s.lan.overlaps(site.lan)
        ]
        notes = [f"the same as {', '.join(same)}"] if same else []
        notes += [f"overlaps {', '.join(overlapping)}"] if overlapping else []
        parts.append(f"{site.name} {site.lan}" + (f" ({'; '.join(notes)})" if notes else ""))
    return "; ".join(parts)


def _site(name: str, slot: int, index: int, ha: bool = False, lan: IPv4Network | None = None) -> Site:
    underlay = IPv4Network(f"198.18.{slot}.0/24")
    lan = default_lan(index) if lan is None else lan
    return Site(
        index=index,
        node=f"gw{index}",
        host=f"vm{index}",
        gw_ns=f"{name}-gw{index}",
        vm_ns=f"{name}-vm{index}",
        uplink=f"{name}-g{index}",
        wg_interface=f"{name}-wg{index}",
        underlay_ip=underlay.network_address + 10 + index,
        lan=lan,
        gw_lan_ip=lan.network_address + GATEWAY_LAN_OFFSET,
        vm_ip=lan.network_address + HOST_LAN_OFFSET,
        ha=ha,
    )


def check_ha_sites(sites: int, ha_sites: Iterable[int]) -> tuple[int, ...]:
    """The sites given a second gateway, sorted, or ValidationError: each must be a site of the lab, and
    its second gateway's underlay address .(210+I) must fit below the broadcast address."""
    chosen = tuple(sorted(set(ha_sites)))
    for index in chosen:
        if not 1 <= index <= sites:
            raise ValidationError(f"--ha-site {index}: the lab has sites 1..{sites}", code="invalid_ha_site")
        if index > MAX_HA_SITE:
            raise ValidationError(
                f"--ha-site {index}: a second gateway fits sites 1..{MAX_HA_SITE} only "
                f"(gwIb's underlay address is 198.18.S.(210+I))",
                code="invalid_ha_site",
            )
    return chosen


def check_preempt_after(seconds: float) -> float:
    """A usable `--ha-preempt-after` (seconds, 0 to one hour), or ValidationError."""
    if not 0 <= seconds <= 3600:
        raise ValidationError(
            f"--ha-preempt-after must be between 0 and 3600 seconds, not {seconds:g}", code="invalid_preempt"
        )
    return seconds


def check_hubs(count: int, what: str) -> int:
    """A number of coordinators or relays the lab can run, or ValidationError."""
    if not 1 <= count <= MAX_HUBS:
        raise ValidationError(f"{what} must be between 1 and {MAX_HUBS}, not {count}", code="invalid_hubs")
    return count


def plan_lab(
    name: str,
    sites: int,
    slot: int = 0,
    loopback_port: int | None = None,
    *,
    db: Database = "sqlite",
    coordinators: int = 1,
    relays: int = 1,
    ha_sites: Iterable[int] = (),
    ha_preempt_after: float = DEFAULT_HA_PREEMPT_AFTER,
    ha_return: HaReturn = "route-table",
    lans: Mapping[int, Prefix | str] | None = None,
) -> LabPlan:
    """The plan of lab `name` with `sites` sites in underlay slot `slot`, `coordinators` coordinators on
    `db` and (when it runs relays) `relays` relays; each of `ha_sites` gets a second gateway, and each site
    of `lans` ({site: LAN}, `--lan`) that LAN instead of 10.I.0.0/24, even one another site has (issue 20:
    VPCs whose CIDRs overlap; each site is namespaces of its own, so its addresses may repeat another's)."""
    validate_name(name)
    _check_sites(sites)
    ha = set(check_ha_sites(sites, ha_sites))
    chosen = check_lans(sites, lans or {})
    check_preempt_after(ha_preempt_after)
    check_hubs(coordinators, "--coordinators")
    check_hubs(relays, "--relays")
    if coordinators > 1 and db != "postgresql":
        raise ValidationError(
            "several coordinators share one PostgreSQL database: add --db postgresql", code="invalid_hubs"
        )
    if not 0 <= slot <= MAX_SLOT:
        raise ValidationError(f"lab slot must be between 0 and {MAX_SLOT}, not {slot}", code="invalid_slot")
    port = LOOPBACK_BASE_PORT + slot if loopback_port is None else loopback_port
    if not 1 <= port <= 65535:
        raise ValidationError(f"loopback port {port} is not a TCP port", code="invalid_port")
    underlay = IPv4Network(f"198.18.{slot}.0/24")
    return LabPlan(
        name=name,
        slot=slot,
        underlay=underlay,
        hub_ip=underlay.network_address + 1,
        bridge=f"{name}-br",
        api_port=API_PORT,
        loopback_port=port,
        nft_table=f"wgmesh-lab-{name}",
        sites=tuple(_site(name, slot, i, i in ha, chosen.get(i)) for i in range(1, sites + 1)),
        state_dir=STATE_ROOT / name,
        db=db,
        coordinators=coordinators,
        relays=relays,
        ha_preempt_after=float(ha_preempt_after),
        ha_return=ha_return,
    )


def owns(lab: str, name: str) -> bool:
    """Whether a namespace, link or socket name belongs to lab `lab`."""
    return name.startswith(f"{lab}-") and len(name) > len(lab) + 1


def choose_slot(taken: Iterable[int]) -> int:
    """The lowest underlay slot no other lab holds."""
    used = set(taken)
    for slot in range(MAX_SLOT + 1):
        if slot not in used:
            return slot
    raise ValidationError(f"all {MAX_SLOT + 1} lab slots are in use", code="no_slot")


def resolve_node(plan: LabPlan, node: str) -> Node:
    """`hub`, `gwI`, `gwIb` (an HA site's second gateway) or `vmI` as a node of the plan, or ValidationError
    naming the choices."""
    if node == "hub":
        return Node(name=node, role="hub", netns=None, site=None)
    match = _NODE.fullmatch(node)
    second = match is not None and match.group(3) == HA_SUFFIX
    site = (
        plan.sites[int(match.group(2)) - 1] if match and 1 <= int(match.group(2)) <= len(plan.sites) else None
    )
    if match is None or site is None or (second and (match.group(1) == "vm" or not site.ha)):
        count = len(plan.sites)
        extra = "".join(f", gw{i}{HA_SUFFIX}" for i in plan.ha_sites)
        raise ValidationError(
            f"unknown node {node!r}: lab {plan.name} has hub, gw1..gw{count}{extra}, vm1..vm{count}",
            code="unknown_node",
        )
    if match.group(1) == "gw":
        gateway = site.second if second else site.gateway
        assert gateway is not None  # an HA site has a second gateway
        return Node(name=node, role="gateway", netns=gateway.netns, site=site, gateway=gateway)
    return Node(name=node, role="host", netns=site.vm_ns, site=site)


def is_safe_destination(address: str) -> bool:
    """Whether the root namespace may send to `address` (lab underlay or 127.0.0.1 only)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return False
    return isinstance(addr, IPv4Address) and any(addr in net for net in SAFE_NETWORKS)


def underlay_commands(plan: LabPlan) -> list[IpCommand]:
    """The root-namespace bridge with the hub addresses."""
    # addrgenmode none: no IPv6 link-local address, so no router solicitations or DAD on lab links.
    return [
        IpCommand(None, ("link", "add", plan.bridge, "type", "bridge")),
        IpCommand(None, ("link", "set", plan.bridge, "addrgenmode", "none")),
        *hub_address_commands(plan, plan.hub_addresses),
        IpCommand(None, ("link", "set", plan.bridge, "up")),
    ]


def hub_address_commands(plan: LabPlan, addresses: Iterable[IPv4Address]) -> list[IpCommand]:
    """Hub machines' addresses on the bridge."""
    prefix = plan.underlay.prefixlen
    return [
        IpCommand(None, ("addr", "add", f"{address}/{prefix}", "dev", plan.bridge)) for address in addresses
    ]


def site_commands(plan: LabPlan, site: Site) -> list[IpCommand]:
    """The namespaces, veth pairs, addresses and routes of one site.

    A plain site is gateway —veth— VPC host (`lan` to `eth0`). An HA site's LAN holds three: the VPC host's
    address sits on a bridge named `eth0` in its namespace, with one port per gateway (`gwI`, `gwIb`).
    """
    vm = site.vm_ns
    commands = [IpCommand(None, ("netns", "add", g.netns)) for g in site.gateways]
    commands.append(IpCommand(None, ("netns", "add", vm)))
    if site.ha:
        # The bridge first, so that each gateway's veth can join it as it arrives.
        commands.append(IpCommand(vm, ("link", "add", HOST_BRIDGE, "type", "bridge")))
    for gateway in site.gateways:
        commands += _gateway_commands(plan, site, gateway)
    # The gateways get no default route: only the connected underlay /24, so nothing can leave the lab;
    # the agents add the mesh routes.
    commands += [
        IpCommand(vm, ("link", "set", "lo", "up")),
        IpCommand(vm, ("link", "set", HOST_BRIDGE, "addrgenmode", "none")),
        IpCommand(vm, ("addr", "add", f"{site.vm_ip}/{site.lan.prefixlen}", "dev", HOST_BRIDGE)),
        IpCommand(vm, ("link", "set", HOST_BRIDGE, "up")),
        # On an HA site this is the "cloud route table" the gateways' hook rewrites (route_table_hook).
        IpCommand(vm, ("route", "add", "default", "via", str(site.gw_lan_ip))),
    ]
    return commands


def _gateway_commands(plan: LabPlan, site: Site, gateway: Gateway) -> list[IpCommand]:
    """One gateway's uplink to the underlay bridge and its LAN veth to the VPC host (or the host's bridge)."""
    prefix = plan.underlay.prefixlen
    gw, vm = gateway.netns, site.vm_ns
    commands = [
        # Both pairs are created with their far end already in place, so no temporary name ever
        # appears in the root namespace.
        IpCommand(None, ("link", "add", gateway.uplink, "type", "veth", "peer", "name", "eth0", "netns", gw)),
        IpCommand(None, ("link", "set", gateway.uplink, "addrgenmode", "none")),
        IpCommand(None, ("link", "set", gateway.uplink, "master", plan.bridge, "up")),
        IpCommand(gw, ("link", "add", "lan", "type", "veth", "peer", "name", gateway.host_port, "netns", vm)),
        IpCommand(gw, ("link", "set", "lo", "up")),
        IpCommand(gw, ("link", "set", "eth0", "addrgenmode", "none")),
        IpCommand(gw, ("addr", "add", f"{gateway.underlay_ip}/{prefix}", "dev", "eth0")),
        IpCommand(gw, ("link", "set", "eth0", "up")),
        IpCommand(gw, ("link", "set", "lan", "addrgenmode", "none")),
        IpCommand(gw, ("addr", "add", f"{gateway.lan_ip}/{site.lan.prefixlen}", "dev", "lan")),
        IpCommand(gw, ("link", "set", "lan", "up")),
    ]
    if site.ha:
        commands += [
            IpCommand(vm, ("link", "set", gateway.host_port, "addrgenmode", "none")),
            IpCommand(vm, ("link", "set", gateway.host_port, "master", HOST_BRIDGE, "up")),
        ]
    return commands


def build_commands(plan: LabPlan) -> list[IpCommand]:
    """Every `ip` command that builds the lab from nothing."""
    commands = underlay_commands(plan)
    for site in plan.sites:
        commands += site_commands(plan, site)
    return commands


def loopback_forward_script(plan: LabPlan) -> str:
    """The nftables table that makes 127.0.0.1:PORT reach the coordinator on the hub address."""
    # The coordinator binds only the hub address; a DNAT of locally generated connections gives the
    # host its loopback URL without a second listener or a proxy process.
    return (
        f"table ip {plan.nft_table} {{\n"
        "  chain output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        f"    ip daddr 127.0.0.1 tcp dport {plan.loopback_port} dnat to {plan.hub_ip}:{plan.api_port}\n"
        "  }\n"
        "}\n"
    )


PG_DATABASE = "wgmesh"
"""The database the lab's coordinators share on its PostgreSQL cluster."""


def sqlite_db_url(plan: LabPlan) -> str:
    """The lab's SQLite database URL (its registry before a move to PostgreSQL)."""
    return f"sqlite:///{plan.state_dir / 'coordinator.db'}"


def coordinator_db_url(plan: LabPlan) -> str:
    """The lab coordinators' database URL: SQLite in the state dir, or the lab's PostgreSQL cluster."""
    if plan.db == "postgresql":
        return ClusterPaths(plan.pg_root).url(PG_DATABASE)
    return sqlite_db_url(plan)


def coordinator_args(plan: LabPlan, index: int = 1, *, relay_pins: Sequence[str] = ()) -> list[str]:
    """Coordinator `index`'s arguments (after the program name): the lab's database, its hub address only;
    with the relays' pins (relay 1 first), the relays announced to agents with them."""
    address = plan.hub_address(index)
    # HTTPS with the registry's own identity; tokens name every coordinator, wherever they are created.
    args = ["--db", coordinator_db_url(plan), "serve", "--listen", f"{address}:{plan.api_port}"]
    for url in plan.coordinator_urls:
        args += ["--public-url", url]
    args += ["--metrics-listen", f"{address}:{COORDINATOR_METRICS_PORT}"]
    for relay, pin in enumerate(relay_pins, start=1):
        args += ["--announce-relay", f"{plan.relay_url_of(relay)}#{pin}"]
    return args


def coordinator_init_args(plan: LabPlan) -> list[str]:
    """`init` of the lab's database (the admin token comes from the environment)."""
    return ["--db", coordinator_db_url(plan), "init"]


def relay_key_args(plan: LabPlan) -> list[str]:
    """The command that prints the coordinator's relay-ticket public key (creating it if needed)."""
    return ["--db", coordinator_db_url(plan), "relay-key"]


def relay_args(
    plan: LabPlan, coordinator_key: str, coordinator_pin: str | None = None, index: int = 1
) -> list[str]:
    """Relay `index`'s arguments (after the program name): its hub address only, trusting the lab's
    coordinators; with their pin, pulling their revocations (deleted and replaced nodes' tickets) as in
    production, from whichever coordinator answers."""
    address = plan.hub_address(index)
    args = [
        "--listen",
        f"{address}:{RELAY_PORT}",
        "--coordinator-key",
        coordinator_key,
        "--state-dir",
        str(plan.relay_state_dir_of(index)),
        "--metrics-listen",
        f"{address}:{RELAY_METRICS_PORT}",
    ]
    if coordinator_pin is not None:
        for url in plan.coordinator_urls:
            args += ["--coordinator", url]
        args += ["--coordinator-pin", coordinator_pin]
    return args


def route_table_hook(site: Site, gateway: Gateway, python: str) -> list[str]:
    """The `--on-primary` command of an HA site's gateway: when it becomes the prefix's carrier, point the
    VPC host's default route (the lab's "cloud route table") at this gateway's LAN address."""
    return [python, "-m", ROUTE_TABLE_HOOK, "--vm-netns", site.vm_ns, "--via", str(gateway.lan_ip)]


def agent_args(
    plan: LabPlan, site: Site | Gateway, token: str, backend: str, *, python: str = "python3"
) -> list[str]:
    """A gateway agent's arguments (after the program name): `site` is a site (its own gateway) or one gateway.

    Every agent names its site (`vpcI`) and the lab's preemption rule; both gateways of an HA site also run
    the route-table hook, with `python` (the interpreter that has wgmesh).
    """
    gateway = site.gateway if isinstance(site, Site) else site
    own = plan.site(gateway.site)
    coordinators = [arg for url in plan.coordinators_for(gateway) for arg in ("--coordinator", url)]
    args = [
        *coordinators,
        "--token",
        token,
        "--name",
        gateway.node,
        "--advertise",
        str(own.lan),
        "--interface",
        gateway.wg_interface,
        "--backend",
        backend,
        "--state-dir",
        str(plan.state_dir / gateway.node),
        "--metrics-listen",
        f"{gateway.underlay_ip}:{AGENT_METRICS_PORT}",
        "--site",
        own.name,
        "--ha-preempt-after",
        f"{plan.ha_preempt_after:g}",
    ]
    if own.ha and plan.ha_return == "route-table":
        # One string, as an operator writes it; the agent splits it with shlex and runs it with no shell.
        args += ["--on-primary", shlex.join(route_table_hook(own, gateway, python))]
    return args
