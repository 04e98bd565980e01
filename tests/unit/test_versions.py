"""wgmesh.versions: agents' versions compared number by number with the oldest supported; what is not a
version (or not reported) is unknown and never older."""

from __future__ import annotations

import pytest

from wgmesh import __version__
from wgmesh.versions import MIN_AGENT_VERSION, from_user_agent, is_older, outdated_warning, version_key


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("0.0.9", "0.1.0"),
        ("0.9.0", "0.10.0"),  # numbers, not text: "0.10.0" < "0.9.0" as strings
        ("0.1.9", "0.2"),
        ("0.2.0rc1", "0.2.0"),  # a pre-release comes before its release
        ("0.2.0.dev3", "0.2.0"),
        ("0.2.0", "0.2.0.post1"),
        ("1.9.99", "2.0.0"),
        ("0.1", "0.1.0.1"),
    ],
)
def test_versions_are_ordered_by_their_numbers(older: str, newer: str) -> None:
    assert is_older(older, newer)
    assert not is_older(newer, older)


@pytest.mark.parametrize(
    ("a", "b"), [("0.2", "0.2.0"), ("0.2.0+deb1", "0.2.0"), ("v0.2.0", "0.2.0"), (" 0.2.0 ", "0.2")]
)
def test_equal_versions_are_not_older(a: str, b: str) -> None:
    assert version_key(a) == version_key(b)
    assert not is_older(a, b) and not is_older(b, a)


@pytest.mark.parametrize(
    "unknown",
    [None, "", "0+unknown", "unknown", "latest", "0.2.0 beta", "1..2", "0.1.0-\x1b[31m", "9" * 10 + ".0"],
)
def test_an_unknown_version_is_never_older(unknown: str | None) -> None:
    assert version_key(unknown) is None
    assert not is_older(unknown, "99.0")


def test_the_minimum_is_a_version_and_this_package_is_not_older() -> None:
    assert version_key(MIN_AGENT_VERSION) is not None
    assert not is_older(MIN_AGENT_VERSION)
    assert not is_older(__version__)  # an agent of this very package is never warned about
    assert is_older("0.0.9") and not is_older("0.1.0") and not is_older("0.2.0")


def test_the_warning_names_the_node_its_version_and_the_minimum() -> None:
    assert outdated_warning("gw-a", "0.0.9", "0.1.0") == (
        "gw-a runs agent 0.0.9, older than 0.1.0, the oldest this coordinator supports: upgrade its agent"
    )


@pytest.mark.parametrize(
    ("header", "version"),
    [
        ("wgmesh-agent/0.2.0", "0.2.0"),
        ("wgmesh-agent/0.1.0", "0.1.0"),  # agents of 0.1.0 name theirs too
        ("wgmesh-agent/0+unknown", "0+unknown"),
        ("wgmesh-agent/0.2.0 (extra)", "0.2.0"),
        ("wgmesh/0.2.0", None),  # the CLI is not an agent
        ("python-httpx/0.28.1", None),
        ("wgmesh-agent/", None),
        ("wgmesh-agent/0.2.0\x1b[31m", None),
        ("wgmesh-agent/" + "1" * 65, None),
        ("", None),
        (None, None),
    ],
)
def test_the_user_agent_names_an_agents_version(header: str | None, version: str | None) -> None:
    assert from_user_agent(header) == version
