"""Per-peer path choice, `direct` or `relay`: a pure state machine driven by probes and WireGuard data.

The agent calls `decide(previous, inputs)` on every tick and on every probe result; it owns the clock,
the probes and the shim, and acts on the returned `PeerPath` (issue 4; docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from wgmesh.values import P2PPolicy, PathKind

ReasonCode = Literal[
    "policy_off",  # p2p off for the pair (network, node or pair level)
    "no_endpoints",  # the peer has no endpoint candidates
    "start",  # auto with endpoints: try direct first
    "handshake_timeout",  # traffic sent, no handshake within the timeout
    "probes_failed",  # consecutive direct probes failed
    "throttled",  # direct goodput far below the relay's
    "lossy",  # direct loss under load over the threshold
    "direct_recovered",  # while relayed, a direct probe answered after the back-off
    "rtt",  # both work; the other path's RTT won by the hysteresis margin
]
FORCED: frozenset[ReasonCode] = frozenset({"policy_off", "no_endpoints"})
FAILURES: frozenset[ReasonCode] = frozenset({"handshake_timeout", "probes_failed", "throttled", "lossy"})
_DEGRADED: frozenset[ReasonCode] = frozenset({"throttled", "lossy"})


@dataclass(frozen=True, slots=True)
class PathConfig:
    """Thresholds; times in seconds, RTTs in seconds, goodput in bit/s."""

    handshake_timeout: float = 5.0
    """Traffic sent without a WireGuard session for this long: direct has failed."""
    session_lifetime: float = 180.0
    """WireGuard's REJECT_AFTER_TIME: a handshake older than this leaves no session, so one must happen."""
    probe_interval: float = 2.0
    """Direct probe cadence while direct (and while relayed for RTT, to gather samples)."""
    recheck_interval: float | None = None
    """While direct, the wait after a failed probe (None: `probe_interval`); short, so that a path that
    broke is confirmed broken in `probe_failures` probe timeouts instead of as many intervals."""
    probe_failures: int = 3
    retry_initial: float = 2.0
    """First direct retry after a fall-back; doubles per failed retry or repeated fall-back."""
    retry_max: float = 30.0
    """Cap of the retry back-off; keeps recovery to direct well inside a minute."""
    stable_after: float = 60.0
    """Direct this long without failing resets the fall-back count (and so the back-off)."""
    rtt_ratio: float = 0.8
    """The other path must have at most 80 % of the current RTT …"""
    rtt_margin: float = 0.002
    """… and be at least 2 ms faster …"""
    rtt_samples: int = 3
    """… in this many consecutive samples."""
    min_dwell: float = 10.0
    """An RTT preference switch never follows the previous switch sooner than this."""
    throttle_ratio: float = 0.5
    """Direct goodput below this share of the relay's (same measurement) counts as throttled UDP."""
    loss_threshold: float = 0.1
    throttle_hold: float = 600.0
    """Stay on the relay this long after throttling or loss before retesting direct."""


