"""The schema-version-2 fixtures (tests/fixtures, made by make_fixtures.py) are taken over by the current code.

A coordinator started on a copy of the database upgrades it in place and serves every node, route, token,
pair, status report, netmap and network setting MANIFEST.json records, with what later schema versions
add at its default (`upgraded` says what that is); the agent's state directory loads with the state module,
and an agent starting on it restores its cached netmap, which the coordinator confirms is current. The
committed files are never opened for writing: everything runs on copies in tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_harness import memory_agent
from coordinator_harness import Coordinator, assert_error, running

from wgmesh import keys
from wgmesh.agent.config import AgentConfig
from wgmesh.agent.state import StateDir
from wgmesh.coordinator import identity, schema
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.models import NetMap
from wgmesh.pins import Pin
from wgmesh.relay.identity import RelayIdentity

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MANIFEST: dict[str, Any] = json.loads((FIXTURES / "MANIFEST.json").read_text())
REGISTRY: dict[str, Any] = MANIFEST["coordinator"]
AGENT: dict[str, Any] = MANIFEST["agent_state"]


def copy_database(tmp: Path) -> Path:
    db = tmp / str(REGISTRY["db"])
    shutil.copyfile(FIXTURES / REGISTRY["db"], db)
    return db


def copy_state_dir(tmp: Path, *, product_modes: bool = True) -> Path:
    """The agent's state directory, with the modes the agent writes (git keeps none of them).

    The agent makes the directory 0700 and every file in it 0600; a checkout has whatever the umask
    gives (0755/0644). The state module reads looser files too, with a warning, so `product_modes=False`
    keeps the checkout's modes to show exactly that.
    """
    state = tmp / str(AGENT["dir"])
    shutil.copytree(FIXTURES / AGENT["dir"], state)
    if product_modes:
        state.chmod(0o700)
        for f in state.iterdir():
            f.chmod(0o600)
    else:
        state.chmod(0o755)
        for f in state.iterdir():
            f.chmod(0o644)
    return state


def start_on(db: Path, log: Path) -> Coordinator:
    """A coordinator on `db`, started as the fixture's was (its admin token, relays, trusted proxy)."""
    return Coordinator(
        db=db,
        log=log,
        extra=tuple(REGISTRY["started_with"]["flags"]),
        admin_token=REGISTRY["started_with"]["env"]["WGMESH_ADMIN_TOKEN"],
    )


@pytest.fixture(scope="module")
def fixture_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """A coordinator on a copy of the fixture database; the tests using it only read."""
    tmp = tmp_path_factory.mktemp("fixture")
    with running(start_on(copy_database(tmp), tmp / "coordinator.log")) as c:
        yield c


@pytest.fixture(scope="module")
def admin(fixture_coordinator: Coordinator) -> Iterator[httpx.Client]:
    with fixture_coordinator.admin() as client:
        yield client


# What each schema version after the fixture's adds to what the API shows, at its default.
ADDED_BY_SCHEMA_3 = {
    "network": {"mtu": 1420},  # the network default tunnel MTU
    "node": {"mtu": None, "max_mtu": None},  # no ceiling; the agent has not reported its underlay yet
    "netmap": {"mtu": 1420},  # every node's effective MTU is then the network default
    "report": {"mtu": None, "max_mtu": None},  # reports from before the agents knew MTUs
    "static_config": {"mtu": 1420},  # a static peer's wg-quick file sets the MTU the gateways clamp to
}
# Relays announced without a pin (the fixture's flags name none) are verified by the CA store, as before.
ADDED_BY_RELAY_PINS = {"pin": None}


ADDED_BY_SCHEMA_6 = {"netmap": {"coordinator_next_pin": None}}  # no rotation of the identity staged
# No schema change: a report stored before agents had a route guard reads back with no refused route.
ADDED_BY_ROUTE_GUARD = {"report": {"refused": []}}
# Several coordinators (issue 17): a report from before names none.
ADDED_BY_FAILOVER = {"report": {"coordinator": None}}
# Route approval: every route from before stays routed, approved by "upgrade"; no token or network rule
# approves anything new. A netmap an agent cached before knows no `decided_by` (it reads as null).
ADDED_BY_SCHEMA_7 = {
    "network": {"auto_approve": []},
    "token": {"allow_subnets": []},
    "route": {"decided_by": "upgrade"},
    "cached_route": {"decided_by": None},
}


