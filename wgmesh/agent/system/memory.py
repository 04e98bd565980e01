"""In-memory stand-ins for the WireGuard device, the host network and the firewall (unit tests)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from wgmesh.agent import qos
from wgmesh.agent.plan import AddRoute, DeviceOp, RouteOp, apply_ops
from wgmesh.agent.ruleset import FirewallSpec
from wgmesh.agent.wgstate import DeviceSpec, ObservedDevice, PeerStats, PrivateKey
from wgmesh.errors import BackendError
from wgmesh.values import Endpoint

if TYPE_CHECKING:
    from wgmesh.agent.dataplane import DataPlane


class MemoryWireGuard:
    """A WireGuard device held in memory, with WireGuard's semantics (see `plan.apply_ops`)."""

    kind = "memory"

    def __init__(self, ifname: str = "wgm0") -> None:
        self.ifname = ifname
        self.device: DeviceSpec | None = None
        self.stats: dict[str, PeerStats] = {}
        self.applied: list[list[DeviceOp]] = []
        self.created = 0

    def ensure_up(self, private_key: PrivateKey, listen_port: int) -> bool:
        """Create the device unless it exists."""
        if self.device is not None:
            return False
        self.device = DeviceSpec(listen_port, {}, private_key)
        self.created += 1
        return True

    def observe(self) -> ObservedDevice:
        """The device as it is, with whatever counters a test set."""
        if self.device is None:
            raise BackendError(f"{self.ifname} does not exist")
        return ObservedDevice(self.device, {k: self.stats.get(k, PeerStats()) for k in self.device.peers})

    def apply(self, ops: Sequence[DeviceOp]) -> None:
        """Apply the operations, remembering each batch."""
        if self.device is None:
            raise BackendError(f"{self.ifname} does not exist")
        self.applied.append(list(ops))
        self.device = apply_ops(self.device, ops)

    def roam(self, public_key: str, endpoint: Endpoint) -> None:
        """What WireGuard does when a peer's packets arrive from elsewhere."""
        assert self.device is not None
        peers = dict(self.device.peers)
        peers[public_key] = replace(peers[public_key], endpoint=endpoint)
        self.device = replace(self.device, peers=peers)

    def cleanup(self) -> None:
        """Forget the device."""
        self.device = None


@dataclass
class MemoryHost:
    """Links, addresses, routes and forwarding flags in dictionaries."""

    links: dict[str, dict[str, object]] = field(default_factory=dict)
    routes: dict[str, set[str]] = field(default_factory=dict)
    local: list[tuple[str, str]] = field(default_factory=list)
    forwarding: dict[str, bool] = field(default_factory=lambda: {"ipv4": False, "ipv6": False})
    sent: list[tuple[str, str]] = field(default_factory=list)

    def ensure_interface(self, ifname: str, address: str, prefixlen: int, mtu: int) -> int:
        """Record the link's state; count what changed."""
        want: Mapping[str, object] = {"up": True, "mtu": mtu, "address": f"{address}/{prefixlen}"}
        link = self.links.setdefault(ifname, {})
        changes = sum(1 for k, v in want.items() if link.get(k) != v)
        link.update(want)
        return changes

    def send_through(self, ifname: str, addresses: Sequence[str]) -> list[str]:
        """Record (interface, address) for each datagram; none fails."""
        self.sent.extend((ifname, a) for a in addresses)
        return []

    def installed_routes(self, ifname: str) -> list[str]:
        """Routes through `ifname`."""
        return sorted(self.routes.get(ifname, set()))

    def apply_routes(self, ifname: str, ops: Sequence[RouteOp]) -> None:
        """Add or drop routes."""
        table = self.routes.setdefault(ifname, set())
        for op in ops:
            (table.add if isinstance(op, AddRoute) else table.discard)(op.prefix)

    def connected(self, exclude: str) -> list[tuple[str, str]]:
        """The subnets a test declared local, plus the tunnel's own (filtered as on Linux)."""
        found = list(self.local)
        for ifname, link in self.links.items():
            if isinstance(link.get("address"), str):
                net = ipaddress.ip_interface(str(link["address"])).network
                found.append((str(net), ifname))
        return [(p, i) for p, i in found if i != exclude]

    def ensure_forwarding(self, ipv6: bool) -> int:
        """Switch forwarding on."""
        wanted = ["ipv4", "ipv6"] if ipv6 else ["ipv4"]
        changes = sum(1 for fam in wanted if not self.forwarding[fam])
        for fam in wanted:
            self.forwarding[fam] = True
        return changes

    def delete_link(self, ifname: str) -> bool:
        """Drop the link and its routes."""
        self.routes.pop(ifname, None)
        return self.links.pop(ifname, None) is not None


@dataclass
class MemoryFirewall:
    """Per interface, the table spec last written (absent: no table)."""

    tables: dict[str, FirewallSpec] = field(default_factory=dict)

    def ensure(self, spec: FirewallSpec) -> int:
        """Write, replace or drop the interface's table."""
        if spec.empty:
            return int(self.tables.pop(spec.ifname, None) is not None)
        if self.tables.get(spec.ifname) == spec:
            return 0
        self.tables[spec.ifname] = spec
        return 1

    def remove(self, ifname: str) -> bool:
        """Drop the interface's table."""
        return self.tables.pop(ifname, None) is not None


@dataclass
class MemoryShaper:
    """Per interface: the class minors of our HTB tree (absent: no tree), and every operation applied."""

    classes: dict[str, set[int]] = field(default_factory=dict)
    applied: list[qos.QosOp] = field(default_factory=list)

    def observe(self, ifname: str) -> frozenset[int] | None:
        """The minors, or None without a tree."""
        found = self.classes.get(ifname)
        return frozenset(found) if found is not None else None

    def apply(self, ifname: str, ops: Sequence[qos.QosOp]) -> None:
        """Track the class set the operations leave."""
        for op in ops:
            self.applied.append(op)
            match op:
                case qos.ReplaceRoot():
                    self.classes[ifname] = set()
                case qos.RemoveRoot():
                    self.classes.pop(ifname, None)
                case qos.SetClass(minor=minor):
                    if ifname not in self.classes:
                        raise BackendError(f"no HTB root on {ifname}", code="tc")
                    self.classes[ifname].add(minor)
                case qos.DeleteClass(minor=minor):
                    self.classes.get(ifname, set()).discard(minor)
                case qos.SetFilters():
                    pass

    def remove(self, ifname: str) -> bool:
        """Drop the tree."""
        return self.classes.pop(ifname, None) is not None


def memory_dataplane(
    ifname: str, private_key: str, listen_port: int, local: Sequence[tuple[str, str]] = ()
) -> DataPlane:
    """A real DataPlane (planner, state) over the in-memory backends, with `local` as the host's
    connected subnets: an agent that touches nothing of this machine (fixtures, tests)."""
    from wgmesh.agent.dataplane import DataPlane  # noqa: PLC0415 - the data plane builds on this module's peers

    return DataPlane(
        ifname,
        "userspace",
        private_key,
        listen_port,
        wireguard=MemoryWireGuard(ifname),
        host=MemoryHost(local=list(local)),
        firewall=MemoryFirewall(),
        shaper=MemoryShaper(),
    )