DEFAULT_CONFIG = PathConfig()


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One direct probe (a small UDP exchange with the peer's endpoint); `rtt` in seconds when it answered."""

    ok: bool
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class PathInputs:
    """What the agent observed about one peer since the previous call; times on the agent's monotonic clock."""

    now: float
    policy: P2PPolicy = "auto"
    has_endpoints: bool = True
    last_handshake: float | None = None
    sending: bool = False
    """tx bytes to this peer grew since the previous call."""
    probes: tuple[ProbeResult, ...] = ()
    """Direct probe results since the previous call, oldest first."""
    relay_up: bool = True
    """The agent holds a relay connection that answered hello."""
    relay_rtt: float | None = None
    """Latest relay ping/pong RTT, None when no new sample (the previous one is kept)."""
    direct_goodput: float | None = None
    relay_goodput: float | None = None
    """Goodputs from one load measurement or active probe; compared only as a pair."""
    direct_loss: float | None = None
    """Loss share on the direct path measured under load."""


@dataclass(frozen=True, slots=True)
class PeerPath:
    """The decision for one peer and the little state the next decision needs."""

    path: PathKind
    code: ReasonCode
    reason: str
    """Why the peer is on this path (the last switch), for the status report."""
    changed_at: float
    next_probe_at: float | None
    """Send a direct probe once this has passed and report it in the next `probes`; it moves only when
    results arrive, so an answer in flight is never discarded. None: no probing (policy off, no endpoints)."""
    probe_failures: int = 0
    """Consecutive failed direct probes while direct."""
    retry_attempt: int = 0
    """Failed direct retries since the last fall-back; each doubles the wait."""
    fallbacks: int = 0
    """Fall-backs since direct was last stable; each doubles the wait before the next return."""
    streak: int = 0
    """Consecutive RTT samples in which the other path won by the hysteresis margin."""
    waiting_since: float | None = None
    """First time traffic was sent with no WireGuard session; cleared by a handshake."""
    direct_rtt: float | None = None
    relay_rtt: float | None = None

    @property
    def rtt(self) -> float | None:
        """The latest RTT of the path in use."""
        return self.direct_rtt if self.path == "direct" else self.relay_rtt


def decide(previous: PeerPath | None, inputs: PathInputs, config: PathConfig = DEFAULT_CONFIG) -> PeerPath:
    """The path for one peer now, given the previous decision (None the first time) and fresh observations."""
    now = inputs.now
    if inputs.policy == "off":
        return _forced(previous, inputs, "policy_off", "p2p is off for this pair")
    if not inputs.has_endpoints:
        return _forced(previous, inputs, "no_endpoints", "peer has no endpoint candidates")
    if previous is None or previous.code in FORCED:
        return PeerPath(
            path="direct",
            code="start",
            reason="p2p auto and the peer has endpoints: trying direct",
            changed_at=now,
            next_probe_at=now,
            relay_rtt=inputs.relay_rtt,
        )
    if previous.path == "direct":
        return _while_direct(previous, inputs, config)
    return _while_relayed(previous, inputs, config)


def _forced(previous: PeerPath | None, inputs: PathInputs, code: ReasonCode, reason: str) -> PeerPath:
    if previous is not None and previous.code == code:
        relay_rtt = _latest(inputs.relay_rtt, previous.relay_rtt) if inputs.relay_up else None
        return replace(previous, relay_rtt=relay_rtt)
    return PeerPath("relay", code, reason, inputs.now, None, relay_rtt=inputs.relay_rtt)


def _latest(new: float | None, old: float | None) -> float | None:
    return new if new is not None else old


def _other_wins(state: PeerPath, direct: float, relay: float | None, config: PathConfig) -> bool:
    """One RTT sample: does the path not in use beat the one in use by the hysteresis margin?"""
    if relay is None:
        return False
    current, other = (direct, relay) if state.path == "direct" else (relay, direct)
    return other <= current * config.rtt_ratio and current - other >= config.rtt_margin


def _take_probes(state: PeerPath, inputs: PathInputs, config: PathConfig) -> PeerPath:
    """Fold the probe results into counters, the direct RTT and the RTT streak."""
    failures, streak, direct_rtt = state.probe_failures, state.streak, state.direct_rtt
    relay_rtt = _latest(inputs.relay_rtt, state.relay_rtt) if inputs.relay_up else None
    for probe in inputs.probes:
        if not probe.ok:
            failures += 1
            streak = 0
            continue
        failures = 0
        if probe.rtt is not None:
            direct_rtt = probe.rtt
            streak = streak + 1 if _other_wins(state, probe.rtt, relay_rtt, config) else 0
    if relay_rtt is None:
        streak = 0
    return replace(state, probe_failures=failures, streak=streak, direct_rtt=direct_rtt, relay_rtt=relay_rtt)


def _retry_delay(fallbacks: int, attempt: int, config: PathConfig) -> float:
    exponent = min(max(fallbacks - 1, 0) + attempt, 30)
    return min(config.retry_max, config.retry_initial * 2.0**exponent)


def _to_relay(state: PeerPath, now: float, code: ReasonCode, reason: str, config: PathConfig) -> PeerPath:
    if code in FAILURES:
        fallbacks = state.fallbacks + 1
        hold = config.throttle_hold if code in _DEGRADED else _retry_delay(fallbacks, 0, config)
        next_probe = now + hold
    else:
        fallbacks = state.fallbacks
        next_probe = now + config.probe_interval
    return replace(
        state,
        path="relay",
        code=code,
        reason=reason,
        changed_at=now,
        next_probe_at=next_probe,
        probe_failures=0,
        retry_attempt=0,
        fallbacks=fallbacks,
        streak=0,
        waiting_since=None,
    )


def _to_direct(state: PeerPath, now: float, code: ReasonCode, reason: str, config: PathConfig) -> PeerPath:
    return replace(
        state,
        path="direct",
        code=code,
        reason=reason,
        changed_at=now,
        next_probe_at=now + config.probe_interval,
        probe_failures=0,
        retry_attempt=0,
        streak=0,
        waiting_since=None,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _while_direct(previous: PeerPath, inputs: PathInputs, config: PathConfig) -> PeerPath:
    now = inputs.now
    state = _take_probes(previous, inputs, config)

    session = inputs.last_handshake is not None and now - inputs.last_handshake <= config.session_lifetime
    waiting = state.waiting_since
    if session:
        waiting = None
    elif waiting is None and inputs.sending:
        waiting = now
    state = replace(state, waiting_since=waiting)
    if waiting is not None and now - waiting >= config.handshake_timeout:
        reason = f"no handshake within {config.handshake_timeout:g} s of traffic"
        return _to_relay(state, now, "handshake_timeout", reason, config)
    if state.probe_failures >= config.probe_failures:
        reason = f"{state.probe_failures} direct probes failed in a row"
        return _to_relay(state, now, "probes_failed", reason, config)
    if (
        inputs.direct_goodput is not None
        and inputs.relay_goodput is not None
        and inputs.direct_goodput < inputs.relay_goodput * config.throttle_ratio
    ):
        reason = (
            f"UDP throttled: direct {inputs.direct_goodput / 1e6:.1f} Mbit/s "
            f"vs relay {inputs.relay_goodput / 1e6:.1f} Mbit/s"
        )
        return _to_relay(state, now, "throttled", reason, config)
    if inputs.direct_loss is not None and inputs.direct_loss >= config.loss_threshold:
        reason = f"UDP loss {inputs.direct_loss:.0%} under load on the direct path"
        return _to_relay(state, now, "lossy", reason, config)
    if (
        state.streak >= config.rtt_samples
        and now - state.changed_at >= config.min_dwell
        and state.direct_rtt is not None
        and state.relay_rtt is not None
    ):
        reason = f"relay RTT {_ms(state.relay_rtt)} beats direct {_ms(state.direct_rtt)}"
        return _to_relay(state, now, "rtt", reason, config)

    if now - state.changed_at >= config.stable_after:
        state = replace(state, fallbacks=0)
    if inputs.probes:
        wait = config.probe_interval
        if state.probe_failures and config.recheck_interval is not None:
            wait = config.recheck_interval
        state = replace(state, next_probe_at=now + wait)
    return state


def _while_relayed(previous: PeerPath, inputs: PathInputs, config: PathConfig) -> PeerPath:
    now = inputs.now
    state = _take_probes(previous, inputs, config)
    due = previous.next_probe_at is None or now >= previous.next_probe_at
    answered = bool(inputs.probes) and inputs.probes[-1].ok

    if state.code == "rtt" and inputs.relay_up:
        if (
            state.streak >= config.rtt_samples
            and now - state.changed_at >= config.min_dwell
            and state.direct_rtt is not None
            and state.relay_rtt is not None
        ):
            reason = f"direct RTT {_ms(state.direct_rtt)} beats relay {_ms(state.relay_rtt)}"
            return _to_direct(state, now, "rtt", reason, config)
        if inputs.probes:
            state = replace(state, next_probe_at=now + config.probe_interval)
        return state

    if answered and not inputs.relay_up:
        reason = "relay down and a direct probe answered"
        return _to_direct(state, now, "direct_recovered", reason, config)
    # Relayed after a failure: return on an answering probe, but only once the back-off has run out.
    if answered and due:
        rtt = f" in {_ms(inputs.probes[-1].rtt or 0.0)}" if inputs.probes[-1].rtt is not None else ""
        reason = f"direct probe answered{rtt} after {now - state.changed_at:.0f} s on the relay"
        return _to_direct(state, now, "direct_recovered", reason, config)
    if inputs.probes and not answered:
        attempt = state.retry_attempt + 1
        delay = _retry_delay(state.fallbacks, attempt, config)
        # A throttled path keeps its long hold; a failed retry only pushes the next one further out.
        floor = previous.next_probe_at if previous.next_probe_at is not None else now
        state = replace(state, retry_attempt=attempt, next_probe_at=max(floor, now + delay))
    return state