# Node lifecycle: no rotation asked, no token replaces a node. A netmap names the node's own key (one
# an agent cached before does not) and asks for no rotation.
ADDED_BY_SCHEMA_9 = {
    "node": {"rotate_requested_at": None},
    "token": {"replaces": None},
    "cached_netmap": {"public_key": None, "rotate_key": False},
}


# Sites (issue 18): every node is a site of its own, named after it, so no HA group forms by itself; a
# standby from before (it never carried traffic) becomes a conflict with the route of the other site. A
# report from before has no HA groups and no per-peer health.
ADDED_BY_SCHEMA_12 = {
    "netmap": {"ha_groups": []},
    "report": {"ha": []},
    "peer_status": {"health": None},
}
# No schema change: a report stored before agents left nominal peers out lists every peer.
ADDED_BY_CONDENSED_REPORTS = {"report": {"nominal": None}}
# No schema change: a report stored before 0.2.0 names no version: it reads back unknown.
ADDED_BY_AGENT_VERSION = {"report": {"agent_version": None}}
# Aliases (issue 20): every route is published at its own prefix, and the network has no alias pool.
ADDED_BY_SCHEMA_13 = {"route": {"alias": None, "alias_by": None}, "network": {"alias_pool": None}}
# Direct TCP (issue 21): no agent reported a listener yet; a netmap served says the coordinator takes them,
# one an agent cached before does not.
ADDED_BY_SCHEMA_14 = {
    "node": {"tcp": None},
    "peer": {"tcp": None},
    "report": {"tcp": None},
    "netmap": {"tcp_direct": True},
    "cached_netmap": {"tcp_direct": False},
}


def schema_12_route(route: dict[str, Any]) -> dict[str, Any]:
    """A route as schema 12 judges it: a standby of another gateway (so of another site) is a conflict;
    and as schema 13 words a conflict: with how an alias resolves it."""
    hint = (
        f"; to reach both, publish this one under an alias: wgmesh routes alias {route['prefix']} --node "
        f"{route['gateway']} --as PREFIX (same length), or give the network an alias pool: wgmesh network "
        "set --alias-pool PREFIX"
    )
    if route["state"] == "conflict":
        return {**route, "reason": route["reason"] + hint}
    if route["state"] != "standby":
        return route
    other = route["conflicting_with"]
    prefix, site = other.split("@")
    gateway = route["gateway"]
    reason = (
        f"{prefix} is already advertised by {other} of site {site}, {gateway} serves site {gateway}: only "
        "gateways of one site form an HA group (wgmesh-agent --site)"
    )
    return {**route, "state": "conflict", "reason": reason + hint}


def own_key(name: str) -> str:
    """The public key the manifest records for node `name`."""
    return str(next(n["public_key"] for n in REGISTRY["nodes"] if n["name"] == name))


def upgraded(kind: str, value: Any) -> Any:
    """A manifest value (written at schema 2) as the current code serves it."""
    if kind in ("netmap", "cached_netmap"):
        route = {
            **ADDED_BY_SCHEMA_7["route" if kind == "netmap" else "cached_route"],
            **ADDED_BY_SCHEMA_13["route"],
        }
        lifecycle = (
            ADDED_BY_SCHEMA_9["cached_netmap"]
            if kind == "cached_netmap"
            else {"public_key": own_key(value["name"]), "rotate_key": False}
        )
        return {
            **value,
            **ADDED_BY_SCHEMA_3["netmap"],
            **ADDED_BY_SCHEMA_6["netmap"],
            **lifecycle,
            **ADDED_BY_SCHEMA_12["netmap"],
            **ADDED_BY_SCHEMA_14[kind],
            "peers": [
                {**p, **ADDED_BY_SCHEMA_3["netmap"], **ADDED_BY_SCHEMA_14["peer"]} for p in value["peers"]
            ],
            # A netmap an agent cached holds the verdicts of its day; a netmap served, today's.
            "routes": [
                {**r, **route} if kind == "cached_netmap" else schema_12_route({**r, **route})
                for r in value["routes"]
            ],
        }
    if kind == "route":
        return schema_12_route({**value, **ADDED_BY_SCHEMA_7[kind], **ADDED_BY_SCHEMA_13[kind]})
    if kind == "token":
        return {**value, **ADDED_BY_SCHEMA_7[kind], **ADDED_BY_SCHEMA_9[kind]}
    if kind == "network":
        return {
            **value,
            **ADDED_BY_SCHEMA_3["network"],
            **ADDED_BY_SCHEMA_7["network"],
            **ADDED_BY_SCHEMA_13["network"],
        }
    if kind == "status":
        report = {
            **value["report"],
            **ADDED_BY_SCHEMA_3["report"],
            **ADDED_BY_ROUTE_GUARD["report"],
            **ADDED_BY_FAILOVER["report"],
            **ADDED_BY_SCHEMA_12["report"],
            **ADDED_BY_CONDENSED_REPORTS["report"],
            **ADDED_BY_AGENT_VERSION["report"],
            **ADDED_BY_SCHEMA_14["report"],
            "peers": [{**p, **ADDED_BY_SCHEMA_12["peer_status"]} for p in value["report"]["peers"]],
        }
        return {**value, "report": report}
    if kind == "static_config":
        return {**value, "interface": {**value["interface"], **ADDED_BY_SCHEMA_3["static_config"]}}
    if kind == "node":
        return {
            **value,
            **ADDED_BY_SCHEMA_3[kind],
            **ADDED_BY_SCHEMA_9[kind],
            **ADDED_BY_SCHEMA_14[kind],
            "site": value["name"],
        }
    return {**value, **ADDED_BY_SCHEMA_3[kind]}


