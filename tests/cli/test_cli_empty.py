"""Every listing on a freshly initialised coordinator: empty documents, quiet tables, exit 0."""

from __future__ import annotations

import pytest
from cli_harness import Cli


def test_status_json_of_an_empty_mesh(wgmesh: Cli) -> None:
    empty = {"nodes": [], "routes": [], "warnings": [], "ha_groups": []}
    assert wgmesh("status", "--json").json() == empty
    assert wgmesh("routes", "--json").json() == {"routes": [], "ha_groups": []}


@pytest.mark.parametrize(
    ("argv", "document"),
    [(("nodes",), {"nodes": []}), (("tokens",), {"tokens": []}), (("pair",), {"pairs": []})],
)
def test_empty_lists(wgmesh: Cli, argv: tuple[str, ...], document: dict[str, list[object]]) -> None:
    assert wgmesh(*argv, "--json").json() == document


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (("status",), "no nodes enrolled"),
        (("routes",), "no routes advertised"),
        (("nodes",), "no nodes"),
        (("tokens",), "no tokens"),
        (("pair",), "no pair overrides"),
    ],
)
def test_empty_tables_say_so(wgmesh: Cli, argv: tuple[str, ...], text: str) -> None:
    r = wgmesh(*argv)
    assert (r.code, r.err) == (0, "")
    assert text in r.out
