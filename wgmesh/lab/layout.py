"""The pure plan of a lab: names, addresses and the `ip`/`nft` text that builds it, with no side effects.

Every name a lab creates in a shared place (root-namespace links, namespace names, WireGuard interface
names, whose UAPI sockets share `/var/run/wireguard`) starts with `LAB-`, and lab names cannot contain
`-`, so `LAB-` belongs to exactly one lab. A second lab on the same machine takes the next *slot*:
underlay `198.18.SLOT.0/24` and loopback port `8080 + SLOT` (the first lab gets the plan of docs/lab.md exactly).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Literal

from wgmesh.errors import ValidationError

DEFAULT_NAME = "wgl"
DEFAULT_SITES = 3
# Site i owns 10.i.0.0/24 and 198.18.SLOT.(10+i); 200 keeps both inside their octet with room to spare.
MAX_SITES = 200
# 198.18.0.0/15 (RFC 2544 benchmarking space) holds 512 /24s; the first 256 are plenty of labs.
MAX_SLOT = 255
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
# The only destinations lab tooling may address from the root namespace.
SAFE_NETWORKS = (IPv4Network("198.18.0.0/15"), IPv4Network("127.0.0.1/32"))

_NAME = re.compile(r"^[a-z][a-z0-9]{0,5}$")
_NODE = re.compile(r"^(gw|vm)([1-9][0-9]{0,2})$")

NodeRole = Literal["hub", "gateway", "host"]


@dataclass(frozen=True)
class Site:
    """One site: a gateway namespace on the underlay and a VPC host namespace behind it."""

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

    @property
    def prefix(self) -> str:
        """The prefix of every shared name this lab creates."""
        return f"{self.name}-"

    @property
    def hub_url(self) -> str:
        """The coordinator as agents see it, on the underlay."""
        return f"https://{self.hub_ip}:{self.api_port}"

    @property
    def relay_url(self) -> str:
        """The relay as the coordinator announces it to agents (with its pin after a `#`)."""
        return f"tls://{self.hub_ip}:{RELAY_PORT}"

    @property
    def relay_state_dir(self) -> Path:
        """Where the lab's relay keeps its TLS key."""
        return self.state_dir / "relay"

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

    def namespaces(self) -> list[str]:
        """Every namespace of the plan, gateways first."""
        return [s.gw_ns for s in self.sites] + [s.vm_ns for s in self.sites]

    def with_sites(self, count: int) -> LabPlan:
        """The same lab grown (or shrunk) to `count` sites."""
        _check_sites(count)
        return replace(self, sites=tuple(_site(self.name, self.slot, i) for i in range(1, count + 1)))


@dataclass(frozen=True)
class Node:
    """A node addressed by `wgmesh lab exec`: the hub (root namespace), a gateway or a VPC host."""

    name: str
    role: NodeRole
    netns: str | None
    site: Site | None


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


def _check_sites(count: int) -> None:
    if not 1 <= count <= MAX_SITES:
        raise ValidationError(f"--sites must be between 1 and {MAX_SITES}, not {count}", code="invalid_sites")


def _site(name: str, slot: int, index: int) -> Site:
    underlay = IPv4Network(f"198.18.{slot}.0/24")
    lan = IPv4Network(f"10.{index}.0.0/24")
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
        gw_lan_ip=lan.network_address + 1,
        vm_ip=lan.network_address + 10,
    )


def plan_lab(name: str, sites: int, slot: int = 0, loopback_port: int | None = None) -> LabPlan:
    """The plan of lab `name` with `sites` sites in underlay slot `slot`."""
    validate_name(name)
    _check_sites(sites)
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
        sites=tuple(_site(name, slot, i) for i in range(1, sites + 1)),
        state_dir=STATE_ROOT / name,
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
    """`hub`, `gwI` or `vmI` as a node of the plan, or ValidationError naming the choices."""
    if node == "hub":
        return Node(name=node, role="hub", netns=None, site=None)
    match = _NODE.fullmatch(node)
    if match is None or not 1 <= int(match.group(2)) <= len(plan.sites):
        raise ValidationError(
            f"unknown node {node!r}: lab {plan.name} has hub, gw1..gw{len(plan.sites)}, vm1..vm{len(plan.sites)}",
            code="unknown_node",
        )
    site = plan.sites[int(match.group(2)) - 1]
    if match.group(1) == "gw":
        return Node(name=node, role="gateway", netns=site.gw_ns, site=site)
    return Node(name=node, role="host", netns=site.vm_ns, site=site)