def get(client: httpx.Client, path: str) -> Any:
    r = client.get(path)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text}"
    return r.json()


def test_the_committed_files_are_those_the_manifest_describes() -> None:
    assert MANIFEST["schema_version"] == 2 and schema.SCHEMA_VERSION >= 2
    for name, digest in MANIFEST["files_sha256"].items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest, name
    state_files = {p.name for p in (FIXTURES / AGENT["dir"]).iterdir()}
    assert state_files == {"private.key", "enrollment.json", "netmap.json", "relay-grant.json"}
    assert not list(FIXTURES.glob("*.db-*")), "a WAL or shared-memory file next to the fixture database"


def test_database_has_schema_version_2_upgrades_in_place_and_keeps_a_value_in_every_column(
    tmp_path: Path,
) -> None:
    db = copy_database(tmp_path)
    conn = sqlite3.connect(db)
    try:
        assert [v for (v,) in conn.execute("SELECT version FROM schema_version")] == [2]
    finally:
        conn.close()
    store = Store(f"sqlite:///{db}")
    try:
        later = list(range(3, schema.SCHEMA_VERSION + 1))
        assert store.upgrade() == later  # every later version's step, once
        store.check_schema()  # what the coordinator checks before serving
        assert store.upgrade() == []
        # Schema 5: no identity yet; the first start (or `pin`, `init`) makes it, once.
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT tls_key, tls_cert FROM registry").fetchall() == [(None, None)]
        finally:
            conn.close()
        made = identity.ensure(store)
        assert identity.ensure(store) == made
        assert made.pin == Pin.of_certificate(made.chain[0])  # self-signed: the leaf's own key
    finally:
        store.close()
    added = {("networks", "mtu"), ("nodes", "mtu"), ("nodes", "max_mtu")}  # schema 3: unset until used
    added |= {("admin_tokens", "revoked_at")}  # schema 4: no token revoked yet
    added |= {("audit", c.name) for c in schema.audit.columns}  # schema 4: an empty audit log
    added.add(("registry", "relay_tls_key"))  # schema 5: made when a coordinator first runs --relay
    added |= {("registry", "tls_next_key"), ("registry", "tls_next_cert")}  # schema 6: until a rotation
    added.add(("routes", "decision_reason"))  # schema 7: the upgrade gives no reason ("upgrade" decided)
    added |= {("relay_revocations", c.name) for c in schema.relay_revocations.columns}  # 8: no node deleted
    added |= {
        ("nodes", "rotate_requested_at"),
        ("tokens", "replaces"),
    }  # 9: no rotation asked, no replacement
    added |= {("sessions", c.name) for c in schema.sessions.columns}  # 10: no one logged in yet
    added |= {("tokens", "enrolled_node"), ("tokens", "enrolled_at")}  # 11: enrollments long over
    added |= {("routes", "alias"), ("routes", "alias_by"), ("networks", "alias_pool")}  # 13: no aliases
    added |= {("nodes", "tcp_port"), ("nodes", "tcp_pin")}  # 14: until an agent reports its listener
    conn = sqlite3.connect(db)
    try:
        assert [v for (v,) in conn.execute("SELECT version FROM schema_version ORDER BY version")] == [
            2,
            *later,
        ]
        assert conn.execute("SELECT mtu FROM networks").fetchall() == [(1420,)]
        # schema 4: the admin tokens from before are named after their ids, full admins, their origin
        # unknown; the audit table exists, empty
        assert conn.execute(
            "SELECT id, name, read_only, source, revoked_at FROM admin_tokens ORDER BY id"
        ).fetchall() == [(1, "admin-1", 0, "upgrade", None), (2, "admin-2", 0, "upgrade", None)]
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone() == (0,)
        assert conn.execute("SELECT relay_tls_key FROM registry").fetchall() == [(None,)]
        # schema 7: every route from before stays routed, approved by "upgrade"; nothing allowed anew
        assert set(conn.execute("SELECT decision, decided_by, decision_reason FROM routes")) == {
            ("approved", "upgrade", None)
        }
        for table, column in (
            ("tokens", "allow_subnets"),
            ("nodes", "allow_subnets"),
            ("networks", "auto_approve"),
        ):
            assert {v for (v,) in conn.execute(f"SELECT {column} FROM {table}")} == {"[]"}, table
        # schema 8: no tombstone, so no ticket of a node that still exists is refused
        assert conn.execute("SELECT COUNT(*) FROM relay_revocations").fetchone() == (0,)
        # schema 10: the sessions table exists, empty (sessions were in memory before)
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)
        for table in schema.metadata.sorted_tables:
            for column in table.columns:
                if (table.name, column.name) in added:
                    continue
                (count,) = conn.execute(
                    f'SELECT COUNT(*) FROM "{table.name}" WHERE "{column.name}" IS NOT NULL'
                ).fetchone()
                assert count, f"{table.name}.{column.name} holds no value in the fixture"
        # both values of the flags later schema versions may split or rename
        assert {v for (v,) in conn.execute("SELECT static FROM nodes")} == {0, 1}
        assert {v for (v,) in conn.execute("SELECT reusable FROM tokens")} == {0, 1}
        # the pair cleared of its overrides keeps a row (the API does not list it)
        assert conn.execute("SELECT COUNT(*) FROM pairs WHERE p2p IS NULL AND rate IS NULL").fetchone() == (
            1,
        )
    finally:
        conn.close()


