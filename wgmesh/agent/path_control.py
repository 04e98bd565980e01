"""Drives `paths.decide` for every peer: gathers WireGuard data and probe results, schedules probes, and
turns the decisions into WireGuard endpoints (a direct candidate, or the peer's shim socket).

The agent calls `tick` four times a second from its ticker thread and `endpoint_for` from `apply`; probes
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

from wgmesh.agent import carrier, direct_auth, health, paths, probe_wire
from wgmesh.agent.direct_tcp import DirectTcp, Target
from wgmesh.agent.health import PeerHealth
from wgmesh.agent.netloop import NetLoop
from wgmesh.agent.paths import PathConfig, PathInputs, PeerPath, ProbeResult
from wgmesh.agent.prober import RELAY, Address, BurstResult, Prober
from wgmesh.agent.shim import RelayShim
from wgmesh.agent.wgstate import PeerStats
from wgmesh.keys import KeyPair
from wgmesh.models import NetMap, PeerConfig, PeerStatus, RelayGrant
from wgmesh.pins import Pin
from wgmesh.relay.identity import RelayIdentity
from wgmesh.values import Endpoint, Liveness, PathKind

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
WATCH_INTERVAL = 0.5
"""A watched peer (an HA group's member, agent/ha.py) is probed this often on every path, busy or idle:
its health decides where a VPC's traffic goes, within seconds of its death."""
STALE_ROAM_EVIDENCE = 3.0
"""A peer's word that it is direct counts for this long; an endpoint is set again at most this often."""
PROBE_TIMEOUT = 0.6
RELAY_PROBE_TIMEOUT = 1.5
WATCH_RELAY_TIMEOUT = 1.0
"""A watched peer's relay probe waits less: two unanswered liveness probes then fit health's 2.5 s."""


@dataclass
class _Observed:
    """What the probe coroutines found since the last tick (written on the loop thread, read on tick)."""

    probes: list[ProbeResult] = field(default_factory=list)
    relay_rtt: float | None = None
    direct_burst: BurstResult | None = None
    relay_burst: BurstResult | None = None
    burst_done: bool = False


@dataclass
class _Peer:
    """Everything the controller keeps about one peer; dropped whole when the peer leaves the netmap.

    `state`, `best_direct`, `observed` and `last_burst` are shared with the loop thread (under the
    controller's lock); the rest is the tick thread's own.
    """

    state: PeerPath | None = None
    best_direct: Endpoint | None = None  # the fastest answering candidate, as a WireGuard endpoint
    observed: _Observed = field(default_factory=_Observed)
    last_tx: int | None = None
    last_probe: float = -1e9
    last_relay_probe: float = -1e9
    last_burst: float = -1e9
    last_reassert: float = -1e9
    in_flight: bool = False  # a probe round runs (at most one per peer)
    last_watch: float = -1e9
    watch_in_flight: bool = False  # a liveness probe of a watched peer runs (at most one)
    watched_since: float = field(default_factory=time.monotonic)
    last_answer: float | None = None
    """When a probe to the peer was last answered, on any path (shared with the loop thread)."""
    misses: int = 0
    """Probes unanswered since then (shared with the loop thread)."""
    health: PeerHealth | None = None


@dataclass(frozen=True)
class PeerPathView:
    """One peer's path for status reports."""

    path: PathKind | None
    rtt: float | None
    reason: str | None
    relay: str | None
    address: str | None = None
    """Where a `tcp-direct` peer's link goes (its agent's address and port)."""


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
        self.direct_tcp = DirectTcp(self.shim)
        self._targets: dict[int, Target] = {}
        self._secrets: dict[tuple[str, str], bytes] = {}
        self._reassert: set[str] = set()
        self._peers: dict[int, _Peer] = {}
        self.watched: frozenset[int] = frozenset()
        """Peers probed every `WATCH_INTERVAL` whatever their path and traffic (HA group members)."""
        self.ticket_refused = threading.Event()
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

    def listen(self, port: int, identity: RelayIdentity) -> bool:
        """Take peers' datagrams over TCP on `port` (after `start`); False when the port cannot be bound."""
        return self.direct_tcp.listen(port, identity)

    def stop(self) -> None:
        """Close sockets and relay connections (WireGuard keeps its endpoints)."""
        if self._started:
            self.direct_tcp.stop_threadsafe()
            self.shim.stop_threadsafe()
            self.net.call(self.prober.close)
        self.net.stop()

    def use_grant(self, grant: RelayGrant) -> None:
        """Relays and ticket to use from now on."""
        self.ticket_refused.clear()
        self.shim.configure_threadsafe(grant)

    def _ticket_refused(self) -> None:
        self.ticket_refused.set()

    def state(self, peer_id: int) -> PeerPath | None:
        """The peer's last decision, or None before the first one."""
        with self._lock:
            found = self._peers.get(peer_id)
            return found.state if found else None

    def health(self, peer_id: int) -> PeerHealth | None:
        """The peer's health at the last tick, or None before it (and for static peers: never probed)."""
        with self._lock:
            found = self._peers.get(peer_id)
            return found.health if found else None

    def last_answer(self, peer_id: int) -> float | None:
        """When (monotonic) a probe to the peer was last answered, on any path; None: never."""
        with self._lock:
            found = self._peers.get(peer_id)
            return found.last_answer if found else None

    def _relays_peer(self, peer_id: int) -> bool:
        state = self.state(peer_id)
        return state is not None and state.path == "relay"

    def take_reasserts(self) -> set[str]:
        """Public keys whose direct endpoint must be set again (see `_stale_roam`); cleared by the call."""
        with self._lock:
            found, self._reassert = self._reassert, set()
        return found

    def _stale_roam(
        self, peer: PeerConfig, record: _Peer, state: PeerPath, endpoint: Endpoint | None, now: float
    ) -> bool:
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
        return now - record.last_reassert >= STALE_ROAM_EVIDENCE

    def _probe_from_relay(self, sender: int, datagram: bytes) -> None:
        self.prober.handle_from_relay(sender, datagram)

    # -- netmap -------------------------------------------------------------------------------------

    def follow(self, netmap: NetMap, keypair: KeyPair) -> None:
        """Peer keys for probes and direct TCP links, and sockets and links of departed peers closed."""
        keys: dict[int, bytes] = {
            p.node_id: probe_wire.pair_key(p.psk, keypair.public_key, p.public_key) for p in netmap.peers
        }
        self.prober.keys = keys
        ids = set(keys)
        self.shim.retain_threadsafe(ids)
        self.direct_tcp.follow_threadsafe(self._direct_secrets(netmap, keypair))
        with self._lock:
            self._peers = {k: v for k, v in self._peers.items() if k in ids}

    def _direct_secrets(self, netmap: NetMap, keypair: KeyPair) -> dict[int, bytes]:
        """The secret of each peer that may have a direct TCP link with this node (an agent, P2P not off);
        each pair's is computed once per pair of keys."""
        made: dict[tuple[str, str], bytes] = {}
        out: dict[int, bytes] = {}
        for peer in netmap.peers:
            if peer.static or peer.p2p == "off":
                continue
            pair = (keypair.public_key, peer.public_key)
            secret = self._secrets.get(pair)
            if secret is None:
                try:
                    secret = direct_auth.pair_secret(keypair.private_key, peer.public_key)
                except ValueError:  # a key X25519 refuses (all zeros): no direct TCP with that peer
                    continue
            made[pair] = out[peer.node_id] = secret
        self._secrets = made
        return out

    def endpoint_for(self, peer: PeerConfig) -> Endpoint | None:
        """The endpoint WireGuard should use for `peer` now (None: the planner's default, its first endpoint)."""
        if peer.static:
            return None  # no agent behind it: plain WireGuard, which roams to us by itself
        with self._lock:
            record = self._peers.get(peer.node_id)
            state, best = (record.state, record.best_direct) if record else (None, None)
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
        changed: list[tuple[PeerConfig, PeerPath, PeerPath | None]] = []
        targets: dict[int, Target] = {}
        for peer in netmap.peers:
            if peer.static:
                continue
            st = stats.get(peer.public_key)
            with self._lock:
                record = self._peers.setdefault(peer.node_id, _Peer())
                seen, record.observed = record.observed, _Observed()
                previous = record.state
                best_before = record.best_direct
            sending = False
            if st is not None:
                sending = record.last_tx is not None and st.tx_bytes > record.last_tx
                record.last_tx = st.tx_bytes
            inputs = PathInputs(
                now=now,
                policy=peer.p2p,
                has_endpoints=bool(peer.endpoints),
                last_handshake=_monotonic(st.last_handshake, now, wall) if st else None,
                sending=sending,
                probes=tuple(seen.probes),
                relay_up=self.shim.path_up(peer.node_id),
                relay_rtt=seen.relay_rtt,
            )
            if seen.burst_done:
                inputs = _with_burst(inputs, seen)
            state = paths.decide(previous, inputs, self.config)
            with self._lock:
                record.state = state
                best_after = record.best_direct
                record.health = health.observe(
                    record.health,
                    now=now,
                    last_answer=record.last_answer,
                    misses=record.misses,
                    watched_since=record.watched_since,
                )
            if previous is None or previous.path != state.path or best_before != best_after:
                changed.append((peer, state, previous))
            elif st is not None and self._stale_roam(peer, record, state, st.endpoint, now):
                record.last_reassert = now
                with self._lock:
                    self._reassert.add(peer.public_key)
                changed.append((peer, state, previous))
            self._schedule(peer, record, inputs, now)
            if peer.node_id in self.watched:
                self._watch(peer, record, now)
            target = _target(peer, state)
            if target is not None:
                targets[peer.node_id] = target
        if targets != self._targets:
            self._targets = targets
            self.direct_tcp.want_threadsafe(targets)
        return changed

    def _watch(self, peer: PeerConfig, record: _Peer, now: float) -> None:
        """A watched peer's liveness probe: every `WATCH_INTERVAL`, on every path at once, beside (never
        behind) the rounds path choice runs — a load burst in flight must not delay a failover."""
        if not self._started or record.watch_in_flight or now - record.last_watch < WATCH_INTERVAL:
            return
        record.last_watch = now
        record.watch_in_flight = True
        # p2p off: the relay is the only path the pair may use, so only its answers say the peer works.
        targets = [probe_address(e) for e in peer.endpoints] if peer.p2p != "off" else []
        future = self.net.submit(self._liveness(peer.node_id, record, targets))

        def finished(_: object) -> None:
            record.watch_in_flight = False

        future.add_done_callback(finished)

    async def _liveness(self, peer_id: int, record: _Peer, candidates: list[Address]) -> None:
        tasks = [self.prober.ping(peer_id, c, PROBE_TIMEOUT) for c in candidates]
        if self.shim.path_up(peer_id):
            tasks.append(self.prober.ping(peer_id, RELAY, WATCH_RELAY_TIMEOUT))
        if not tasks:
            return
        answers = await asyncio.gather(*tasks)
        with self._lock:
            _heard(record, answers, time.monotonic())

    def _schedule(self, peer: PeerConfig, record: _Peer, inputs: PathInputs, now: float) -> None:
        """Start the probes the peer's state asks for (at most one round per peer in flight)."""
        state = record.state
        if not self._started or state is None or record.in_flight:
            return
        candidates = [probe_address(e) for e in peer.endpoints]
        if not candidates:
            return
        load_test = (
            state.path == "direct"
            and inputs.sending
            and inputs.last_handshake is not None
            and now - record.last_burst >= self.config.throttle_hold
        )
        due = state.next_probe_at is not None and now >= state.next_probe_at
        idle = state.path == "direct" and not inputs.sending and state.probe_failures == 0
        if due and idle and now - record.last_probe < IDLE_PROBE_INTERVAL:
            due = False
        if not (due or load_test):
            return
        retest = state.path == "relay" and state.code in ("throttled", "lossy")
        record.last_probe = now
        via_relay = now - record.last_relay_probe >= RELAY_PROBE_INTERVAL
        if via_relay:
            record.last_relay_probe = now
        record.in_flight = True
        burst = load_test or (due and retest)
        future = self.net.submit(
            self._probe_round(peer.node_id, record, candidates, ping=due, burst=burst, via_relay=via_relay)
        )

        def finished(_: object) -> None:
            record.in_flight = False

        future.add_done_callback(finished)

    async def _probe_round(
        self,
        peer_id: int,
        record: _Peer,
        candidates: list[Address],
        *,
        ping: bool,
        burst: bool,
        via_relay: bool,
    ) -> None:
        """Probe one peer and leave the results in its record; a peer gone meanwhile takes them with it."""
        prober = self.prober
        relay_up = self.shim.path_up(peer_id)
        seen = _Observed()
        best: Address | None = None
        answers: list[float | None] = []
        heard_at = time.monotonic()
        if ping or burst:
            tasks = [prober.ping(peer_id, c, PROBE_TIMEOUT) for c in candidates]
            relay_sample = relay_up and (via_relay or burst)
            if relay_sample:
                tasks.append(prober.ping(peer_id, RELAY, RELAY_PROBE_TIMEOUT))
            rtts = await asyncio.gather(*tasks)
            heard_at = time.monotonic()  # a load burst may follow for seconds: the answers are from now
            answers += rtts
            direct = list(zip(candidates, rtts[: len(candidates)], strict=True))
            answered = [(rtt, c) for c, rtt in direct if rtt is not None]
            if answered:
                _, best = min(answered)
            if relay_sample:
                seen.relay_rtt = rtts[-1]
            result = ProbeResult(ok=bool(answered), rtt=min(answered)[0] if answered else None)
            if burst and best is not None:
                with self._lock:
                    record.last_burst = time.monotonic()
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
            _heard(record, answers, heard_at)
            merged = record.observed
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
                record.best_direct = Endpoint(best[0], best[1] - probe_wire.PROBE_PORT_OFFSET)

    # -- status ---------------------------------------------------------------------------------------

    def peer_reports(
        self, netmap: NetMap | None, stats: Mapping[str, PeerStats]
    ) -> list[tuple[PeerConfig | None, PeerStatus]]:
        """Each peer WireGuard knows, with its netmap entry (None: not in the netmap) and its status:
        counters, endpoint, and the path, relay, RTT and reason of its last decision."""
        by_key = {p.public_key: p for p in netmap.peers} if netmap else {}
        # A coordinator from before direct TCP refuses the path's name in a report: it reads as the relay.
        tcp_known = netmap is not None and netmap.tcp_direct
        out: list[tuple[PeerConfig | None, PeerStatus]] = []
        for key, st in sorted(stats.items()):
            peer = by_key.get(key)
            view = self.view(peer.node_id, st.endpoint) if peer else None
            path = view.path if view else None
            endpoint = str(st.endpoint) if st.endpoint else None
            if path == "tcp-direct":
                endpoint = view.address if view and view.address else endpoint
                path = carrier.reported_path(path, tcp_known)
            out.append(
                (
                    peer,
                    PeerStatus(
                        public_key=key,
                        rx_bytes=st.rx_bytes,
                        tx_bytes=st.tx_bytes,
                        last_handshake=st.last_handshake,
                        endpoint=endpoint,
                        path=path,
                        relay=view.relay if view else None,
                        rtt_ms=round(view.rtt * 1000, 3) if view and view.rtt is not None else None,
                        reason=view.reason[:256] if view and view.reason else None,
                        health=self._health_state(peer),
                    ),
                )
            )
        return out

    def _health_state(self, peer: PeerConfig | None) -> Liveness | None:
        found = self.health(peer.node_id) if peer is not None else None
        return found.state if found is not None else None

    def view(self, peer_id: int, observed_endpoint: Endpoint | None) -> PeerPathView:
        """The peer's path as reports show it; a peer WireGuard roamed onto the shim counts as relayed."""
        state = self.state(peer_id)
        active = self.shim.active()
        roamed = self.shim.peer_of_endpoint(observed_endpoint) == peer_id
        direct = self.direct_tcp.view(peer_id)
        shim_path = carrier.carried(link_up=direct.up, tried=direct.dialing, error=direct.error)
        relay = _id(active) if shim_path.path == "relay" else None
        if state is None:
            if roamed:
                return PeerPathView(shim_path.path, None, None, relay, direct.address)
            return PeerPathView("direct" if observed_endpoint else None, None, None, None)
        if state.path == "direct" and roamed:
            via = "the relay" if shim_path.path == "relay" else "TCP straight to this node"
            reason = f"the peer sends through {via}; WireGuard follows it"
            return PeerPathView(shim_path.path, direct.rtt or state.relay_rtt, reason, relay, direct.address)
        if state.path == "relay":
            reason = state.reason if shim_path.note is None else f"{state.reason}; {shim_path.note}"
            return PeerPathView(shim_path.path, state.rtt, reason, relay, direct.address)
        return PeerPathView(state.path, state.rtt, state.reason, None)


def _target(peer: PeerConfig, state: PeerPath) -> Target | None:
    """The peer's listener to dial now (agent/carrier.py), or None."""
    tcp = peer.tcp
    offer = carrier.Offer(listener=tcp is not None and peer.p2p != "off", endpoints=bool(peer.endpoints))
    if tcp is None or not carrier.wants_tcp(state, offer):
        return None
    hosts = tuple(dict.fromkeys(e.host for e in peer.endpoints))
    return Target(peer.node_id, hosts, tcp.port, Pin.parse(tcp.pin))


def _heard(record: _Peer, answers: list[float | None], at: float) -> None:
    """Probe answers (RTTs, None: unanswered) received by `at` into the peer's health inputs; under the
    controller's lock. A later answer already recorded (by the other kind of probe) is kept."""
    if any(rtt is not None for rtt in answers):
        if record.last_answer is None or at > record.last_answer:
            record.last_answer, record.misses = at, 0
    else:
        record.misses += len(answers)


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