def is_safe_destination(address: str) -> bool:
    """Whether the root namespace may send to `address` (lab underlay or 127.0.0.1 only)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return False
    return isinstance(addr, IPv4Address) and any(addr in net for net in SAFE_NETWORKS)


def underlay_commands(plan: LabPlan) -> list[IpCommand]:
    """The root-namespace bridge with the hub address."""
    # addrgenmode none: no IPv6 link-local address, so no router solicitations or DAD on lab links.
    return [
        IpCommand(None, ("link", "add", plan.bridge, "type", "bridge")),
        IpCommand(None, ("link", "set", plan.bridge, "addrgenmode", "none")),
        IpCommand(None, ("addr", "add", f"{plan.hub_ip}/{plan.underlay.prefixlen}", "dev", plan.bridge)),
        IpCommand(None, ("link", "set", plan.bridge, "up")),
    ]


def site_commands(plan: LabPlan, site: Site) -> list[IpCommand]:
    """The namespaces, veth pairs, addresses and routes of one site."""
    prefix = plan.underlay.prefixlen
    gw, vm = site.gw_ns, site.vm_ns
    return [
        IpCommand(None, ("netns", "add", gw)),
        IpCommand(None, ("netns", "add", vm)),
        # Both pairs are created with their far end already in place, so no temporary name ever
        # appears in the root namespace.
        IpCommand(None, ("link", "add", site.uplink, "type", "veth", "peer", "name", "eth0", "netns", gw)),
        IpCommand(None, ("link", "set", site.uplink, "addrgenmode", "none")),
        IpCommand(None, ("link", "set", site.uplink, "master", plan.bridge, "up")),
        IpCommand(gw, ("link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", vm)),
        IpCommand(gw, ("link", "set", "lo", "up")),
        IpCommand(gw, ("link", "set", "eth0", "addrgenmode", "none")),
        IpCommand(gw, ("addr", "add", f"{site.underlay_ip}/{prefix}", "dev", "eth0")),
        IpCommand(gw, ("link", "set", "eth0", "up")),
        IpCommand(gw, ("link", "set", "lan", "addrgenmode", "none")),
        IpCommand(gw, ("addr", "add", f"{site.gw_lan_ip}/{site.lan.prefixlen}", "dev", "lan")),
        IpCommand(gw, ("link", "set", "lan", "up")),
        # The gateway gets no default route: only the connected underlay /24, so nothing can leave
        # the lab; the agent adds the mesh routes.
        IpCommand(vm, ("link", "set", "lo", "up")),
        IpCommand(vm, ("link", "set", "eth0", "addrgenmode", "none")),
        IpCommand(vm, ("addr", "add", f"{site.vm_ip}/{site.lan.prefixlen}", "dev", "eth0")),
        IpCommand(vm, ("link", "set", "eth0", "up")),
        IpCommand(vm, ("route", "add", "default", "via", str(site.gw_lan_ip))),
    ]


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


def coordinator_db_url(plan: LabPlan) -> str:
    """The lab coordinator's SQLite database URL."""
    return f"sqlite:///{plan.state_dir / 'coordinator.db'}"


def coordinator_args(plan: LabPlan, *, relay_pin: str | None = None) -> list[str]:
    """The coordinator's arguments (after the program name): SQLite in the state dir, hub address only;
    with the relay's pin, the relay announced to agents with it."""
    # HTTPS with the registry's own identity; tokens name the hub, wherever they are created from.
    args = ["--db", coordinator_db_url(plan), "serve", "--listen", f"{plan.hub_ip}:{plan.api_port}"]
    args += ["--public-url", plan.hub_url]
    args += ["--metrics-listen", f"{plan.hub_ip}:{COORDINATOR_METRICS_PORT}"]
    if relay_pin is not None:
        args += ["--announce-relay", f"{plan.relay_url}#{relay_pin}"]
    return args


def coordinator_init_args(plan: LabPlan) -> list[str]:
    """`init` of the lab's database (the admin token comes from the environment)."""
    return ["--db", coordinator_db_url(plan), "init"]


def relay_key_args(plan: LabPlan) -> list[str]:
    """The command that prints the coordinator's relay-ticket public key (creating it if needed)."""
    return ["--db", coordinator_db_url(plan), "relay-key"]


def relay_args(plan: LabPlan, coordinator_key: str, coordinator_pin: str | None = None) -> list[str]:
    """The relay's arguments (after the program name): the hub address only, trusting the lab's coordinator;
    with its pin, pulling the coordinator's revocations (deleted and replaced nodes' tickets) as in production."""
    args = [
        "--listen",
        f"{plan.hub_ip}:{RELAY_PORT}",
        "--coordinator-key",
        coordinator_key,
        "--state-dir",
        str(plan.relay_state_dir),
        "--metrics-listen",
        f"{plan.hub_ip}:{RELAY_METRICS_PORT}",
    ]
    if coordinator_pin is not None:
        args += ["--coordinator", plan.hub_url, "--coordinator-pin", coordinator_pin]
    return args


def agent_args(plan: LabPlan, site: Site, token: str, backend: str) -> list[str]:
    """A gateway agent's arguments (after the program name)."""
    return [
        "--coordinator",
        plan.hub_url,
        "--token",
        token,
        "--name",
        site.node,
        "--advertise",
        str(site.lan),
        "--interface",
        site.wg_interface,
        "--backend",
        backend,
        "--state-dir",
        str(plan.state_dir / site.node),
        "--metrics-listen",
        f"{site.underlay_ip}:{AGENT_METRICS_PORT}",
    ]