def test_upgraded_database_revokes_the_tickets_of_a_node_deleted_after_the_upgrade(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{copy_database(tmp_path)}")
    try:
        store.upgrade()
        registry = Registry(store)
        assert registry.relay_revocations() == []
        node = registry.list_nodes()[0]
        registry.delete_node(node.name)
        (revoked,) = registry.relay_revocations()
        assert revoked.node_id == node.id
        assert [n.id for n in registry.list_nodes()].count(node.id) == 0
    finally:
        store.close()


def test_upgraded_database_makes_the_embedded_relays_key_once_and_keeps_its_secrets(tmp_path: Path) -> None:
    db = copy_database(tmp_path)
    stores = [Store(f"sqlite:///{db}") for _ in range(2)]  # two coordinators sharing the registry
    try:
        stores[0].upgrade()
        first, second = (Registry(store).relay_tls_key() for store in stores)
        assert first == second  # made once; the second coordinator reads it
        assert RelayIdentity.from_key(first).pin == RelayIdentity.from_key(second).pin
        assert Registry(stores[1]).relay_public_key() == REGISTRY["relay_coordinator_key"]
    finally:
        for store in stores:
            store.close()


def test_coordinator_serves_what_the_manifest_records(
    fixture_coordinator: Coordinator, admin: httpx.Client
) -> None:
    with fixture_coordinator.anonymous() as anon:
        assert get(anon, "/healthz")["version"] == REGISTRY["registry_version"]
    assert get(admin, "/api/v1/network") == upgraded("network", REGISTRY["network"])
    nodes = get(admin, "/api/v1/nodes")["nodes"]
    for node in nodes:
        node.pop("online")  # derived from the clock
    assert nodes == [upgraded("node", n) for n in REGISTRY["nodes"]]
    assert REGISTRY["deleted_node"]["name"] not in {n["name"] for n in nodes}
    assert get(admin, "/api/v1/routes")["routes"] == [upgraded("route", r) for r in REGISTRY["routes"]]
    assert {(r["prefix"], r["gateway"], r["state"]) for r in REGISTRY["routes"]} >= {
        ("10.1.0.0/16", "gw-a", "active"),
        ("10.1.0.0/16", "gw-b", "standby"),
        ("10.2.128.0/24", "gw-c", "conflict"),
    }
    # Schema 12: every node is a site of its own, so no HA group formed by itself: gw-b's standby, which
    # never carried traffic, is now a conflict with gw-a's (of another site), carrying none either.
    assert {r["state"] for r in get(admin, "/api/v1/routes")["routes"] if r["gateway"] == "gw-b"} >= {
        "conflict"
    }
    assert get(admin, "/api/v1/topology")["ha_groups"] == []
    assert get(admin, "/api/v1/tokens")["tokens"] == [upgraded("token", t) for t in REGISTRY["tokens"]]
    assert get(admin, "/api/v1/pairs")["pairs"] == REGISTRY["pairs"]
    assert get(admin, "/api/v1/statuses")["statuses"] == [upgraded("status", x) for x in REGISTRY["statuses"]]
    # the admin token `init` printed is still one
    with fixture_coordinator.admin(REGISTRY["admin_tokens"]["printed_by_init"]) as other:
        assert get(other, "/api/v1/network") == upgraded("network", REGISTRY["network"])
    # schema 4: both are named; the one WGMESH_ADMIN_TOKEN still names became the bootstrap token (replaced
    # when the variable changes), the other keeps its unknown origin
    listed = get(admin, "/api/v1/admin-tokens")["admin_tokens"]
    assert [(t["name"], t["read_only"], t["source"], t["revoked_at"]) for t in listed] == [
        ("admin-1", False, "upgrade", None),
        ("admin-2", False, "env", None),
    ]
    # the old token nobody names any more still works, and the coordinator says so at start
    assert "names=admin-1" in fixture_coordinator.log.read_text()


def test_netmaps_static_export_relay_key_and_topology_build(
    fixture_coordinator: Coordinator, admin: httpx.Client
) -> None:
    for name, credential in REGISTRY["credentials"].items():
        with fixture_coordinator.node(credential) as node:
            assert get(node, "/api/v1/netmap") == upgraded("netmap", REGISTRY["netmaps"][name]), name
    static = get(admin, "/api/v1/nodes/laptop-static/config")
    assert static == upgraded("static_config", REGISTRY["static_configs"]["laptop-static"])
    laptop = next(n for n in REGISTRY["nodes"] if n["name"] == "laptop-static")
    assert keys.public_key_of(static["interface"]["private_key"]) == laptop["public_key"]
    with fixture_coordinator.node(REGISTRY["credentials"][AGENT["node"]]) as node:
        grant = get(node, "/api/v1/node/relay")
    assert grant["coordinator_key"] == REGISTRY["relay_coordinator_key"]  # same master secret
    assert grant["relays"] == [{**r, **ADDED_BY_RELAY_PINS} for r in REGISTRY["agent_grant"]["relays"]]
    warnings = get(admin, "/api/v1/topology")["warnings"]
    inactive = "route 10.2.128.0/24@gw-c is inactive: 10.2.128.0/24 overlaps 10.2.0.0/16@gw-b; to reach both"
    assert any(w.startswith(inactive) and "wgmesh routes alias 10.2.128.0/24" in w for w in warnings)
    assert "gw-agent does not install 10.20.0.0/24: it overlaps a local subnet on eth1" in warnings, warnings


def test_tokens_keep_their_verdicts_and_enrollment_goes_on(tmp_path: Path) -> None:
    """Writes, so on a coordinator of its own."""
    secrets = REGISTRY["token_secrets"]

    def body(token_description: str, name: str) -> dict[str, Any]:
        token = secrets[token_description]
        return {"token": token, "name": name, "public_key": keys.generate_keypair().public_key}

    with running(start_on(copy_database(tmp_path), tmp_path / "c.log")) as c, c.anonymous() as anon:
        for description, code in (
            ("one-time for gw-a (used)", "token_used"),
            ("expired after one second (never used)", "token_expired"),
            ("revoked before use", "token_revoked"),
        ):
            assert_error(anon.post("/api/v1/enroll", json=body(description, "gw-new")), 401, code)
        assert get(anon, "/healthz")["version"] == REGISTRY["registry_version"]
        r = anon.post("/api/v1/enroll", json=body("fleet (reusable)", "gw-new"))
        assert r.status_code == 201, r.text
        netmap = r.json()["netmap"]
        assert netmap["version"] == REGISTRY["registry_version"] + 1
        assert netmap["overlay_cidr"] == REGISTRY["network"]["overlay_cidr"]
        assert {p["name"] for p in netmap["peers"]} == {n["name"] for n in REGISTRY["nodes"]}
        assert netmap["overlay_ip"] not in {n["overlay_ip"] for n in REGISTRY["nodes"]}
        r = anon.post("/api/v1/enroll", json=body("one-time, unused", "gw-newer"))
        assert r.status_code == 201, r.text


def test_agent_state_module_reads_the_state_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = StateDir(copy_state_dir(tmp_path))
    key_before = state.key_file.read_bytes()
    with caplog.at_level(logging.WARNING, logger="wgmesh.files"):
        pair = state.private_key()
        enrollment = state.enrollment()
        cached = state.cached_netmap()
        grant = state.cached_grant()
    assert caplog.records == []  # 0600 files: no warning
    assert state.key_file.read_bytes() == key_before  # loaded, not generated anew
    assert pair.public_key == AGENT["public_key"]
    assert enrollment is not None
    assert enrollment.node_id == AGENT["node_id"]
    assert enrollment.credential == REGISTRY["credentials"][AGENT["node"]]
    assert cached is not None
    # A cached netmap from before schema 3 reads with the MTU at its default.
    assert cached.model_dump(mode="json") == upgraded("cached_netmap", REGISTRY["netmaps"][AGENT["node"]])
    assert (cached.name, cached.overlay_ip, cached.version) == (
        AGENT["node"],
        AGENT["overlay_ip"],
        AGENT["netmap_version"],
    )
    assert grant is not None
    assert grant.coordinator_key == REGISTRY["relay_coordinator_key"]
    # A grant cached before relay pins reads with none: its tls:// relays are verified by the CA store.
    assert [r.model_dump() for r in grant.relays] == [
        {**r, **ADDED_BY_RELAY_PINS} for r in REGISTRY["agent_grant"]["relays"]
    ]


def test_state_dir_with_checkout_modes_is_read_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a fresh checkout gives (0644): readable, and the product says the files are too open."""
    state = StateDir(copy_state_dir(tmp_path, product_modes=False))
    with caplog.at_level(logging.WARNING, logger="wgmesh.files"):
        assert state.private_key().public_key == AGENT["public_key"]
        assert state.cached_netmap() is not None
    assert any("readable by others" in r.getMessage() for r in caplog.records)
    state.prepare()  # what the agent does first: the directory is tightened
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o700


def test_agent_starting_on_the_state_dir_restores_its_netmap_and_finds_it_current(
    tmp_path: Path, fixture_coordinator: Coordinator
) -> None:
    """`Agent.run`'s first steps on an in-memory data plane: restore the cache, take the stored
    enrollment (no token), then one poll: the coordinator on the fixture has nothing newer (304)."""
    cfg = AgentConfig(
        coordinator=fixture_coordinator.url,
        # An agent enrolled before pins learns its coordinator's from the operator (`--coordinator-pin`).
        coordinator_pin=str(fixture_coordinator.pin),
        name=AGENT["node"],
        state_dir=copy_state_dir(tmp_path),
        interface="wgfix0",
        metrics_listen="off",
    )
    local = [(prefix, ifname) for prefix, ifname in AGENT["local_subnets_at_creation"]]
    with memory_agent(cfg, local) as agent:
        assert agent.keypair.public_key == AGENT["public_key"]
        agent.dataplane.up()
        restored = agent.follower.restore()
        assert isinstance(restored, NetMap)
        assert agent.netmap == restored
        assert restored.model_dump(mode="json") == upgraded(
            "cached_netmap", REGISTRY["netmaps"][AGENT["node"]]
        )
        # the planner shadows the same remote route as when the fixture was made
        agent_status = next(s for s in REGISTRY["statuses"] if s["node"] == AGENT["node"])
        assert [s.model_dump() for s in agent.shadowed] == agent_status["report"]["shadowed"]
        enrollment = agent.enroll()  # the stored one: cfg has no token
        agent.client.credential = enrollment.credential
        assert agent.follower.poll_once(wait=0) is False  # 304: the cache is the current netmap
