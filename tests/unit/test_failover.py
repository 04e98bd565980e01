"""Which coordinator URL a client uses next (wgmesh/failover.py): the rule shared by the agent and the CLI."""

from __future__ import annotations

import pytest

from wgmesh.failover import Choice, FailoverConfig, after_failure, attempts, before_request

URLS = ("https://a", "https://b", "https://c")


def test_a_failure_moves_to_the_next_url_round_the_list() -> None:
    choice = Choice(URLS)
    seen = []
    for now in (1.0, 2.0, 3.0, 4.0):
        choice = after_failure(choice, now)
        seen.append((choice.url, choice.since))
    assert seen == [("https://b", 1.0), ("https://c", 2.0), ("https://a", 3.0), ("https://b", 4.0)]
    assert attempts(choice) == 3


def test_the_client_stays_on_a_working_url_then_tries_the_first_again() -> None:
    config = FailoverConfig(retry_first_after=60.0)
    on_b = after_failure(Choice(URLS), 100.0)
    assert before_request(on_b, 159.9, config) is on_b  # sticks while it works
    back = before_request(on_b, 160.0, config)
    assert (back.url, back.since) == ("https://a", 160.0)
    assert before_request(back, 10_000.0, config) is back  # on the first: nothing to go back to


def test_one_url_never_moves() -> None:
    one = Choice(("https://a",))
    assert after_failure(one, 5.0) is one
    assert before_request(one, 1e9) is one
    assert attempts(one) == 1


def test_a_choice_needs_urls_and_a_valid_index() -> None:
    with pytest.raises(ValueError, match="URL is needed"):
        Choice(())
    with pytest.raises(ValueError, match="not one of 3"):
        Choice(URLS, current=3)
