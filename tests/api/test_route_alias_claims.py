"""Issue 20, the refusals of aliases as claims: a changed alias is a new claim (it takes nothing by the
route's age), an admin's approval does not cover an alias the agent names later, the pool hands out
only free blocks or an alias the site routes, and one conflict the pool cannot serve does not stop the
others. Each test uses prefixes of its own on the module's coordinator."""

from __future__ import annotations

from typing import Any

import httpx
from coordinator_harness import Api, Enrolled, create_token, enroll
from coordinator_harness import routes_by_key as routes

BACKENDS = ("sqlite", "postgresql")


def state(
    coordinator: Api, node: Enrolled, subnets: list[str], site: str, **aliases: str
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {
        "subnets": subnets,
        "site": site,
        "aliases": [{"prefix": p, "alias": a} for p, a in zip(subnets, aliases.values(), strict=False)],
    }
    with coordinator.node(node.credential) as client:
        r = client.put("/api/v1/node/subnets", json=body)
    assert r.status_code == 200, r.text
    return list(r.json()["routes"])


def enrolled(coordinator: Api, admin: httpx.Client, *names: str, allow: str = "10.0.0.0/8") -> list[Enrolled]:
    token = create_token(admin, reusable=True, allow_subnets=[allow])["token"]
    with coordinator.anonymous() as anon:
        return [enroll(anon, token, name) for name in names]


def test_an_admins_approval_does_not_cover_an_alias_the_agent_names_later(
    coordinator: Api, admin: httpx.Client
) -> None:
    (gw,) = enrolled(coordinator, admin, "hijack-gw")
    state(coordinator, gw, ["10.61.0.0/24"], "hijack")
    r = admin.post("/api/v1/nodes/hijack-gw/routes/approve", json={"prefix": "10.61.0.0/24"})
    assert r.status_code == 200 and r.json()["decided_by"] == "env", r.text
    (route,) = state(coordinator, gw, ["10.61.0.0/24"], "hijack", a="8.8.8.0/24")
    assert (route["state"], route["alias"], route["decided_by"]) == ("pending", "8.8.8.0/24", None)
    assert "its alias: 8.8.8.0/24 is outside private" in route["reason"]


def test_a_changed_alias_is_a_new_claim_that_takes_nothing_by_age(
    coordinator: Api, admin: httpx.Client
) -> None:
    old, new = enrolled(coordinator, admin, "age-old", "age-new")
    state(coordinator, old, ["10.62.0.0/24"], "age-a")  # the older route
    state(coordinator, new, ["10.62.1.0/24"], "age-b", a="10.162.0.0/24")  # publishes 10.162.0.0/24
    assert routes(admin)["10.62.1.0/24", "age-new"]["state"] == "active"
    # The older gateway moves its alias onto what the other publishes: its claim is the newer one now.
    (route,) = state(coordinator, old, ["10.62.0.0/24"], "age-a", a="10.162.0.0/24")
    assert route["state"] == "conflict"
    assert routes(admin)["10.62.1.0/24", "age-new"]["state"] == "active"
    # Dropping an alias is a new claim too: a later site that holds the prefix keeps it.
    (twin,) = enrolled(coordinator, admin, "age-twin")
    state(coordinator, twin, ["10.62.0.0/24"], "age-c")
    state(coordinator, old, ["10.62.0.0/24"], "age-a", a="10.163.0.0/24")
    assert routes(admin)["10.62.0.0/24", "age-twin"]["state"] == "active"
    (route,) = state(coordinator, old, ["10.62.0.0/24"], "age-a")
    assert route["state"] == "conflict"
    assert routes(admin)["10.62.0.0/24", "age-twin"]["state"] == "active"


def test_the_pool_shares_only_an_alias_the_site_routes_and_serves_every_conflict_it_can(
    coordinator: Api, admin: httpx.Client
) -> None:
    first, second, planted = enrolled(coordinator, admin, "pool-a", "pool-b", "pool-b2")
    # An IPv6 conflict the IPv4 pool cannot serve, made first.
    with coordinator.anonymous() as anon:
        token = create_token(admin, reusable=True, allow_subnets=["fd00::/8"])["token"]
        six = [enroll(anon, token, name) for name in ("pool-6c", "pool-6d")]
    state(coordinator, six[0], ["fd00:63::/64"], "six-a")
    state(coordinator, six[1], ["fd00:63::/64"], "six-b")
    state(coordinator, first, ["10.63.0.0/24"], "pool-site-a")
    # A gateway of site pool-site-b names an alias no rule allows: pending, no alias of the site's.
    (route,) = state(coordinator, planted, ["10.63.0.0/24"], "pool-site-b", a="192.168.63.0/24")
    assert route["state"] == "pending"
    state(coordinator, second, ["10.63.0.0/24"], "pool-site-b")
    assert routes(admin)["10.63.0.0/24", "pool-b"]["state"] == "conflict"
    r = admin.patch("/api/v1/network", json={"alias_pool": "10.163.128.0/20"})
    assert r.status_code == 200, r.text
    try:
        got = routes(admin)
        assert got["fd00:63::/64", "pool-6d"]["state"] == "conflict"  # no IPv6 block in an IPv4 pool
        given = got["10.63.0.0/24", "pool-b"]
        assert (given["state"], given["alias_by"]) == ("active", "pool")
        assert given["alias"] != "192.168.63.0/24" and given["alias"].startswith("10.163.")
    finally:
        assert admin.patch("/api/v1/network", json={"clear_alias_pool": True}).status_code == 200
