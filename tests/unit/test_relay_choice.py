"""The agent's relay home (wgmesh/agent/relay_choice.py): kept while up, moved only for a clearly nearer one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wgmesh.agent.relay_choice import Candidate, RelayChoiceConfig, choose

R1, R2 = "198.18.0.1:8443", "198.18.0.2:8443"


def test_no_home_takes_the_nearest_up_relay_and_the_grant_order_breaks_ties() -> None:
    assert choose(None, [Candidate(R1, True, 0.004), Candidate(R2, True, 0.001)]) == R2
    assert choose(None, [Candidate(R1, True, 0.001), Candidate(R2, True, 0.001)]) == R1
    assert choose(None, [Candidate(R1, True, None), Candidate(R2, True, None)]) == R1
    # a measured relay ranks before one still without a sample
    assert choose(None, [Candidate(R1, True, None), Candidate(R2, True, 0.050)]) == R2
    assert choose(None, [Candidate(R1, False, 0.001), Candidate(R2, True, 0.009)]) == R2
    assert choose(R1, [Candidate(R1, False, None), Candidate(R2, False, None)]) is None
    assert choose(R1, []) is None


def test_the_home_stays_through_jitter_and_moves_for_a_clearly_nearer_relay() -> None:
    # 0.4 ms against 0.3 ms: jitter on a LAN, not a reason to move every relayed peer's traffic
    assert choose(R1, [Candidate(R1, True, 0.0004), Candidate(R2, True, 0.0003)]) == R1
    # 30 ms against 0.3 ms: another region's relay against this one's
    assert choose(R1, [Candidate(R1, True, 0.030), Candidate(R2, True, 0.0003)]) == R2
    # 5 ms better but only 10 % of a 50 ms path: kept
    assert choose(R1, [Candidate(R1, True, 0.050), Candidate(R2, True, 0.045)]) == R1
    # the home without a sample yet (just reconnected) is kept until it has one
    assert choose(R1, [Candidate(R1, True, None), Candidate(R2, True, 0.001)]) == R1


def test_the_home_moves_at_once_when_its_connection_is_down() -> None:
    assert choose(R1, [Candidate(R1, False, None), Candidate(R2, True, 0.030)]) == R2
    # a home that left the grant is no home
    assert choose("gone:8443", [Candidate(R1, True, 0.002), Candidate(R2, True, 0.001)]) == R2


rtts = st.one_of(st.none(), st.floats(min_value=0.0001, max_value=1.0))


@given(st.lists(st.tuples(st.booleans(), rtts), min_size=1, max_size=4), st.integers(0, 4))
def test_the_choice_is_always_an_up_relay_and_stable(
    links: list[tuple[bool, float | None]], home: int
) -> None:
    candidates = [Candidate(f"r{i}", up, rtt) for i, (up, rtt) in enumerate(links)]
    chosen = choose(f"r{home}", candidates)
    up = {c.id for c in candidates if c.up}
    assert (chosen is None) == (not up)
    if chosen is not None:
        assert chosen in up
        # asked again with the answer as home, the same answer: no flapping on unchanged samples
        assert choose(chosen, candidates) == chosen


def test_margins_are_configurable() -> None:
    eager = RelayChoiceConfig(margin_ratio=0.0, margin_s=0.0)
    assert choose(R1, [Candidate(R1, True, 0.0004), Candidate(R2, True, 0.0003)], eager) == R2
