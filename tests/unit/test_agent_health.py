"""A peer's health from its probes: up, down only after misses *and* time, unknown before any answer."""

from __future__ import annotations

from wgmesh.agent.health import HealthConfig, PeerHealth, observe, own_health

CONFIG = HealthConfig(dead_after=2.5, misses=3)


def test_unknown_until_the_first_answer_then_up() -> None:
    h = observe(None, now=0.0, last_answer=None, misses=0, watched_since=0.0, config=CONFIG)
    assert h == PeerHealth("unknown", 0.0)
    h = observe(h, now=0.5, last_answer=0.4, misses=0, watched_since=0.0, config=CONFIG)
    assert h == PeerHealth("up", 0.5)
    assert observe(h, now=9.0, last_answer=8.9, misses=0, watched_since=0.0, config=CONFIG).since == 0.5


def test_down_needs_both_the_misses_and_the_time() -> None:
    up = PeerHealth("up", 0.0)
    # Three quick misses within 2.5 s of the last answer: still up.
    assert observe(up, now=2.0, last_answer=0.0, misses=5, watched_since=0.0, config=CONFIG).state == "up"
    # Long silence but only two probes sent (an idle peer probed seldom): still up.
    assert observe(up, now=9.0, last_answer=0.0, misses=2, watched_since=0.0, config=CONFIG).state == "up"
    down = observe(up, now=2.5, last_answer=0.0, misses=3, watched_since=0.0, config=CONFIG)
    assert down == PeerHealth("down", 2.5)
    assert down.held_for(4.0) == 1.5


def test_a_peer_that_never_answered_is_down_after_the_deadline_from_watching() -> None:
    h = observe(None, now=2.0, last_answer=None, misses=4, watched_since=0.0, config=CONFIG)
    assert h.state == "unknown"
    assert observe(h, now=2.6, last_answer=None, misses=4, watched_since=0.0, config=CONFIG).state == "down"


def test_one_answer_brings_it_back_up_and_restarts_its_clock() -> None:
    down = PeerHealth("down", 3.0)
    back = observe(down, now=10.0, last_answer=9.9, misses=0, watched_since=0.0, config=CONFIG)
    assert back == PeerHealth("up", 10.0)


def test_a_gateway_is_up_while_a_watched_peer_answered_lately_and_down_when_cut_off() -> None:
    assert own_health(None, [], 0.0) == PeerHealth("up", 0.0)  # nobody to ask: nothing says it is cut off
    assert own_health(None, [None, None], 0.0).state == "unknown"  # no answer yet
    up = own_health(None, [0.4, None, 9.0], 1.0)
    assert up == PeerHealth("up", 1.0)
    assert own_health(up, [1.2, 1.4], 2.0) is up
    # Every watched peer silent for 1.5 s: cut off, well before any of them can be down (2.5 s).
    assert own_health(up, [1.6, 2.0, None], 3.0) == PeerHealth("down", 3.0)
