"""The masquerade table: the script we feed to nft, and how we recognise our rule in its JSON."""

from __future__ import annotations

import pytest

from wgmesh.agent.system.firewall import has_masquerade, masquerade_script, table_name
from wgmesh.errors import BackendError


def listing(ifname: str, expr: list[dict[str, object]] | None = None, chains: int = 1) -> dict[str, object]:
    """What `nft -j list table inet wgmesh_IF` prints for our table (captured from nft 1.0.6)."""
    table = table_name(ifname)
    items: list[dict[str, object]] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": table, "handle": 1}},
    ]
    items += [
        {
            "chain": {
                "family": "inet",
                "table": table,
                "name": "postrouting",
                "handle": 1 + i,
                "type": "nat",
                "hook": "postrouting",
                "prio": 100,
                "policy": "accept",
            }
        }
        for i in range(chains)
    ]
    rule = expr or [
        {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": ifname}},
        {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": ifname}},
        {"masquerade": None},
    ]
    items.append(
        {"rule": {"family": "inet", "table": table, "chain": "postrouting", "handle": 2, "expr": rule}}
    )
    return {"nftables": items}


def test_script_replaces_the_table_in_one_transaction() -> None:
    script = masquerade_script("wgl-wg1")
    lines = script.splitlines()
    assert lines[:3] == [
        "add table inet wgmesh_wgl-wg1",
        "delete table inet wgmesh_wgl-wg1",
        "table inet wgmesh_wgl-wg1 {",
    ]
    assert '    iifname "wgl-wg1" oifname != "wgl-wg1" masquerade' in lines


def test_our_rule_is_recognised_and_anything_else_is_repaired() -> None:
    assert has_masquerade(listing("wg0"), "wg0")
    assert not has_masquerade(listing("wg0"), "wg1")
    assert not has_masquerade(listing("wg0", chains=2), "wg0")
    assert not has_masquerade(listing("wg0", expr=[{"counter": {"packets": 0, "bytes": 0}}]), "wg0")
    assert not has_masquerade({"nftables": []}, "wg0")


@pytest.mark.parametrize("name", ['wg"0', "wg 0", "a" * 16, ""])
def test_names_that_would_need_quoting_are_refused(name: str) -> None:
    with pytest.raises(BackendError):
        masquerade_script(name)
