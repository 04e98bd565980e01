"""Drives `paths.decide` for every peer: gathers WireGuard data and probe results, schedules probes, and
turns the decisions into WireGuard endpoints (a direct candidate, or the peer's shim socket).

The agent calls `tick` twice a second from its scheduler thread and `endpoint_for` from `apply`; probes
and the shim run on the `NetLoop`. Only the endpoint ever changes on a switch: allowed IPs, keys and routes
stay as they are, so a switch never drops the peer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from wgmesh.agent import paths, probe_wire
from wgmesh.agent.netloop import NetLoop
from wgmesh.agent.paths import PathConfig, PathInputs, PeerPath, ProbeResult
from wgmesh.agent.prober import RELAY, Address, BurstResult, Prober
from wgmesh.agent.shim import RelayShim
from wgmesh.agent.wgstate import PeerStats
from wgmesh.models import NetMap, PeerConfig, RelayGrant
from wgmesh.values import Endpoint, PathKind

log = logging.getLogger("wgmesh.agent.paths")

TICK = 0.25
AGENT_PATHS = PathConfig(probe_interval=0.5, recheck_interval=0.0, probe_failures=3, handshake_timeout=5.0)
"""Probing twice a second, re-probing at once after a miss, three misses to fail: a busy peer whose UDP
breaks is on the relay about 2.5 s later (three 0.6 s timeouts plus ticks)."""
IDLE_PROBE_INTERVAL = 5.0
"""A direct peer with no traffic is probed this seldom: there is nothing to lose on it, and big meshes
would otherwise send thousands of probes a second."""
RELAY_PROBE_INTERVAL = 2.0
"""The relay path's RTT changes slowly; one sample every 2 s is plenty."""
STALE_ROAM_EVIDENCE = 3.0
"""A peer's word that it is direct counts for this long; an endpoint is set again at most this often."""
PROBE_TIMEOUT = 0.6
RELAY_PROBE_TIMEOUT = 1.5


@dataclass
class _Observed:
    """What the probe coroutines found since the last tick (written on the loop thread, read on tick)."""

    probes: list[ProbeResult] = field(default_factory=list)
    relay_rtt: float | None = None
    direct_burst: BurstResult | None = None
    relay_burst: BurstResult | None = None
    burst_done: bool = False


@dataclass(frozen=True)
class PeerPathView:
    """One peer's path for status reports."""

    path: PathKind | None
    rtt: float | None
    reason: str | None
    relay: str | None


def probe_address(endpoint: Endpoint) -> Address:
    """The probe address of a WireGuard endpoint: its port + 1."""
    return endpoint.host, endpoint.port + probe_wire.PROBE_PORT_OFFSET


