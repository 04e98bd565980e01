"""VPCs whose CIDRs overlap (issue 20) at the API: a prefix published under an alias of its length.

Sites 1 and 2 both serve 10.1.0.0/24. Without an alias the later one is a conflict whose reason says how
to resolve it; an admin's alias (or one from the network's pool) makes it a route of its own, carried
in the other nodes' netmaps at the alias and in its own gateway's netmap with the prefix it translates.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from coordinator_harness import Api, Enrolled, create_token, enroll, netmap, peers_by_name, version
from coordinator_harness import routes_by_key as routes

BACKENDS = ("sqlite", "postgresql")

LAN = "10.1.0.0/24"


def alias(admin: httpx.Client, node: str, prefix: str, to: str | None) -> httpx.Response:
    return admin.post(f"/api/v1/nodes/{node}/routes/alias", json={"prefix": prefix, "alias": to})


def set_pool(admin: httpx.Client, **body: Any) -> httpx.Response:
    return admin.patch("/api/v1/network", json=body)


def own_route(nm: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(r for r in nm["routes"] if r["prefix"] == prefix)


@pytest.fixture(scope="module")
def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    """gw1 (site vpc1) and gw2 (site vpc2) both serve LAN; gw3 (site vpc3) serves 10.3.0.0/24."""
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        return {
            "gw1": enroll(anon, token, "gw1", subnets=[LAN], site="vpc1"),
            "gw2": enroll(anon, token, "gw2", subnets=[LAN], site="vpc2"),
            "gw3": enroll(anon, token, "gw3", subnets=["10.3.0.0/24"], site="vpc3"),
        }


def test_without_an_alias_the_later_prefix_is_a_conflict_that_says_how_to_resolve_it(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    got = routes(admin)
    assert got[LAN, "gw1"]["state"] == "active"
    later = got[LAN, "gw2"]
    assert later["state"] == "conflict"
    assert "wgmesh routes alias 10.1.0.0/24 --node gw2 --as" in later["reason"]
    assert "--alias-pool" in later["reason"]
    assert (later["alias"], later["alias_by"]) == (None, None)
    gw2 = peers_by_name(netmap(coordinator, mesh["gw3"]))["gw2"]
    assert gw2["allowed_ips"] == [gw2["overlay_ip"] + "/32"]  # a conflict carries nothing


def test_an_admin_alias_makes_the_prefix_a_route_of_its_own(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    r = alias(admin, "gw2", LAN, "10.201.0.0/24")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["state"], answer["alias"], answer["alias_by"]) == ("active", "10.201.0.0/24", "admin")
    at_gw3 = peers_by_name(netmap(coordinator, mesh["gw3"]))
    assert "10.201.0.0/24" in at_gw3["gw2"]["allowed_ips"]
    assert LAN in at_gw3["gw1"]["allowed_ips"]
    assert LAN not in at_gw3["gw2"]["allowed_ips"]
    own = own_route(netmap(coordinator, mesh["gw2"]), LAN)
    assert (own["state"], own["alias"]) == ("active", "10.201.0.0/24")
    # gw1 reaches gw2's VPC at its alias too (its own LAN is the same prefix: never through the tunnel).
    assert "10.201.0.0/24" in peers_by_name(netmap(coordinator, mesh["gw1"]))["gw2"]["allowed_ips"]


def test_a_static_peers_export_routes_the_alias(admin: httpx.Client, mesh: dict[str, Enrolled]) -> None:
    """`wgmesh export`: the wg-quick file of a static peer reaches the aliased VPC at its alias."""
    r = admin.post("/api/v1/nodes", json={"name": "laptop", "generate_keys": True})
    assert r.status_code == 201, r.text
    try:
        config = admin.get("/api/v1/nodes/laptop/config").json()
        peers = {p["name"]: p for p in config["peers"]}
        assert "10.201.0.0/24" in peers["gw2"]["allowed_ips"]
        assert LAN not in peers["gw2"]["allowed_ips"] and LAN in peers["gw1"]["allowed_ips"]
    finally:
        assert admin.delete("/api/v1/nodes/laptop").status_code == 200


def test_alias_refusals_say_why_and_change_nothing(admin: httpx.Client, mesh: dict[str, Enrolled]) -> None:
    before = routes(admin)
    for node, body, status, code in (
        ("gw2", {"prefix": LAN, "alias": "10.202.0.0/16"}, 422, "invalid_alias"),  # another length
        ("gw2", {"prefix": LAN, "alias": "fd00::/120"}, 422, "invalid_alias"),  # another family
        ("gw2", {"prefix": "10.9.0.0/24", "alias": "10.202.0.0/24"}, 404, "unknown_route"),
        ("nobody", {"prefix": LAN, "alias": "10.202.0.0/24"}, 404, "unknown_node"),
        ("gw2", {"prefix": LAN, "alias": "not a prefix"}, 422, None),
        ("gw2", {"prefix": LAN}, 422, None),  # the alias must be given (null to clear)
    ):
        r = admin.post(f"/api/v1/nodes/{node}/routes/alias", json=body)
        assert r.status_code == status, (body, r.text)
        if code is not None:
            assert r.json()["error"]["code"] == code, r.text
    assert routes(admin) == before


def test_an_alias_inside_the_overlay_is_rejected_not_routed(
    admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    overlay = admin.get("/api/v1/network").json()["overlay_cidr"]
    inside = overlay.split("/")[0].rsplit(".", 2)[0] + ".7.0/24"
    r = alias(admin, "gw3", "10.3.0.0/24", inside)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "rejected"
    assert "overlay" in r.json()["reason"]
    r = alias(admin, "gw3", "10.3.0.0/24", None)
    assert (r.json()["state"], r.json()["alias"]) == ("active", None)


def test_the_pool_gives_a_conflicting_prefix_an_alias_and_an_ha_partner_shares_it(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    assert alias(admin, "gw2", LAN, None).json()["state"] == "conflict"  # back to the conflict
    r = set_pool(admin, alias_pool="10.200.0.0/16")
    assert r.status_code == 200, r.text
    assert r.json()["alias_pool"] == "10.200.0.0/16"
    got = routes(admin)[LAN, "gw2"]
    assert (got["state"], got["alias"], got["alias_by"]) == ("active", "10.200.0.0/24", "pool")
    # A second gateway of site vpc2 with the same prefix gets the site's alias: an HA group, not a
    # second alias. Its claim to join waits for an admin, as any HA claim does.
    token = create_token(admin, allow_subnets=["10.0.0.0/8"])["token"]
    with coordinator.anonymous() as anon:
        gw2b = enroll(anon, token, "gw2b", subnets=[LAN], site="vpc2")
    assert admin.post("/api/v1/nodes/gw2b/routes/approve", json={"prefix": LAN}).status_code == 200
    got = routes(admin)[LAN, "gw2b"]
    assert (got["state"], got["alias"]) == ("standby", "10.200.0.0/24"), got
    groups = netmap(coordinator, mesh["gw3"])["ha_groups"]
    assert {
        "prefix": "10.200.0.0/24",
        "site": "vpc2",
        "members": [mesh["gw2"].node_id, gw2b.node_id],
    } in groups
    # A third site of the same prefix gets the next block; the aliases given stay when the pool goes.
    with coordinator.anonymous() as anon:
        enroll(anon, token_for(admin), "gw4", subnets=[LAN], site="vpc4")
    assert routes(admin)[LAN, "gw4"]["alias"] == "10.200.1.0/24"
    r = set_pool(admin, clear_alias_pool=True)
    assert r.status_code == 200 and r.json()["alias_pool"] is None, r.text
    assert routes(admin)[LAN, "gw4"]["alias"] == "10.200.1.0/24"


def token_for(admin: httpx.Client) -> str:
    return str(create_token(admin, allow_subnets=["10.0.0.0/8"])["token"])


def test_pool_refusals(admin: httpx.Client, mesh: dict[str, Enrolled]) -> None:
    before = admin.get("/api/v1/network").json()
    overlay = before["overlay_cidr"]
    for body, code in (
        ({"alias_pool": overlay}, "invalid_alias_pool"),
        ({"alias_pool": "127.0.0.0/16"}, "invalid_alias_pool"),
        ({"alias_pool": "10.200.0.0/16", "clear_alias_pool": True}, "invalid_alias_pool"),
    ):
        r = set_pool(admin, **body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == code
    assert admin.get("/api/v1/network").json() == before


def state(coordinator: Api, node: Enrolled, body: dict[str, Any]) -> httpx.Response:
    with coordinator.node(node.credential) as client:
        return client.put("/api/v1/node/subnets", json=body)


def test_the_agent_names_its_own_alias_and_an_admins_stays(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    gw3 = mesh["gw3"]
    own = {"prefix": "10.3.0.0/24", "alias": "10.203.0.0/24"}
    body = {"subnets": ["10.3.0.0/24"], "site": "vpc3", "aliases": [own]}
    r = state(coordinator, gw3, body)
    assert r.status_code == 200, r.text
    (route,) = r.json()["routes"]
    assert (route["state"], route["alias"], route["alias_by"]) == ("active", "10.203.0.0/24", "agent")
    before = version(admin)
    assert state(coordinator, gw3, body).status_code == 200
    assert version(admin) == before  # the same statement again writes nothing
    # An alias outside what the node's rules allow waits for an admin, as a prefix would.
    public = {"subnets": ["10.3.0.0/24"], "site": "vpc3", "aliases": [{**own, "alias": "192.168.3.0/24"}]}
    (route,) = state(coordinator, gw3, public).json()["routes"]
    assert (route["state"], route["alias"]) == ("pending", "192.168.3.0/24")
    assert "its alias: no rule allows 192.168.3.0/24" in route["reason"]
    # Stated without it: the agent's alias goes.
    (route,) = state(coordinator, gw3, {"subnets": ["10.3.0.0/24"], "site": "vpc3"}).json()["routes"]
    assert (route["state"], route["alias"], route["alias_by"]) == ("active", None, None)
    # An admin's alias stays whatever the agent states.
    assert alias(admin, "gw3", "10.3.0.0/24", "10.213.0.0/24").status_code == 200
    (route,) = state(coordinator, gw3, body).json()["routes"]
    assert (route["alias"], route["alias_by"]) == ("10.213.0.0/24", "admin")
    assert alias(admin, "gw3", "10.3.0.0/24", None).status_code == 200


def test_statement_refusals_write_nothing(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    before = (version(admin), routes(admin))
    gw3 = mesh["gw3"]
    for aliases, status in (
        ([{"prefix": "10.9.0.0/24", "alias": "10.209.0.0/24"}], 422),  # not advertised
        ([{"prefix": "10.3.0.0/24", "alias": "10.209.0.0/16"}], 422),  # another length
        (
            [
                {"prefix": "10.3.0.0/24", "alias": "10.209.0.0/24"},
                {"prefix": "10.3.0.0/24", "alias": "10.210.0.0/24"},
            ],
            422,
        ),
        ([{"prefix": "10.3.0.0/24"}], 422),
    ):
        r = state(coordinator, gw3, {"subnets": ["10.3.0.0/24"], "site": "vpc3", "aliases": aliases})
        assert r.status_code == status, (aliases, r.text)
        assert "error" in r.json()
    assert (version(admin), routes(admin)) == before
