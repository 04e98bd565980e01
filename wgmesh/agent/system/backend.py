"""The small interfaces below the data plane: a WireGuard device, the host's IP config, the firewall.

Each has a Linux implementation (`wireguard_kernel`, `wireguard_uapi`, `routes`, `firewall`) and an
in-memory one (`memory`) for unit tests. `open_wireguard` picks the WireGuard backend.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from wgmesh.agent.plan import DeviceOp, RouteOp
from wgmesh.agent.qos import QosOp
from wgmesh.agent.ruleset import FirewallSpec
from wgmesh.agent.wgstate import ObservedDevice, PrivateKey
from wgmesh.errors import BackendError
from wgmesh.logs import kv
from wgmesh.values import Backend

log = logging.getLogger("wgmesh.agent.system")


class WireGuardBackend(Protocol):
    """One WireGuard device: create or adopt it, read it, change it, remove it."""

    kind: str
    ifname: str

    def ensure_up(self, private_key: PrivateKey, listen_port: int) -> bool:
        """Adopt the device if it runs, else create it with this key and port; True when created."""
        ...

    def observe(self) -> ObservedDevice:
        """Everything the device holds now, with per-peer counters."""
        ...

    def apply(self, ops: Sequence[DeviceOp]) -> None:
        """Apply `ops` in order (in several requests when there are many)."""
        ...

    def cleanup(self) -> None:
        """Remove the device and stop any process behind it."""
        ...


class HostNetwork(Protocol):
    """The host's side of the tunnel: link, address, routes, forwarding."""

    def ensure_interface(self, ifname: str, address: str, prefixlen: int, mtu: int) -> int:
        """Link up with this MTU and exactly this address (per family); returns the changes made."""
        ...

    def installed_routes(self, ifname: str) -> list[str]:
        """Prefixes the agent routed through `ifname` (its own routes only, not the kernel's)."""
        ...

    def apply_routes(self, ifname: str, ops: Sequence[RouteOp]) -> None:
        """Add and remove routes through `ifname`."""
        ...

    def connected(self, exclude: str) -> list[tuple[str, str]]:
        """(prefix, interface) of every subnet connected on this host, except on `exclude`."""
        ...

    def ensure_forwarding(self, ipv6: bool) -> int:
        """Turn IPv4 (and, when asked, IPv6) forwarding on; returns the changes made."""
        ...

    def delete_link(self, ifname: str) -> bool:
        """Remove the tunnel link if it exists; True when it did."""
        ...

    def send_through(self, ifname: str, addresses: Sequence[str]) -> list[str]:
        """One empty UDP datagram to each address, out through `ifname` only; returns the failures."""
        ...


class Firewall(Protocol):
    """The agent's own nftables table (agent/ruleset.py): MSS clamping and masquerade."""

    def ensure(self, spec: FirewallSpec) -> int:
        """Make the table hold `spec` (absent when the spec is empty); returns the changes made."""
        ...

    def remove(self, ifname: str) -> bool:
        """Delete the table if present; True when it was."""
        ...


class Shaper(Protocol):
    """Bandwidth limits on the tunnel's egress (an HTB tree, agent/qos.py)."""

    def observe(self, ifname: str) -> frozenset[int] | None:
        """Class minors under our root qdisc, or None when our root is not there."""
        ...

    def apply(self, ifname: str, ops: Sequence[QosOp]) -> None:
        """Carry out the operations in order."""
        ...

    def remove(self, ifname: str) -> bool:
        """Remove our root qdisc if present; True when it was."""
        ...


def open_wireguard(kind: Backend, ifname: str) -> WireGuardBackend:
    """The backend for `kind`; `auto` adopts a running device, else prefers the kernel module."""
    # Imported here: each backend pulls in its own machinery (pyroute2 generic netlink, sockets).
    from wgmesh.agent.system import wireguard_kernel, wireguard_uapi  # noqa: PLC0415

    if kind == "userspace":
        return wireguard_uapi.UserspaceBackend(ifname)
    if kind == "kernel":
        if not wireguard_kernel.kernel_module_available():
            raise BackendError(
                "the WireGuard kernel module is not available on this host; use --backend userspace",
                code="no_kernel_module",
            )
        return wireguard_kernel.KernelBackend(ifname)
    if kind != "auto":
        raise BackendError(f"unknown backend {kind!r} (auto, kernel or userspace)")
    # A restarted agent keeps whatever already carries the traffic.
    if wireguard_uapi.running_here(ifname):
        chosen: str = "userspace"
    elif wireguard_kernel.is_kernel_device(ifname) or wireguard_kernel.kernel_module_available():
        chosen = "kernel"
    else:
        chosen = "userspace"
    log.info("wireguard backend chosen", extra=kv(interface=ifname, backend=chosen, asked="auto"))
    if chosen == "kernel":
        return wireguard_kernel.KernelBackend(ifname)
    return wireguard_uapi.UserspaceBackend(ifname)