class PathController:
    """Per-peer path state, probes and the relay shim of one agent."""

    def __init__(
        self, listen_port: int, ca_file: Path | None = None, config: PathConfig = AGENT_PATHS
    ) -> None:
        self.config = config
        self.listen_port = listen_port
        self.net = NetLoop()
        self.node_id = 0
        self.shim = RelayShim(
            self.net.loop, 0, listen_port, self._probe_from_relay, self._ticket_refused, ca_file=ca_file
        )
        self.prober = Prober(
            self.net.loop,
            0,
            listen_port + probe_wire.PROBE_PORT_OFFSET,
            self.shim.send_to_peer,
            self._relays_peer,
        )
        self._reassert: set[str] = set()
        self._last_reassert: dict[int, float] = {}
        self.states: dict[int, PeerPath] = {}
        self.best_direct: dict[int, Endpoint] = {}
        self.ticket_refused = threading.Event()
        self._observed: dict[int, _Observed] = {}
        self._in_flight: set[int] = set()
        self._last_burst: dict[int, float] = {}
        self._last_probe: dict[int, float] = {}
        self._last_relay_probe: dict[int, float] = {}
        self._last_tx: dict[int, int] = {}
        self._lock = threading.Lock()
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self, node_id: int) -> None:
        """Start the packet thread, the probe socket and the shim as node `node_id`."""
        self.node_id = node_id
        self.shim.node_id = node_id
        self.prober.node_id = node_id
        self.net.start()
        self.net.call(self.prober.open)
        self._started = True

    def stop(self) -> None:
        """Close sockets and relay connections (WireGuard keeps its endpoints)."""
        if self._started:
            self.shim.stop_threadsafe()
            self.net.call(self.prober.close)
        self.net.stop()

    def use_grant(self, grant: RelayGrant) -> None:
        """Relays and ticket to use from now on."""
        self.ticket_refused.clear()
        self.shim.configure_threadsafe(grant)

    def _ticket_refused(self) -> None:
        self.ticket_refused.set()

    def _relays_peer(self, peer_id: int) -> bool:
        state = self.states.get(peer_id)
        return state is not None and state.path == "relay"

    def take_reasserts(self) -> set[str]:
        """Public keys whose direct endpoint must be set again (see `_stale_roam`); cleared by the call."""
        with self._lock:
            found, self._reassert = self._reassert, set()
        return found

    def _stale_roam(self, peer: PeerConfig, state: PeerPath, endpoint: Endpoint | None, now: float) -> bool:
        """WireGuard sits on the shim although both sides chose direct.

        Around a switch back, each side's last relayed packets can roam the other onto its shim after it
        set the direct endpoint; with both then sending through the shims, roaming alone never undoes it.
        The peer's own choice arrives with every probe, so roaming that follows a peer on the relay is
        left alone (the agent never fights it) and only this leftover is undone.
        """
        if state.path != "direct" or self.shim.peer_of_endpoint(endpoint) != peer.node_id:
            return False
        said = self.prober.peer_relays.get(peer.node_id)
        if said is None or said[0] or now - said[1] > STALE_ROAM_EVIDENCE:
            return False
        return now - self._last_reassert.get(peer.node_id, -1e9) >= STALE_ROAM_EVIDENCE

    def _probe_from_relay(self, sender: int, datagram: bytes) -> None:
        self.prober.handle_from_relay(sender, datagram)

    # -- netmap -------------------------------------------------------------------------------------

    def follow(self, netmap: NetMap, own_public_key: str) -> None:
        """Peer keys for probes, and sockets of departed peers closed."""
        keys: dict[int, bytes] = {
            p.node_id: probe_wire.pair_key(p.psk, own_public_key, p.public_key) for p in netmap.peers
        }
        self.prober.keys = keys
        ids = set(keys)
        self.shim.retain_threadsafe(ids)
        with self._lock:
            self.states = {k: v for k, v in self.states.items() if k in ids}
            self.best_direct = {k: v for k, v in self.best_direct.items() if k in ids}
            self._observed = {k: v for k, v in self._observed.items() if k in ids}
            self._last_burst = {k: v for k, v in self._last_burst.items() if k in ids}
            self._last_tx = {k: v for k, v in self._last_tx.items() if k in ids}
            self._last_probe = {k: v for k, v in self._last_probe.items() if k in ids}
            self._last_relay_probe = {k: v for k, v in self._last_relay_probe.items() if k in ids}

    def endpoint_for(self, peer: PeerConfig) -> Endpoint | None:
        """The endpoint WireGuard should use for `peer` now (None: the planner's default, its first endpoint)."""
        if peer.static:
            return None  # no agent behind it: plain WireGuard, which roams to us by itself
        with self._lock:
            state = self.states.get(peer.node_id)
            best = self.best_direct.get(peer.node_id)
        if state is None:
            # Not decided yet: what `decide` would start with.
            if peer.p2p == "off" or not peer.endpoints:
                return self.shim.endpoint_for(peer.node_id)
            return None
        if state.path == "relay":
            return self.shim.endpoint_for(peer.node_id)
        return best if best in peer.endpoints else None

    # -- the tick -----------------------------------------------------------------------------------

    def tick(
        self, netmap: NetMap, stats: Mapping[str, PeerStats]
    ) -> list[tuple[PeerConfig, PeerPath, PeerPath | None]]:
        """Decide every peer's path now; returns the peers whose path or endpoint changed (with the old state)."""
        now = time.monotonic()
        wall = time.time()
        relay_up = self.shim.active() is not None
        changed: list[tuple[PeerConfig, PeerPath, PeerPath | None]] = []
        for peer in netmap.peers:
            if peer.static:
                continue
            st = stats.get(peer.public_key)
            with self._lock:
                seen = self._observed.pop(peer.node_id, _Observed())
                previous = self.states.get(peer.node_id)
                best_before = self.best_direct.get(peer.node_id)
            sending = False
            if st is not None:
                sending = st.tx_bytes > self._last_tx.get(peer.node_id, st.tx_bytes)
                self._last_tx[peer.node_id] = st.tx_bytes
            inputs = PathInputs(
                now=now,
                policy=peer.p2p,
                has_endpoints=bool(peer.endpoints),
                last_handshake=_monotonic(st.last_handshake, now, wall) if st else None,
                sending=sending,
                probes=tuple(seen.probes),
                relay_up=relay_up,
                relay_rtt=seen.relay_rtt,
            )
            if seen.burst_done:
                inputs = _with_burst(inputs, seen)
            state = paths.decide(previous, inputs, self.config)
            with self._lock:
                self.states[peer.node_id] = state
                best_after = self.best_direct.get(peer.node_id)
            if previous is None or previous.path != state.path or best_before != best_after:
                changed.append((peer, state, previous))
            elif st is not None and self._stale_roam(peer, state, st.endpoint, now):
                self._last_reassert[peer.node_id] = now
                with self._lock:
                    self._reassert.add(peer.public_key)
                changed.append((peer, state, previous))
            self._schedule(peer, state, inputs, now)
        return changed

    def _schedule(self, peer: PeerConfig, state: PeerPath, inputs: PathInputs, now: float) -> None:
        """Start the probes the state asks for (at most one round per peer in flight)."""
        if not self._started or peer.node_id in self._in_flight:
            return
        candidates = [probe_address(e) for e in peer.endpoints]
        if not candidates:
            return
        load_test = (
            state.path == "direct"
            and inputs.sending
            and inputs.last_handshake is not None
            and now - self._last_burst.get(peer.node_id, -1e9) >= self.config.throttle_hold
        )
        due = state.next_probe_at is not None and now >= state.next_probe_at
        idle = state.path == "direct" and not inputs.sending and state.probe_failures == 0
        if due and idle and now - self._last_probe.get(peer.node_id, -1e9) < IDLE_PROBE_INTERVAL:
            due = False
        if not (due or load_test):
            return
        retest = state.path == "relay" and state.code in ("throttled", "lossy")
        self._last_probe[peer.node_id] = now
        via_relay = now - self._last_relay_probe.get(peer.node_id, -1e9) >= RELAY_PROBE_INTERVAL
        if via_relay:
            self._last_relay_probe[peer.node_id] = now
        self._in_flight.add(peer.node_id)
        burst = load_test or (due and retest)
        future = self.net.submit(self._probe_round(peer.node_id, candidates, due, burst, via_relay))
        peer_id = peer.node_id

        def finished(_: object) -> None:
            self._in_flight.discard(peer_id)

        future.add_done_callback(finished)

    async def _probe_round(
        self, peer_id: int, candidates: list[Address], ping: bool, burst: bool, via_relay: bool
    ) -> None:
        prober = self.prober
        relay_up = self.shim.active() is not None
        seen = _Observed()
        best: Address | None = None
        if ping or burst:
            tasks = [prober.ping(peer_id, c, PROBE_TIMEOUT) for c in candidates]
            relay_sample = relay_up and (via_relay or burst)
            if relay_sample:
                tasks.append(prober.ping(peer_id, RELAY, RELAY_PROBE_TIMEOUT))
            rtts = await asyncio.gather(*tasks)
            direct = list(zip(candidates, rtts[: len(candidates)], strict=True))
            answered = [(rtt, c) for c, rtt in direct if rtt is not None]
            if answered:
                _, best = min(answered)
            if relay_sample:
                seen.relay_rtt = rtts[-1]
            result = ProbeResult(ok=bool(answered), rtt=min(answered)[0] if answered else None)
            if burst and best is not None:
                with self._lock:
                    self._last_burst[peer_id] = time.monotonic()
                seen.direct_burst = await prober.burst(peer_id, best)
                if seen.direct_burst is None:
                    # Not even a report: the path broke during the burst (blocked), it did not slow down.
                    # A failed probe gives a quick retry; "throttled" would hold the relay for 10 minutes.
                    result = ProbeResult(ok=False)
                else:
                    if relay_up:
                        seen.relay_burst = await prober.burst(peer_id, RELAY)
                    seen.burst_done = True
                    if _degraded(seen.direct_burst, seen.relay_burst, self.config):
                        result = ProbeResult(ok=False)
            seen.probes.append(result)
        with self._lock:
            merged = self._observed.setdefault(peer_id, _Observed())
            merged.probes.extend(seen.probes)
            if seen.relay_rtt is not None:
                merged.relay_rtt = seen.relay_rtt
            if seen.burst_done:
                merged.direct_burst, merged.relay_burst, merged.burst_done = (
                    seen.direct_burst,
                    seen.relay_burst,
                    True,
                )
            if best is not None:
                # Back from the probe port to the WireGuard endpoint, as a value: rebuilt as text, an
                # IPv6 address lost its brackets and never matched a candidate again.
                self.best_direct[peer_id] = Endpoint(best[0], best[1] - probe_wire.PROBE_PORT_OFFSET)

    # -- status ---------------------------------------------------------------------------------------

    def view(self, peer_id: int, observed_endpoint: Endpoint | None) -> PeerPathView:
        """The peer's path as reports show it; a peer WireGuard roamed onto the shim counts as relayed."""
        with self._lock:
            state = self.states.get(peer_id)
        active = self.shim.active()
        roamed = self.shim.peer_of_endpoint(observed_endpoint) == peer_id
        if state is None:
            path: PathKind | None = "relay" if roamed else ("direct" if observed_endpoint else None)
            return PeerPathView(path, None, None, active.info.id if active and roamed else None)
        if state.path == "direct" and roamed:
            return PeerPathView(
                "relay",
                state.relay_rtt,
                "the peer sends through the relay; WireGuard follows it",
                _id(active),
            )
        relay = _id(active) if state.path == "relay" else None
        return PeerPathView(state.path, state.rtt, state.reason, relay)


def _id(link: object) -> str | None:
    info = getattr(link, "info", None)
    return getattr(info, "id", None)


def _monotonic(when: datetime | None, now: float, wall: float) -> float | None:
    if when is None:
        return None
    return now - max(wall - when.timestamp(), 0.0)


def _degraded(direct: BurstResult, relay: BurstResult | None, config: PathConfig) -> bool:
    """Whether a burst says the direct path is throttled or lossy (compared with the relay when measured)."""
    if relay is not None and direct.goodput < relay.goodput * config.throttle_ratio:
        return True
    return direct.loss >= config.loss_threshold


def _with_burst(inputs: PathInputs, seen: _Observed) -> PathInputs:
    """The burst figures as `decide` compares them."""
    direct, relay = seen.direct_burst, seen.relay_burst
    return replace(
        inputs,
        direct_goodput=direct.goodput if direct else None,
        relay_goodput=relay.goodput if relay else None,
        direct_loss=direct.loss if direct else None,
    )
