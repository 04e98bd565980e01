"""The agent's wiring: one gateway's data plane, netmap follower, path controller, scheduler and reports.

`wgmesh/agent/main.py` is its command line (flags, signals), as `coordinator/app.py` and `relay/server.py`
are to their `main.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from wgmesh import keys, malloc, topology
from wgmesh import mtu as mtus
from wgmesh.agent import config as agent_config
from wgmesh.agent import ha, handshakes, health, reporting
from wgmesh.agent.backoff import Backoff
from wgmesh.agent.client import CoordinatorClient
from wgmesh.agent.coordinator_pin import CoordinatorTrust
from wgmesh.agent.dataplane import ApplyResult, DataPlane
from wgmesh.agent.ha import HaChoice, HaConfig, HaInputs
from wgmesh.agent.ha_hook import RoleEvent, RoleHook
from wgmesh.agent.health import PeerHealth
from wgmesh.agent.local_status import SOCKET_NAME, LocalStatusServer
from wgmesh.agent.metrics import AgentMetrics
from wgmesh.agent.path_control import TICK, PathController
from wgmesh.agent.route_guard import WidthBound
from wgmesh.agent.state import Enrollment, StateDir
from wgmesh.agent.sync import NetmapFollower
from wgmesh.agent.system.underlay import eth0_address, protected_addresses, underlay_mtu
from wgmesh.agent.ticker import Ticker
from wgmesh.errors import IdentityError, NotFoundError, UnreachableError, ValidationError, WgmeshError
from wgmesh.join_token import JoinToken
from wgmesh.logs import kv
from wgmesh.models import (
    DirectTcp,
    EnrollRequest,
    HaStatus,
    Heartbeat,
    LocalStatus,
    NetMap,
    PeerConfig,
    PeerStatus,
    RefusedRoute,
    RelayGrant,
    ShadowedRoute,
    StatusReport,
)
from wgmesh.pins import Pin
from wgmesh.relay.identity import RelayIdentity, load_or_create_key
from wgmesh.values import Endpoint, NodeId, PathKind, Prefix

log = logging.getLogger("wgmesh.agent")


class Stopped(BaseException):
    """The agent is to stop: raised from the signal handler to unwind the main thread out of a blocking call.

    A BaseException, like KeyboardInterrupt: the edges that turn any netlink or tc failure into a
    logged one (`except Exception`) must not swallow a stop that lands while they run.
    """


STATUS_INTERVAL = reporting.REPORT_INTERVAL
ASK_AGAIN_AFTER = 600.0
"""Seconds before an agent tries heartbeats again after a coordinator did not know them (upgraded since,
or another one behind a load balancer)."""
RECONCILE_INTERVAL = 30.0
GRANT_CHECK = 5.0
"""How often the agent checks whether it needs relays and a ticket (a refused ticket is replaced this fast)."""
GRANT_REFRESH = 600.0
"""A held grant is renewed this often: new relays reach agents within minutes; tickets last a day."""


class Agent:
    """One gateway's agent: owns the data plane, the netmap follower and the status reports."""

    def __init__(self, cfg: agent_config.AgentConfig) -> None:
        self.cfg = cfg
        self.state = StateDir(cfg.state_dir)
        self.stop = threading.Event()
        self.on_unwind: Callable[[], None] = lambda: None
        """Called first when `run` unwinds (the command line stops repeating its stop signal then)."""
        self.lock = threading.Lock()
        self.shadowed: list[ShadowedRoute] = []
        self.refused: list[RefusedRoute] = []
        self.shown_paths: dict[str, PathKind | None] = {}
        """Each peer's path as the last path tick saw it for reports (a change sends a report)."""
        self.netmap: NetMap | None = None
        self.tcp_listener: DirectTcp | None = None
        """This agent's direct TCP listener as reports announce it; None: it runs none."""
        self.reachable = False
        self.ticker = Ticker()
        self.state.prepare()
        self.keypair = self.state.private_key()
        self.dataplane = DataPlane(
            cfg.interface,
            cfg.backend,
            self.keypair.private_key,
            cfg.listen_port,
            masquerade=cfg.masquerade,
            mss_clamp=cfg.mss_clamp,
            # Without a hook to point the cloud's route table at the member carrying an HA prefix, the
            # VPC's replies find their way back only if the member masquerades (agent/ruleset.py).
            ha_masquerade=cfg.on_primary is None,
            width=WidthBound(cfg.min_prefix_length, cfg.min_prefix_length6, cfg.allow_wide_routes),
        )
        token = JoinToken.parse(cfg.token) if cfg.token else None
        self.token_secret = token.secret if token is not None else None
        first_pin = Pin.parse(cfg.coordinator_pin) if cfg.coordinator_pin else token.pin if token else None
        self.trust = CoordinatorTrust(self.state, first_pin)
        self.client = CoordinatorClient(cfg.coordinator, tls=self.trust.context())
        self.local = LocalStatusServer(cfg.state_dir / SOCKET_NAME, self.local_status)
        self.paths = PathController(cfg.listen_port, ca_file=cfg.relay_ca)
        self.metrics = AgentMetrics(self)
        self.grant: RelayGrant | None = None
        self.grant_fetched = 0.0
        self.sent: reporting.Sent | None = None
        """The last whole report the coordinator accepted (agent/reporting.py); None: send the next whole."""
        self.heartbeats = True
        """Whether the coordinator takes heartbeats (it said it does not: whole reports until
        `heartbeats_again`)."""
        self.heartbeats_again = 0.0
        self.condense_again = 0.0
        """Until then (monotonic) reports list every peer: the coordinator refused one that left nominal
        peers out (it is older than `reporting.condense`)."""
        self.ha_config = HaConfig(preempt_after=cfg.ha_preempt_after)
        self.ha_choices: dict[Prefix, HaChoice] = {}
        """Where each HA group's prefix goes (agent/ha.py), under `lock`."""
        self.ha_moved_at: dict[Prefix, datetime] = {}
        self.ha_started: float | None = None
        self.own_health: PeerHealth | None = None
        self.ha_member_of: set[Prefix] = set()
        """The HA prefixes whose group this gateway was a member of at the last tick."""
        hook = cfg.hook
        self.hook = RoleHook(hook, self.stop) if hook else None
        self.follower = NetmapFollower(
            self.client,
            self.state,
            self.apply,
            on_reachability=self._set_reachable,
            stop=self.stop,
            rotate_key=self.rotate_key,
        )

    def _set_reachable(self, ok: bool) -> None:
        if ok != self.reachable:
            log.info("coordinator reachability changed", extra=kv(reachable=ok))
        self.reachable = ok

    def apply(self, netmap: NetMap | None = None) -> None:
        """Reconcile the interface and routes with `netmap`, or with the current one when None.

        Re-applies (reconcile, a path switch) pass None, so the netmap is read under the lock: one they
        read earlier could be older than what the follower applied meanwhile, and applying it would roll
        the interface back to it.
        """
        if netmap is not None:
            self.trust.announced(netmap)
            self._finish_rotation(netmap)
        with self.lock:
            if netmap is None:
                netmap = self.netmap
                if netmap is None:
                    return
            self.paths.follow(netmap, self.keypair)
            self.paths.watched = ha.watched_peers(netmap)
            holders = {prefix: choice.holder for prefix, choice in self.ha_choices.items()}
            effective = ha.with_holders(netmap, holders)
            result: ApplyResult = self.dataplane.apply(effective, self.paths.endpoint_for)
            self.metrics.applied(result)
            changed = self.netmap is None or netmap.version != self.netmap.version
            newcomers = handshakes.to_start(self.netmap, netmap)
            self.netmap = netmap
            self.shadowed = list(result.shadowed)
            self.refused = list(result.refused)
        self.dataplane.start_handshakes(newcomers)
        if result.operations or changed:
            log.info(
                "netmap applied",
                extra=kv(
                    version=netmap.version,
                    peers=len(netmap.peers),
                    operations=result.operations,
                    shadowed=len(result.shadowed),
                    refused=len(result.refused),
                ),
            )
            self.report_soon()
        if changed:
            # The netmap replaced, and the answer it came in, are garbage now: give their pages back.
            malloc.trim()

    def rotate_key(self) -> NetMap:
        """Carry out the key rotation an admin asked for (`wgmesh nodes rotate`); the follower calls this.

        The order keeps the tunnels' gap to the time a netmap takes to reach the peers. The new key is on
        disk first (an agent stopped at any point finds it), then on the interface, and only then does
        the coordinator hear of it and tell the peers. A peer's first handshake to the new key must meet
        an interface that already holds it: one that fails makes WireGuard wait 5 s before the next. The
        peers start that handshake as soon as they have the key (agent/handshakes.py). A refused rotation puts the
        old key back; the follower asks again after a back-off.
        """
        pending = self.state.pending_key() or self.state.new_pending_key()
        old = self.keypair
        log.info(
            "rotating key",
            extra=kv(old=keys.fingerprint(old.public_key), new=keys.fingerprint(pending.public_key)),
        )
        self.dataplane.set_private_key(pending.private_key)
        self.apply()
        try:
            answer = self.client.rotate_key(pending.public_key)
        except WgmeshError:
            # Kept on disk: an answer lost on the way is asked for again with the same key, and a netmap
            # naming it makes the agent take it (_finish_rotation).
            self.dataplane.set_private_key(old.private_key)
            self.apply()
            raise
        self._take_key(pending, answer.credential)
        return answer.netmap

    def _finish_rotation(self, netmap: NetMap) -> None:
        """Take the pending key when the coordinator already holds it (the agent stopped between the
        coordinator's answer and saving it: the old credential still works, the old key no longer)."""
        if netmap.public_key is None or netmap.public_key == self.keypair.public_key:
            return
        pending = self.state.pending_key()
        if pending is not None and pending.public_key == netmap.public_key:
            self._take_key(pending, None)
        else:
            log.warning(
                "the coordinator holds another key for this node (replaced by another instance?)",
                extra=kv(
                    own=keys.fingerprint(self.keypair.public_key),
                    coordinator=keys.fingerprint(netmap.public_key),
                ),
            )

    def _take_key(self, pending: keys.KeyPair, credential: str | None) -> None:
        # The key first: an agent stopped after it holds the new key and the old credential, which
        # still works; the other way round it would hold a credential for a key it lost.
        self.state.commit_key(pending)
        if credential is not None:
            enrollment = self.state.enrollment()
            if enrollment is not None:
                self.state.save_enrollment(Enrollment(enrollment.node_id, credential, enrollment.coordinator))
            self.client.credential = credential
        old, self.keypair = self.keypair, pending
        self.dataplane.set_private_key(pending.private_key)
        log.info(
            "key rotated",
            extra=kv(old=keys.fingerprint(old.public_key), new=keys.fingerprint(pending.public_key)),
        )

    def reconcile(self) -> None:
        """Re-apply the current netmap, repairing drift (a route removed by hand, a dead wireguard-go)."""
        try:
            self.apply()
        except WgmeshError as exc:
            log.error("reconcile failed", extra=kv(code=exc.code, error=exc.message))

    def refresh_underlay(self) -> int | None:
        """Measure what the underlay carries; the next apply fits the tunnel MTU to it.

        A failed measurement keeps the last limit: reporting "unknown" would raise the tunnel back to
        its ceiling and change every peer's netmap, only to lower both again at the next report.
        """
        try:
            found = underlay_mtu(self.client.url)
        except OSError as exc:
            log.warning("cannot read the underlay link", extra=kv(error=str(exc)))
            return self.dataplane.underlay_limit
        if found is None:
            return self.dataplane.underlay_limit
        # Never below the tunnel's floor: a smaller figure would change nothing the agent sets.
        limit = max(mtus.MIN_MTU, mtus.underlay_limit(*found))
        if limit != self.dataplane.underlay_limit:
            log.info("underlay", extra=kv(link_mtu=found[0], ipv6=found[1], tunnel_limit=limit))
            self.dataplane.underlay_limit = limit
        return limit

    def refresh_protected(self) -> None:
        """Resolve the addresses no netmap route may cover (route_guard.py); a change re-applies the netmap."""
        relays = [relay.url for relay in self.grant.relays] if self.grant else []
        found = protected_addresses(self.cfg.coordinator, relays, self.dataplane.protected)
        if found == self.dataplane.protected:
            return
        log.info(
            "protected underlay addresses",
            extra=kv(
                coordinator=",".join(map(str, found.coordinator)) or "unresolved",
                relays=",".join(map(str, found.relays)) or "none",
                next_hops=",".join(map(str, found.next_hops)) or "none",
            ),
        )
        self.dataplane.protected = found
        self.reconcile()

    def enroll(self) -> Enrollment:
        """The stored enrollment, or a new one made with the token (retrying while unreachable)."""
        found = self.state.enrollment()
        if found is not None:
            return found
        if not self.token_secret:
            raise ValidationError("this node is not enrolled yet: give --token", code="no_token")
        backoff = Backoff()
        endpoint_ip = eth0_address(self.client.url)
        request = EnrollRequest(
            token=self.token_secret,  # only the secret: the pin and URLs are the agent's to use
            name=self.cfg.name,
            public_key=self.keypair.public_key,
            listen_port=self.cfg.listen_port,
            # No subnets: `sync_advertised` states them right after, the one way they reach the coordinator.
            endpoints=[Endpoint(endpoint_ip, self.cfg.listen_port)] if endpoint_ip else [],
            max_mtu=self.dataplane.underlay_limit,
            site=self.cfg.site,
        )
        while not self.stop.is_set():
            try:
                answer = self.client.enroll(request)
            except IdentityError:
                raise  # the token names another coordinator key: enrolling elsewhere would hand it our key
            except UnreachableError as exc:
                delay = backoff.next_delay(exc.retry_after)
                log.warning(
                    "enrollment waits for the coordinator",
                    extra=kv(error=exc.message, retry_in=round(delay, 1)),
                )
                self.stop.wait(delay)
                continue
            enrollment = Enrollment(answer.node_id, answer.credential, self.client.url)
            self.state.save_enrollment(enrollment)
            log.info(
                "enrolled",
                extra=kv(
                    node=self.cfg.name, node_id=answer.node_id, key=keys.fingerprint(self.keypair.public_key)
                ),
            )
            self.follower.accept(answer.netmap)
            return enrollment
        raise Stopped("stopped before enrollment")

    def sync_advertised(self) -> None:
        """State this gateway's advertised subnets: exactly `--advertise`; none given withdraws them all.

        The one way the agent's subnets reach the coordinator, after enrolling and at every start. The
        coordinator cannot tell a route an admin set from one the agent set, so the flags are the whole
        list (docs/architecture.md, "A gateway's subnets"); it writes nothing and wakes no long-poll when
        the list is the one it holds, so restarting with the same flags costs the fleet nothing.
        """
        subnets = list(self.cfg.advertise)
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                verdicts = self.client.advertise(subnets, self.cfg.site, self.cfg.aliases)
            except UnreachableError:
                # Fail-static: the data plane runs from the cache; advertise once the coordinator is back.
                self.stop.wait(backoff.next_delay())
                continue
            except WgmeshError as exc:
                log.error("subnets refused by the coordinator", extra=kv(code=exc.code, error=exc.message))
                return
            log.info(
                "advertised subnets",
                extra=kv(subnets=",".join(map(str, subnets)) or "none", site=self.cfg.site or self.cfg.name),
            )
            for route in verdicts:
                if route.state != "active":
                    log.warning(
                        "route not active",
                        extra=kv(prefix=route.prefix, state=route.state, reason=route.reason),
                    )
            return

    def _peer_reports(self) -> list[tuple[PeerConfig | None, PeerStatus]]:
        """Each observed peer with its path, RTT and the reason of its last switch."""
        with self.lock:
            stats = self.dataplane.observe_stats()
            netmap = self.netmap
        return self.paths.peer_reports(netmap, stats)

    def start_direct_tcp(self) -> None:
        """Listen for peers' direct TCP links (issue 21) with the state directory's key, unless it is off;
        a port that cannot be bound leaves the agent without one (its peers use the relay)."""
        port = self.cfg.direct_tcp_port
        if port is None:
            return
        path = self.state.direct_tcp_key_file
        try:
            identity = RelayIdentity.from_key(load_or_create_key(path), source=str(path))
        except (WgmeshError, OSError) as exc:
            # An optional listener: its peers use the relay, the rest of the agent runs.
            log.warning("direct tcp listener unavailable", extra=kv(key_file=path, error=exc))
            return
        if self.paths.listen(port, identity):
            self.tcp_listener = DirectTcp(port=port, pin=str(identity.pin))

    def status(self) -> StatusReport:
        """The report the coordinator gets every 10 s and after every change."""
        eth0 = eth0_address(self.client.url)
        limit = self.refresh_underlay()
        self.refresh_protected()
        peers = [status for _, status in self._peer_reports()]
        with self.lock:
            shadowed = list(self.shadowed)
            refused = list(self.refused)
            version = self.netmap.version if self.netmap else None
            netmap_known_tcp = self.netmap is not None and self.netmap.tcp_direct
        return StatusReport(
            endpoints=[Endpoint(eth0, self.cfg.listen_port)] if eth0 else [],
            eth0_ip=eth0,
            netmap_version=version,
            peers=peers,
            shadowed=shadowed,
            refused=refused,
            metrics=self.metrics.advertised(eth0),
            mtu=self.dataplane.mtu,
            max_mtu=limit,
            coordinator=self.client.url,
            ha=self.ha_status(),
            # Only to a coordinator that said it takes it: an older one refuses a report with it.
            tcp=self.tcp_listener if netmap_known_tcp else None,
        )

    def ha_status(self) -> list[HaStatus]:
        """Each HA group as this agent handles it, for reports and `wgmesh-agent status`."""
        with self.lock:
            netmap, choices, moved_at = self.netmap, dict(self.ha_choices), dict(self.ha_moved_at)
        if netmap is None:
            return []
        names = _names(netmap)
        out = []
        for group in netmap.ha_groups:
            choice = choices.get(group.prefix)
            if choice is None:
                continue
            out.append(
                HaStatus(
                    prefix=group.prefix,
                    holder=names.get(choice.holder) if choice.holder is not None else None,
                    code=choice.code,
                    reason=choice.reason[:256],
                    changed_at=moved_at.get(group.prefix),
                    moved_from=names.get(choice.moved_from) if choice.moved_from is not None else None,
                )
            )
        return out

    def decide_ha(self, netmap: NetMap) -> bool:
        """Decide every HA group's member from this tick's health; True when a prefix moved (apply then).

        Runs on the path tick, after the probes' health is updated: no coordinator takes part."""
        now = time.monotonic()
        if self.ha_started is None:
            self.ha_started = now
        peer_health = {
            p.node_id: found for p in netmap.peers if (found := self.paths.health(p.node_id)) is not None
        }
        ages: list[float | None] = []
        for peer_id in ha.watched_peers(netmap):
            # Never answered counts from the agent's start: a gateway cut off from the first moment is
            # down 1.5 s on, before it could claim anything (the settle time is longer).
            answered = self.paths.last_answer(peer_id)
            ages.append(now - (answered if answered is not None else self.ha_started))
        self.own_health = health.own_health(self.own_health, ages, now)
        names = _names(netmap)
        moved = False
        events: list[RoleEvent] = []
        with self.lock:
            for group in netmap.ha_groups:
                previous = self.ha_choices.get(group.prefix)
                inputs = HaInputs(
                    now=now,
                    members=tuple(group.members),
                    health={**peer_health, netmap.node_id: self.own_health},
                    self_id=netmap.node_id,
                    started_at=self.ha_started,
                )
                choice = ha.choose(previous, inputs, self.ha_config, names)
                if netmap.node_id in group.members:
                    primary = choice.holder == netmap.node_id
                    role = "primary" if primary else "standby"
                    holder = names.get(choice.holder, "") if choice.holder is not None else ""
                    events.append(_role_event(netmap, group.prefix, group.site, role, holder))
                if choice is previous:
                    continue
                self.ha_choices[group.prefix] = choice
                if choice.changed_at is not None and (
                    previous is None or previous.changed_at != choice.changed_at
                ):
                    self.ha_moved_at[group.prefix] = _now()
                before = previous.holder if previous is not None else None
                if choice.holder != before:
                    moved = True
                    log.info(
                        "ha prefix moved" if previous is not None else "ha prefix placed",
                        extra=kv(
                            prefix=group.prefix,
                            site=group.site,
                            old=names.get(before) if before is not None else "none",
                            new=names.get(choice.holder) if choice.holder is not None else "none",
                            code=choice.code,
                            reason=choice.reason,
                        ),
                    )
                    if previous is not None:
                        self.metrics.ha_moved(group.prefix, choice.code)
            current = {g.prefix for g in netmap.ha_groups}
            for prefix in [p for p in self.ha_choices if p not in current]:
                del self.ha_choices[prefix]
                self.ha_moved_at.pop(prefix, None)
            mine = {g.prefix for g in ha.own_groups(netmap)}
            for prefix in self.ha_member_of - mine:
                # The group is gone (a member withdrew or was deleted): the route table must follow what
                # this gateway still routes, with no other member left to run a hook.
                role = ha.role_after_dissolving(netmap, prefix)
                site = self.cfg.site or netmap.name
                holder = netmap.name if role == "primary" else ""
                events.append(_role_event(netmap, prefix, site, role, holder))
            self.ha_member_of = mine
        if self.hook is not None:
            for event in events:
                self.hook.want(event)
        return moved

    def local_status(self) -> LocalStatus:
        """The peer view served on the local socket, built from the netmap and the interface."""
        stats = {status.public_key: status for _, status in self._peer_reports()}
        with self.lock:
            netmap = self.netmap
            shadowed = list(self.shadowed)
            refused = list(self.refused)
        enrollment = self.state.enrollment()
        peers = []
        for peer in netmap.peers if netmap else []:
            peers.append(
                topology.observed_peer(
                    peer.name,
                    peer.overlay_ip,
                    eth0_ip=peer.eth0_ip,
                    public_ip=peer.public_ip,
                    own=stats.get(peer.public_key),
                )
            )
        return LocalStatus(
            name=netmap.name if netmap else self.cfg.name,
            node_id=enrollment.node_id if enrollment else None,
            overlay_ip=netmap.overlay_ip if netmap else None,
            eth0_ip=eth0_address(self.client.url),
            p2p=netmap.p2p if netmap else "auto",
            subnets=[r.prefix for r in netmap.routes] if netmap else list(self.cfg.advertise),
            interface=self.cfg.interface,
            coordinator=self.client.url,
            coordinator_reachable=self.reachable,
            netmap_version=netmap.version if netmap else None,
            peers=peers,
            shadowed=shadowed,
            refused=refused,
            mtu=self.dataplane.mtu,
            mss_clamp=self.cfg.mss_clamp,
            relays=self.paths.shim.local_relays(),
            site=self.cfg.site or (netmap.name if netmap else self.cfg.name),
            ha=self.ha_status(),
            tcp=self.tcp_listener,
        )

    def path_tick(self) -> None:
        """Decide every peer's path; a switch changes only that peer's WireGuard endpoint."""
        netmap = self.netmap
        if netmap is None:
            return
        try:
            with self.lock:
                stats = self.dataplane.observe_stats()
            self.metrics.stats_seen(stats)  # scrapes read this, never the device
            changed = self.paths.tick(netmap, stats)
            ha_moved = self.decide_ha(netmap)
            shown = {
                p.public_key: self.paths.view(p.node_id, stats[p.public_key].endpoint).path
                for p in netmap.peers
                if p.public_key in stats
            }
        except WgmeshError as exc:
            log.warning("path check failed", extra=kv(code=exc.code, error=exc.message))
            return
        if shown != self.shown_paths:
            # What reports show can change without a decision: WireGuard roams onto the shim when the
            # peer relays, and back when it goes direct. Admins (and `wgmesh status`) see it now, not
            # at the next 10 s report (CI run 22 read a roam 5 s old).
            if self.shown_paths:
                self.report_soon()
            self.shown_paths = shown
        if ha_moved and not changed:
            try:
                self.apply()
            except WgmeshError as exc:
                log.error("ha prefix move failed", extra=kv(code=exc.code, error=exc.message))
            self.report_soon()
        if not changed:
            return
        for key in self.paths.take_reasserts():
            log.info("direct endpoint set again after a stale roam", extra=kv(peer=keys.fingerprint(key)))
            self.dataplane.forget_endpoint(key)
        switched = False
        for peer, state, previous in changed:
            # A first decision is news for the report too (it gives the reason), but not a switch to log.
            switched = switched or previous is None or previous.path != state.path
            if previous is not None and previous.path != state.path:
                self.metrics.path_switched(peer.name, state.code)
                log.info(
                    "path changed",
                    extra=kv(
                        peer=peer.name,
                        old=previous.path,
                        new=state.path,
                        code=state.code,
                        reason=state.reason,
                    ),
                )
        try:
            self.apply()
        except WgmeshError as exc:
            log.error("endpoint update failed", extra=kv(code=exc.code, error=exc.message))
        if switched or ha_moved:
            self.report_soon()

    def refresh_grant(self) -> None:
        """Fetch relays and a fresh ticket when none is held, a relay refused it, or it is getting old."""
        stale = time.monotonic() - self.grant_fetched >= GRANT_REFRESH
        if self.grant is not None and not stale and not self.paths.ticket_refused.is_set():
            return
        if self.client.credential is None:
            return
        try:
            grant = self.client.relay_grant()
        except UnreachableError:
            return  # fail-static: the cached ticket lasts a day
        except WgmeshError as exc:
            log.warning("relay ticket refused", extra=kv(code=exc.code, error=exc.message))
            return
        self.grant_fetched = time.monotonic()
        if self.grant is None or grant.relays != self.grant.relays:
            log.info("relays", extra=kv(relays=",".join(r.id for r in grant.relays) or "none"))
        self.grant = grant
        self.state.save_grant(grant)
        self.paths.use_grant(grant)
        self.refresh_protected()

    def report(self) -> None:
        """Send one status report, whole or as a heartbeat (agent/reporting.py); failures only log (the
        next one retries, whole if this one was)."""
        if self.client.credential is None:
            return
        condensed = False
        try:
            clock = time.monotonic()  # before the work of status(): reports go whole every tick when due
            status, now = self.status(), _now()
            with self.lock:
                netmap = self.netmap
            if clock >= self.condense_again:
                node_ids = {p.public_key: p.node_id for p in netmap.peers} if netmap else {}
                status = reporting.condense(status, node_ids, now)
                condensed = status.nominal is not None
            if not self.heartbeats and clock >= self.heartbeats_again:
                self.heartbeats = True  # an upgraded coordinator, or another one behind the address
            beat = self.heartbeats and reporting.next_kind(self.sent, status, now, clock) == "heartbeat"
            if beat and not self._heartbeat(status):
                return
            self.client.report(status)
            self.sent = reporting.Sent(reporting.state(status, now), clock)
            self._set_reachable(True)
        except UnreachableError:
            self._set_reachable(False)
        except ValidationError as exc:
            self.sent = None
            if condensed and "nominal" in exc.message:  # a coordinator older than reporting.condense
                log.info("coordinator takes reports of every peer only", extra=kv(error=exc.message))
                self.condense_again = time.monotonic() + ASK_AGAIN_AFTER
            else:
                log.warning("status report refused", extra=kv(code=exc.code, error=exc.message))
        except WgmeshError as exc:
            self.sent = None
            log.warning("status report refused", extra=kv(code=exc.code, error=exc.message))

    def _heartbeat(self, status: StatusReport) -> bool:
        """Send a heartbeat; True when the report must go whole after all (the coordinator wants it, or it
        predates heartbeats)."""
        try:
            ack = self.client.heartbeat(Heartbeat(netmap_version=status.netmap_version))
        except NotFoundError as exc:
            if exc.code != "not_found":
                raise
            log.info("coordinator takes whole reports only (no heartbeats)")
            self.heartbeats = False
            self.heartbeats_again = time.monotonic() + ASK_AGAIN_AFTER
            return True
        self._set_reachable(True)
        return ack.report_wanted

    def report_soon(self) -> None:
        """Run the status job now instead of at its next tick."""
        self.ticker.soon("status")

    def run(self) -> None:
        """Bring the data plane up from the cache, enroll if needed, then follow until stopped."""
        self.dataplane.up()
        self.refresh_underlay()
        self.refresh_protected()
        self.follower.restore()
        self.local.start()
        self.metrics.start(self.cfg.metrics_address)
        self.ticker.every("status", self.report, STATUS_INTERVAL, at_once=True)
        self.ticker.every("reconcile", self.reconcile, RECONCILE_INTERVAL)
        self.ticker.start()
        try:
            enrollment = self.enroll()
            if enrollment.coordinator not in self.cfg.coordinator:
                log.warning("enrolled with another coordinator URL", extra=kv(stored=enrollment.coordinator))
            self.client.credential = enrollment.credential
            self.paths.start(enrollment.node_id)
            self.start_direct_tcp()
            cached = self.state.cached_grant()
            if cached is not None:
                self.grant = cached
                self.paths.use_grant(cached)
                self.refresh_protected()
            self.ticker.every("relay-grant", self.refresh_grant, GRANT_CHECK, at_once=True)
            self.ticker.every("paths", self.path_tick, TICK)
            if self.hook is not None:
                self.hook.start()
            # Beside the follower, not before it: while the coordinator is away the statement retries with
            # back-off, and the first netmap after its return must not wait for that back-off.
            threading.Thread(target=self.sync_advertised, name="advertise", daemon=True).start()
            self.follower.run()
        finally:
            self.on_unwind()
            self.ticker.stop()
            self.local.stop()
            self.metrics.stop()
            self.paths.stop()
            self.dataplane.close()
            self.client.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _names(netmap: NetMap) -> dict[NodeId, str]:
    """Node names by id: the netmap's peers and the node itself."""
    return {p.node_id: p.name for p in netmap.peers} | {netmap.node_id: netmap.name}


def _role_event(netmap: NetMap, prefix: Prefix, site: str, role: str, holder: str) -> RoleEvent:
    """This gateway's wanted role for an HA prefix, as its `--on-primary` hook gets it."""
    return RoleEvent(
        prefix=prefix,
        role=role,
        site=site,
        node=netmap.name,
        holder=holder,
        mesh_prefixes=tuple(ha.mesh_prefixes(netmap, site)),
    )
