"""wgmesh.agent.paths: the per-peer direct/relay state machine (issue 4)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from wgmesh.agent.paths import (
    DEFAULT_CONFIG,
    FAILURES,
    FORCED,
    PathConfig,
    PathInputs,
    PeerPath,
    ProbeResult,
    decide,
)
from wgmesh.values import P2PPolicy

T = TypeVar("T")
C = DEFAULT_CONFIG
OK = ProbeResult(ok=True, rtt=0.010)
FAIL = ProbeResult(ok=False)


def run(steps: Iterable[PathInputs], state: PeerPath | None = None) -> list[PeerPath]:
    out = []
    for inputs in steps:
        state = decide(state, inputs)
        out.append(state)
    return out


def direct_at(now: float = 0.0) -> PeerPath:
    state = decide(None, PathInputs(now=now, last_handshake=now))
    assert state.path == "direct"
    return state


def relayed_by_probes(now: float = 10.0) -> PeerPath:
    state = direct_at(0.0)
    state = decide(state, PathInputs(now=now, last_handshake=0.0, probes=(FAIL, FAIL, FAIL)))
    assert (state.path, state.code) == ("relay", "probes_failed")
    return state


# --- starting points --------------------------------------------------------------------------------


def test_policy_off_means_relay_without_probing() -> None:
    state = decide(None, PathInputs(now=0.0, policy="off"))
    assert (state.path, state.code, state.next_probe_at) == ("relay", "policy_off", None)
    assert state.reason == "p2p is off for this pair"


def test_peer_without_endpoints_is_relayed() -> None:
    state = decide(None, PathInputs(now=0.0, has_endpoints=False))
    assert (state.path, state.code) == ("relay", "no_endpoints")


def test_auto_with_endpoints_starts_direct_and_probes_at_once() -> None:
    state = decide(None, PathInputs(now=5.0))
    assert (state.path, state.code, state.next_probe_at) == ("direct", "start", 5.0)


def test_policy_flipped_to_auto_goes_direct_at_once_and_back_to_off_relays_at_once() -> None:
    states = run([PathInputs(now=0.0, policy="off"), PathInputs(now=1.0), PathInputs(now=1.5, policy="off")])
    assert [s.path for s in states] == ["relay", "direct", "relay"]


def test_forced_state_is_kept_not_restarted() -> None:
    first = decide(None, PathInputs(now=0.0, policy="off"))
    assert decide(first, PathInputs(now=50.0, policy="off")).changed_at == 0.0


# --- direct failing ---------------------------------------------------------------------------------


def test_no_handshake_within_timeout_of_traffic_moves_to_relay() -> None:
    state = decide(None, PathInputs(now=0.0))
    state = decide(state, PathInputs(now=1.0, sending=True))
    assert state.path == "direct"
    assert state.waiting_since == 1.0
    state = decide(state, PathInputs(now=5.9))
    assert state.path == "direct"
    state = decide(state, PathInputs(now=6.0))
    assert (state.path, state.code) == ("relay", "handshake_timeout")
    assert state.reason == "no handshake within 5 s of traffic"


def test_handshake_in_time_keeps_direct() -> None:
    states = run(
        [
            PathInputs(now=0.0),
            PathInputs(now=1.0, sending=True),
            PathInputs(now=3.0, sending=True, last_handshake=2.5),
            PathInputs(now=20.0, sending=True, last_handshake=2.5),
        ]
    )
    assert states[-1].path == "direct"
    assert states[-1].waiting_since is None


def test_stale_session_with_traffic_must_handshake_again() -> None:
    state = direct_at(0.0)
    state = decide(state, PathInputs(now=200.0, sending=True, last_handshake=0.0))
    assert state.waiting_since == 200.0
    state = decide(state, PathInputs(now=205.0, last_handshake=0.0))
    assert state.code == "handshake_timeout"


def test_idle_peer_without_session_stays_direct() -> None:
    states = run([PathInputs(now=float(t)) for t in range(0, 100, 5)])
    assert {s.path for s in states} == {"direct"}


def test_three_failed_probes_move_to_relay_and_a_success_resets_the_count() -> None:
    state = direct_at()
    state = decide(state, PathInputs(now=2.0, last_handshake=0.0, probes=(FAIL, FAIL)))
    state = decide(state, PathInputs(now=4.0, last_handshake=0.0, probes=(OK,)))
    assert (state.path, state.probe_failures) == ("direct", 0)
    state = decide(state, PathInputs(now=6.0, last_handshake=0.0, probes=(FAIL, FAIL, FAIL)))
    assert (state.path, state.code) == ("relay", "probes_failed")
    assert state.reason == "3 direct probes failed in a row"


def test_direct_probes_are_paced_by_the_interval_when_results_arrive() -> None:
    state = direct_at()
    assert decide(state, PathInputs(now=1.0, last_handshake=0.0)).next_probe_at == 0.0  # still due
    assert decide(state, PathInputs(now=1.0, last_handshake=0.0, probes=(OK,))).next_probe_at == 3.0


# --- throttled UDP ----------------------------------------------------------------------------------


def test_a_failed_probe_is_rechecked_at_once_when_configured() -> None:
    fast = PathConfig(probe_interval=0.5, recheck_interval=0.0)
    state = decide(None, PathInputs(now=0.0, last_handshake=0.0), fast)
    state = decide(state, PathInputs(now=1.0, last_handshake=0.0, probes=(FAIL,)), fast)
    assert (state.path, state.probe_failures, state.next_probe_at) == ("direct", 1, 1.0)
    state = decide(state, PathInputs(now=1.6, last_handshake=0.0, probes=(OK,)), fast)
    assert (state.probe_failures, state.next_probe_at) == (0, 2.1)  # back to the normal cadence
    # Without the setting a miss waits the interval like an answer.
    state = decide(direct_at(0.0), PathInputs(now=1.0, last_handshake=0.0, probes=(FAIL,)))
    assert state.next_probe_at == 1.0 + C.probe_interval


def test_throttled_udp_detected_from_goodput_and_reason_reported() -> None:
    state = decide(
        direct_at(), PathInputs(now=5.0, last_handshake=0.0, direct_goodput=9.8e6, relay_goodput=190e6)
    )
    assert (state.path, state.code) == ("relay", "throttled")
    assert state.reason == "UDP throttled: direct 9.8 Mbit/s vs relay 190.0 Mbit/s"
    assert state.next_probe_at == 5.0 + C.throttle_hold


def test_goodput_close_to_the_relay_is_not_throttling() -> None:
    state = decide(
        direct_at(), PathInputs(now=5.0, last_handshake=0.0, direct_goodput=150e6, relay_goodput=190e6)
    )
    assert state.path == "direct"


def test_loss_under_load_moves_to_relay() -> None:
    state = decide(direct_at(), PathInputs(now=5.0, last_handshake=0.0, direct_loss=0.25))
    assert (state.code, state.reason) == ("lossy", "UDP loss 25% under load on the direct path")


def test_throttled_peer_ignores_answering_probes_until_the_hold_ends() -> None:
    state = decide(
        direct_at(), PathInputs(now=5.0, last_handshake=0.0, direct_goodput=1e6, relay_goodput=100e6)
    )
    state = decide(state, PathInputs(now=60.0, probes=(OK,)))
    assert state.path == "relay"
    state = decide(state, PathInputs(now=5.0 + C.throttle_hold, probes=(OK,)))
    assert (state.path, state.code) == ("direct", "direct_recovered")


# --- while relayed ----------------------------------------------------------------------------------


def test_relayed_peer_returns_when_a_due_probe_answers() -> None:
    state = relayed_by_probes(now=10.0)
    assert state.next_probe_at == 10.0 + C.retry_initial
    early = decide(state, PathInputs(now=11.0, probes=(OK,)))
    assert early.path == "relay"  # before the back-off ran out
    back = decide(state, PathInputs(now=12.0, probes=(ProbeResult(True, 0.0123),)))
    assert (back.path, back.code) == ("direct", "direct_recovered")
    assert back.reason == "direct probe answered in 12.3 ms after 2 s on the relay"


def test_failed_retries_back_off_exponentially_up_to_the_cap() -> None:
    state = relayed_by_probes(now=0.0)
    delays = []
    for _ in range(8):
        now = state.next_probe_at
        assert now is not None
        state = decide(state, PathInputs(now=now, probes=(FAIL,)))
        assert state.next_probe_at is not None
        delays.append(state.next_probe_at - now)
    assert delays == [4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0]


def test_repeated_fallbacks_grow_the_wait_before_the_next_return() -> None:
    state = relayed_by_probes(now=0.0)
    waits = []
    for _ in range(6):
        assert state.next_probe_at is not None
        waits.append(state.next_probe_at - state.changed_at)
        now = state.next_probe_at
        state = decide(state, PathInputs(now=now, probes=(OK,)))
        assert state.path == "direct"
        state = decide(state, PathInputs(now=now + 1, last_handshake=0.0, probes=(FAIL, FAIL, FAIL)))
        assert state.path == "relay"
    assert waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_stable_direct_resets_the_back_off() -> None:
    state = relayed_by_probes(now=0.0)
    state = decide(state, PathInputs(now=2.0, probes=(OK,)))
    state = decide(state, PathInputs(now=2.0 + C.stable_after, last_handshake=C.stable_after))
    assert state.fallbacks == 0


def test_relay_down_and_direct_answering_goes_direct_without_waiting() -> None:
    state = relayed_by_probes(now=10.0)
    state = decide(state, PathInputs(now=10.5, relay_up=False, probes=(OK,)))
    assert (state.path, state.reason) == ("direct", "relay down and a direct probe answered")


# --- RTT preference and hysteresis ------------------------------------------------------------------


def rtt_steps(start: float, direct: float, relay: float, n: int, step: float = 2.0) -> list[PathInputs]:
    return [
        PathInputs(
            now=start + i * step,
            last_handshake=start + i * step,
            relay_rtt=relay,
            probes=(ProbeResult(True, direct),),
        )
        for i in range(n)
    ]


def test_much_faster_relay_wins_after_three_samples_and_the_dwell() -> None:
    states = run(rtt_steps(10.0, direct=0.050, relay=0.020, n=3), direct_at(0.0))
    assert [s.path for s in states] == ["direct", "direct", "relay"]
    assert states[-1].code == "rtt"
    assert states[-1].reason == "relay RTT 20.0 ms beats direct 50.0 ms"


def test_rtt_switch_waits_for_the_dwell_after_the_last_switch() -> None:
    states = run(rtt_steps(1.0, direct=0.050, relay=0.020, n=12, step=1.0), direct_at(0.0))
    switched = [s.changed_at for s in states if s.path == "relay"]
    assert switched[0] == C.min_dwell  # three samples by t=3, but no switch before the dwell


def test_a_few_percent_or_under_two_ms_is_not_enough() -> None:
    assert run(rtt_steps(10.0, direct=0.050, relay=0.045, n=10), direct_at())[-1].path == "direct"
    assert run(rtt_steps(10.0, direct=0.004, relay=0.0025, n=10), direct_at())[-1].path == "direct"


def test_an_interrupted_streak_starts_over() -> None:
    steps = (
        rtt_steps(10.0, 0.050, 0.020, 2) + rtt_steps(14.0, 0.050, 0.049, 1) + rtt_steps(16.0, 0.050, 0.020, 2)
    )
    assert run(steps, direct_at())[-1].path == "direct"


def test_relayed_for_rtt_comes_back_when_direct_wins_by_the_margin() -> None:
    state = run(rtt_steps(10.0, 0.050, 0.020, 3), direct_at())[-1]
    assert state.code == "rtt"
    back = run(rtt_steps(20.0, 0.010, 0.020, 3), state)
    assert [s.path for s in back] == ["relay", "relay", "direct"]
    assert back[-1].reason == "direct RTT 10.0 ms beats relay 20.0 ms"


def test_rtt_reported_for_the_path_in_use() -> None:
    state = run(rtt_steps(10.0, 0.050, 0.020, 1), direct_at())[-1]
    assert state.rtt == 0.050
    assert replace(state, path="relay").rtt == 0.020


# --- properties -------------------------------------------------------------------------------------

probes_st = st.lists(
    st.builds(ProbeResult, ok=st.integers(0, 5).map(bool), rtt=st.floats(0.0005, 0.5)), max_size=3
).map(tuple)


@dataclass(frozen=True)
class Step:
    """One simulated tick: time advance and what the agent observed."""

    dt: float
    policy: P2PPolicy
    has_endpoints: bool
    handshake: bool
    sending: bool
    probes: tuple[ProbeResult, ...]
    relay_up: bool
    relay_rtt: float | None
    throughput: tuple[float, float] | None
    loss: float | None


def rarely(values: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    """A value one draw in twenty, else None."""
    return st.tuples(st.integers(0, 19), values).map(lambda pair: pair[1] if pair[0] == 0 else None)


step_st = st.builds(
    Step,
    dt=st.floats(0.1, 20.0),
    policy=rarely(st.just("off")).map(lambda value: value or "auto"),
    has_endpoints=rarely(st.just(False)).map(lambda value: value is None),
    handshake=st.booleans(),
    sending=st.booleans(),
    probes=probes_st,
    relay_up=st.sampled_from([True] * 4 + [False]),
    relay_rtt=st.one_of(st.none(), st.floats(0.0005, 0.5)),
    # Load measurements are rare in real runs; frequent ones would leave no room for RTT switches.
    throughput=rarely(st.tuples(st.floats(1e5, 1e9), st.floats(1e5, 1e9))),
    loss=rarely(st.floats(0.0, 1.0)),
)


def simulate(steps: list[Step]) -> list[tuple[PathInputs, PeerPath | None, PeerPath]]:
    now = 0.0
    state: PeerPath | None = None
    handshake: float | None = None
    trace = []
    for step in steps:
        now += step.dt
        if step.handshake:
            handshake = now
        inputs = PathInputs(
            now=now,
            policy=step.policy,
            has_endpoints=step.has_endpoints,
            last_handshake=handshake,
            sending=step.sending,
            probes=step.probes,
            relay_up=step.relay_up,
            relay_rtt=step.relay_rtt,
            direct_goodput=step.throughput[0] if step.throughput else None,
            relay_goodput=step.throughput[1] if step.throughput else None,
            direct_loss=step.loss,
        )
        new = decide(state, inputs)
        trace.append((inputs, state, new))
        state = new
    return trace


@settings(max_examples=400)
@given(steps=st.lists(step_st, min_size=1, max_size=60))
def test_switches_respect_policy_endpoints_backoff_and_hysteresis(steps: list[Step]) -> None:
    for inputs, before, after in simulate(steps):
        if inputs.policy == "off" or not inputs.has_endpoints:
            assert after.path == "relay"  # off always relays; a peer without endpoints always relays
            assert after.next_probe_at is None
        if before is None or after.changed_at == before.changed_at:
            continue
        gap = inputs.now - before.changed_at
        if after.code == "rtt":
            assert gap >= C.min_dwell  # a preference switch never follows another quickly
            assert after.path != before.path
        if after.code == "direct_recovered" and inputs.relay_up:
            assert before.next_probe_at is not None and inputs.now >= before.next_probe_at
            assert gap >= C.retry_initial
        if after.code == "start":
            assert before.code in FORCED
        if after.path == "relay" and after.code in FAILURES:
            assert before.path == "direct"


@settings(max_examples=200)
@given(
    noise=st.lists(st.tuples(st.floats(0.85, 1.15), st.floats(0.0, 1.0)), min_size=5, max_size=80),
    base=st.floats(0.005, 0.2),
)
def test_rtt_noise_inside_the_hysteresis_never_switches(
    noise: list[tuple[float, float]], base: float
) -> None:
    state = direct_at()
    for i, (ratio, _) in enumerate(noise):
        now = 10.0 + 2.0 * i
        state = decide(
            state,
            PathInputs(
                now=now, last_handshake=now, relay_rtt=base * ratio, probes=(ProbeResult(True, base),)
            ),
        )
        assert state.path == "direct"


@settings(max_examples=200)
@given(steps=st.lists(step_st, min_size=1, max_size=40))
def test_a_custom_config_is_honoured_for_dwell(steps: list[Step]) -> None:
    config = PathConfig(min_dwell=30.0, rtt_samples=5)
    state: PeerPath | None = None
    now = 0.0
    for step in steps:
        now += step.dt
        inputs = PathInputs(now=now, relay_rtt=step.relay_rtt, probes=step.probes, last_handshake=now)
        new = decide(state, inputs, config)
        if state is not None and new.code == "rtt" and new.changed_at != state.changed_at:
            assert now - state.changed_at >= 30.0
        state = new


def wins(current: float, other: float) -> bool:
    return other <= current * C.rtt_ratio and current - other >= C.rtt_margin


@settings(max_examples=300)
@given(
    samples=st.lists(
        st.tuples(st.floats(0.5, 10.0), st.floats(0.001, 0.1), st.floats(0.001, 0.1)), min_size=1, max_size=80
    )
)
def test_rtt_switches_need_three_winning_samples_in_a_row_and_the_dwell(
    samples: list[tuple[float, float, float]],
) -> None:
    state = direct_at()
    now = 0.0
    history: list[tuple[float, float]] = []
    for dt, direct, relay in samples:
        now += dt
        before = state
        state = decide(
            state,
            PathInputs(now=now, last_handshake=now, relay_rtt=relay, probes=(ProbeResult(True, direct),)),
        )
        history.append((direct, relay))
        if state.path == before.path:
            continue
        assert state.code == "rtt"
        assert now - before.changed_at >= C.min_dwell
        recent = history[-C.rtt_samples :]
        assert len(recent) == C.rtt_samples
        if before.path == "direct":
            assert all(wins(d, r) for d, r in recent)
        else:
            assert all(wins(r, d) for d, r in recent)
        history = []
