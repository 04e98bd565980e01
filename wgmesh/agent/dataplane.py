"""The agent's data plane: a netmap in, a configured WireGuard interface, routes and firewall out.

`apply` is a reconcile: it reads the interface, plans the difference and applies only that, so the
same netmap twice costs nothing the second time and a change never recreates the interface. The
interface outlives the agent (`close`); only `cleanup` takes it down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from wgmesh import keys
from wgmesh import mtu as mtus
from wgmesh.agent import plan, qos, route_guard, ruleset
from wgmesh.agent.plan import DeviceOp, EndpointFor
from wgmesh.agent.system.backend import (
    Firewall,
    HostNetwork,
    Shaper,
    WireGuardBackend,
    open_wireguard,
)
from wgmesh.agent.wgstate import PeerStats, PrivateKey
from wgmesh.errors import BackendError
from wgmesh.logs import kv
from wgmesh.models import NetMap, PeerConfig, RefusedRoute, ShadowedRoute
from wgmesh.values import Backend, Endpoint

log = logging.getLogger("wgmesh.agent.dataplane")
T = TypeVar("T")


@dataclass(frozen=True)
class ApplyResult:
    """What one `apply` did: how many changes it made, and the remote routes it left out."""

    operations: int
    shadowed: list[ShadowedRoute] = field(default_factory=list)
    refused: list[RefusedRoute] = field(default_factory=list)
    device_ops: int = 0
    route_ops: int = 0
    seconds: float = 0.0


def describe(op: DeviceOp | plan.RouteOp) -> dict[str, object]:
    """Log fields for one operation: public keys as fingerprints, never a key in full."""
    fields: dict[str, object] = {"op": type(op).__name__}
    match op:
        case plan.AddPeer(peer=peer):
            fields.update(
                peer=keys.fingerprint(peer.public_key), endpoint=peer.endpoint, allowed=len(peer.allowed_ips)
            )
        case plan.ReplaceAllowedIps(public_key=key, allowed_ips=ips):
            fields.update(peer=keys.fingerprint(key), allowed=len(ips))
        case plan.SetEndpoint(public_key=key, endpoint=endpoint):
            fields.update(peer=keys.fingerprint(key), endpoint=endpoint)
        case plan.SetKeepalive(public_key=key, keepalive=keepalive):
            fields.update(peer=keys.fingerprint(key), keepalive=keepalive)
        case plan.RemovePeer(public_key=key) | plan.SetPsk(public_key=key):
            fields.update(peer=keys.fingerprint(key))
        case plan.SetListenPort(port=port):
            fields.update(port=port)
        case plan.SetPrivateKey(private_key=key):
            fields.update(key=keys.fingerprint(key.public_key))
        case plan.AddRoute(prefix=prefix) | plan.RemoveRoute(prefix=prefix):
            fields.update(prefix=prefix)
        case _:
            pass
    return fields


class DataPlane:
    """One WireGuard interface with its address, routes and optional masquerade, kept in line with netmaps."""

    def __init__(
        self,
        ifname: str,
        backend: Backend,
        private_key: str,
        listen_port: int,
        masquerade: bool = False,
        *,
        mss_clamp: bool = True,
        ha_masquerade: bool = False,
        wireguard: WireGuardBackend | None = None,
        host: HostNetwork | None = None,
        firewall: Firewall | None = None,
        shaper: Shaper | None = None,
        width: route_guard.WidthBound = route_guard.DEFAULT_BOUND,
    ) -> None:
        self.ifname = ifname
        self.backend_name: Backend = backend
        self.listen_port = listen_port
        self.masquerade = masquerade
        self.mss_clamp = mss_clamp
        self.ha_masquerade = ha_masquerade
        # The largest tunnel MTU the underlay carries (agent/mtu.py), measured by the agent; None: unknown.
        self.underlay_limit: int | None = None
        self.mtu: int | None = None  # the MTU last set on the interface
        # Addresses no route may cover (route_guard.py), resolved by the agent; the width bound from its flags.
        self.protected = route_guard.Protected()
        self.width = width
        self._firewall_error: str | None = None  # the last firewall failure, logged once
        self._key = PrivateKey(private_key)
        self._wg = wireguard
        self._host = host
        self._firewall = firewall
        self._shaper = shaper
        self._qos_applied: qos.QosSpec | None = None
        self._lock = threading.RLock()
        # The endpoint we last set per peer; compared with instead of the interface's, so the planner
        # does not undo WireGuard's roaming. Empty after a start: the first apply lines up once.
        self._applied_endpoints: dict[str, Endpoint | None] = {}
        self._shadowed: list[ShadowedRoute] = []
        self._refused: list[RefusedRoute] = []
        self._claimed_twice: list[tuple[str, str, str]] = []  # warned about once, not every reconcile

    def start_handshakes(self, peers: Sequence[PeerConfig]) -> None:
        """Make WireGuard handshake with `peers` now (new to the netmap or under a new key: see
        agent/handshakes.py), by sending each one datagram through the tunnel."""
        if not peers:
            return
        failed = self.host.send_through(self.ifname, [p.overlay_ip for p in peers])
        for failure in failed[:3]:
            log.warning("handshake not started", extra=kv(interface=self.ifname, error=failure))
        names = ",".join(p.name for p in peers[:8]) + (f",+{len(peers) - 8}" if len(peers) > 8 else "")
        log.info(
            "handshakes started",
            extra=kv(interface=self.ifname, peers=names, count=len(peers), failed=len(failed)),
        )

    def set_private_key(self, private_key: str) -> None:
        """Use another key from the next apply on (a key rotation): one set on the live interface, which
        keeps its peers, routes and addresses."""
        with self._lock:
            self._key = PrivateKey(private_key)

    # -- parts, made on first use so that constructing a DataPlane touches nothing -----------------

    @property
    def wireguard(self) -> WireGuardBackend:
        """The WireGuard backend (chosen on first use when `auto`)."""
        if self._wg is None:
            self._wg = open_wireguard(self.backend_name, self.ifname)
        return self._wg

    @property
    def host(self) -> HostNetwork:
        """The host network (links, addresses, routes)."""
        if self._host is None:
            from wgmesh.agent.system.iproute import LinuxHost  # noqa: PLC0415

            self._host = LinuxHost()
        return self._host

    @property
    def firewall(self) -> Firewall:
        """The agent's nftables table: MSS clamping and masquerade."""
        if self._firewall is None:
            from wgmesh.agent.system.firewall import NftFirewall  # noqa: PLC0415

            self._firewall = NftFirewall()
        return self._firewall

    @property
    def shaper(self) -> Shaper:
        """tc on the tunnel's egress, for bandwidth limits."""
        if self._shaper is None:
            from wgmesh.agent.system.shaper import TcShaper  # noqa: PLC0415

            self._shaper = TcShaper()
        return self._shaper

    # -- the facade --------------------------------------------------------------------------------

    def up(self) -> None:
        """Create the interface, or adopt the one a previous agent left running (its address comes with `apply`)."""
        with self._lock:
            if self.wireguard.ensure_up(self._key, self.listen_port):
                self._applied_endpoints = {}
            log.info(
                "data plane up",
                extra=kv(
                    interface=self.ifname,
                    backend=self.wireguard.kind,
                    key=keys.fingerprint(self._key.public_key),
                    listen_port=self.listen_port,
                ),
            )

    def apply(self, netmap: NetMap, endpoint_overrides: EndpointFor | None = None) -> ApplyResult:
        """Reconcile the interface, its routes and the firewall with `netmap`; only differences are applied."""
        with self._lock:
            started = time.monotonic()
            if self.wireguard.ensure_up(self._key, self.listen_port):
                # A new device (first start, or wireguard-go restarted after dying) holds nothing yet.
                self._applied_endpoints = {}
            overlay = netmap.overlay_cidr
            tunnel_mtu = mtus.tunnel_mtu(netmap.mtu, self.underlay_limit)
            changes = self.host.ensure_interface(
                self.ifname, netmap.overlay_ip, overlay.prefixlen, tunnel_mtu
            )
            if tunnel_mtu != self.mtu:
                log.info(
                    "tunnel MTU",
                    extra=kv(
                        interface=self.ifname,
                        mtu=tunnel_mtu,
                        ceiling=netmap.mtu,
                        underlay=self.underlay_limit,
                    ),
                )
                self.mtu = tunnel_mtu

            desired = plan.desired_device(
                netmap, endpoint_overrides, listen_port=self.listen_port, private_key=self._key
            )
            refused = route_guard.judge(
                plan.desired_routes(netmap, desired),
                self.protected,
                plan.direct_endpoints(desired),
                self.width,
            )
            desired = plan.without_prefixes(desired, (str(r.prefix) for r in refused))
            twice = plan.claimed_twice(netmap)
            for prefix, kept, dropped in twice if twice != self._claimed_twice else []:
                log.warning(
                    "allowed IP given to two peers", extra=kv(prefix=prefix, kept=kept, dropped=dropped)
                )
            self._claimed_twice = twice
            observed = self.wireguard.observe()
            device_ops = plan.plan_device(desired, observed.spec, self._applied_endpoints)
            for op in device_ops:
                log.debug("device operation", extra=kv(interface=self.ifname, **describe(op)))
            if device_ops:
                self.wireguard.apply(device_ops)
            self._applied_endpoints = plan.applied_endpoints_after(desired)

            wanted = plan.desired_routes(netmap, desired)
            route_ops, shadowed = plan.plan_routes(
                wanted, self.host.installed_routes(self.ifname), self.host.connected(exclude=self.ifname)
            )
            for route_op in route_ops:
                log.debug("route operation", extra=kv(interface=self.ifname, **describe(route_op)))
            self.host.apply_routes(self.ifname, route_ops)
            changes += self.host.ensure_forwarding(ipv6=any(":" in p for p in wanted))
            changes += self._apply_firewall(
                ruleset.desired_firewall(
                    self.ifname,
                    netmap,
                    desired,
                    tunnel_mtu,
                    masquerade=self.masquerade,
                    mss_clamp=self.mss_clamp,
                    ha_masquerade=self.ha_masquerade,
                )
            )
            changes += self._apply_qos(netmap)
            self._report_shadowed(shadowed)
            self._report_refused(refused)

            total = len(device_ops) + len(route_ops) + changes
            result = ApplyResult(
                operations=total,
                shadowed=shadowed,
                refused=refused,
                device_ops=len(device_ops),
                route_ops=len(route_ops),
                seconds=time.monotonic() - started,
            )
            if total:
                log.info(
                    "data plane changed",
                    extra=kv(
                        interface=self.ifname,
                        version=netmap.version,
                        peers=len(desired.peers),
                        device_ops=result.device_ops,
                        route_ops=result.route_ops,
                        other=changes,
                        ms=round(result.seconds * 1000, 1),
                    ),
                )
            return result

    def _apply_firewall(self, spec: ruleset.FirewallSpec) -> int:
        """The nftables table; a failure (no nft, a kernel without the expressions) is logged when it
        changes and retried at the next apply, never blocks peers, routes or limits."""
        try:
            changes = self.firewall.ensure(spec)
        except BackendError as exc:
            if exc.message != self._firewall_error:
                log.error("firewall table not applied", extra=kv(interface=self.ifname, error=exc.message))
            self._firewall_error = exc.message
            return 0
        if self._firewall_error is not None:
            log.info("firewall table applied again", extra=kv(interface=self.ifname))
        self._firewall_error = None
        return changes

    def _apply_qos(self, netmap: NetMap) -> int:
        """Bandwidth limits by diff; a tc failure is logged and retried next time, never blocks peers."""
        desired = qos.desired_qos(netmap)
        try:
            ops = qos.plan_qos(desired, self._qos_applied, self.shaper.observe(self.ifname))
            if ops:
                self.shaper.apply(self.ifname, ops)
                log.info(
                    "bandwidth limits changed",
                    extra=kv(
                        interface=self.ifname,
                        node_rate=netmap.rate or "none",
                        pair_limits=len(desired.peers) if desired else 0,
                        ops=qos.describe(ops),
                    ),
                )
        except BackendError as exc:
            self._qos_applied = None  # rebuilt from scratch on the next apply
            log.error("bandwidth limits not applied", extra=kv(interface=self.ifname, error=exc.message))
            return 0
        self._qos_applied = desired
        return len(ops)

    def _report_shadowed(self, shadowed: list[ShadowedRoute]) -> None:
        if shadowed != self._shadowed:
            for route in shadowed:
                if route not in self._shadowed:
                    log.warning(
                        "remote route shadowed by a local subnet; not installed",
                        extra=kv(
                            prefix=route.prefix,
                            gateway=route.gateway,
                            interface=route.interface,
                            local_prefix=route.local_prefix,
                        ),
                    )
        self._shadowed = list(shadowed)

    def _report_refused(self, refused: list[RefusedRoute]) -> None:
        for route in _added(refused, self._refused):
            log.warning(
                "remote route refused; neither routed nor allowed",
                extra=kv(prefix=route.prefix, gateway=route.gateway, code=route.code, address=route.address),
            )
        for route in _added(self._refused, refused):
            log.info("remote route no longer refused", extra=kv(prefix=route.prefix, gateway=route.gateway))
        self._refused = list(refused)

    def forget_endpoint(self, public_key: str) -> None:
        """Compare this peer's endpoint with the interface on the next apply, so a stale roam is undone."""
        with self._lock:
            self._applied_endpoints.pop(public_key, None)

    def observe_stats(self) -> Mapping[str, PeerStats]:
        """Per-peer counters, last handshake and current endpoint, keyed by public key."""
        with self._lock:
            return self.wireguard.observe().stats

    def close(self) -> None:
        """Stop managing; the interface, its routes and wireguard-go keep running."""
        with self._lock:
            log.info("data plane left running", extra=kv(interface=self.ifname))

    def cleanup(self) -> None:
        """Remove the interface, its routes, the nftables table, and stop wireguard-go for it."""
        with self._lock:
            self.firewall.remove(self.ifname)
            if self._wg is None:
                self._wg = _existing_backend(self.ifname)
            if self._wg is not None:
                self._wg.cleanup()
            # Routes and addresses go with the link; the link goes with wireguard-go or the kernel backend,
            # but a tun left by a daemon we could not signal is removed here.
            self.host.delete_link(self.ifname)
            self._applied_endpoints = {}
            self._shadowed = []
            self._refused = []
            log.info("data plane removed", extra=kv(interface=self.ifname))

    @classmethod
    def cleanup_interface(cls, ifname: str) -> None:
        """`wgmesh-agent cleanup`: remove what an agent made for `ifname`, without its key."""
        from wgmesh.agent.system.firewall import NftFirewall  # noqa: PLC0415
        from wgmesh.agent.system.iproute import LinuxHost  # noqa: PLC0415

        NftFirewall().remove(ifname)
        backend = _existing_backend(ifname)
        if backend is not None:
            backend.cleanup()
        LinuxHost().delete_link(ifname)
        log.info("data plane removed", extra=kv(interface=ifname))


def _added(now: list[T], before: list[T]) -> list[T]:
    """What `now` holds that `before` did not: each change is logged once, not at every reconcile."""
    return [item for item in now if item not in before]


def _existing_backend(ifname: str) -> WireGuardBackend | None:
    """The backend behind an existing `ifname` (a wireguard-go socket, or a kernel link), if any."""
    from wgmesh.agent.system import wireguard_kernel, wireguard_uapi  # noqa: PLC0415

    if wireguard_kernel.is_kernel_device(ifname):
        return wireguard_kernel.KernelBackend(ifname)
    # Also when nobody answers: the userspace backend removes a stale socket left by a killed daemon.
    if wireguard_uapi.socket_path(ifname).exists():
        return wireguard_uapi.UserspaceBackend(ifname)
    return None
