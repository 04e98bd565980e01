"""Node lifecycle (issue 16): an admin asks a node's agent for a new key and the agent gives it; a token
that names a node replaces a dead instance of it. Peers learn the new key through their netmaps, the old
credential dies (after the new one's first use for a rotation, at once for a replacement), and both are
audited without a key or secret in the log."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Enrolled,
    assert_error,
    create_token,
    enroll,
    netmap,
    peers_by_name,
    unchanged,
    version,
)

from wgmesh import keys
from wgmesh.coordinator.registry import Registry
from wgmesh.coordinator.store import Store
from wgmesh.relay import tickets

_subnets = itertools.count()


BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""


@pytest.fixture
def mesh(coordinator: Api, admin: httpx.Client, request: pytest.FixtureRequest) -> dict[str, Enrolled]:
    """Two gateways with names of their own test (the module's coordinator is shared)."""
    tag = request.node.originalname[-24:].replace("_", "-").strip("-")
    token = create_token(admin, reusable=True, allow_subnets=["10.0.0.0/8"])["token"]
    third = next(_subnets)  # prefixes of their own too: the same prefix twice would be an HA pair
    with coordinator.anonymous() as anon:
        a = enroll(anon, token, f"a-{tag}", subnets=[f"10.71.{third}.0/24"])
        b = enroll(anon, token, f"b-{tag}", subnets=[f"10.72.{third}.0/24"])
    return {"a": a, "b": b}


def rotate(
    coordinator: Api, node: Enrolled, public_key: str, credential: str | None = None
) -> httpx.Response:
    with coordinator.node(credential or node.credential) as client:
        return client.post("/api/v1/node/key", json={"public_key": public_key})


def audit(admin: httpx.Client, action: str, target: str) -> list[dict[str, Any]]:
    r = admin.get("/api/v1/audit", params={"limit": "1000"})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["entries"] if e["action"] == action and e["target"] == target]


def refused(coordinator: Api, credential: str) -> bool:
    with coordinator.node(credential) as client:
        r = client.get("/api/v1/netmap")
    if r.status_code == 200:
        return False
    assert_error(r, 401, "invalid_credential")
    return True


def test_a_rotation_is_asked_of_the_node_alone_and_its_agent_carries_it_out(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    a, b = mesh["a"], mesh["b"]
    psk_before = peers_by_name(netmap(coordinator, a))[b.name]["psk"]
    at = version(admin)
    r = admin.post(f"/api/v1/nodes/{b.name}/rotate-key")
    assert r.status_code == 200, r.text
    assert r.json()["rotate_requested_at"] is not None and r.json()["public_key"] == b.keypair.public_key
    assert version(admin) > at  # wakes b's long-poll
    asked = netmap(coordinator, b)
    assert asked["rotate_key"] is True and asked["public_key"] == b.keypair.public_key
    assert netmap(coordinator, a)["rotate_key"] is False
    # Nothing changes for the peers until the agent gives its new key.
    assert peers_by_name(netmap(coordinator, a))[b.name]["public_key"] == b.keypair.public_key

    new = keys.generate_keypair()
    r = rotate(coordinator, b, new.public_key)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["credential"] != b.credential
    assert answer["netmap"]["public_key"] == new.public_key and answer["netmap"]["rotate_key"] is False
    peer = peers_by_name(netmap(coordinator, a))[b.name]
    assert peer["public_key"] == new.public_key
    # The preshared key stays: the agent holds its new key on the interface before its peers learn it,
    # and could not know a new preshared key that early (a replacement renews them).
    assert peer["psk"] == psk_before == peers_by_name(answer["netmap"])[a.name]["psk"]
    node = admin.get(f"/api/v1/nodes/{b.name}").json()
    assert node["public_key"] == new.public_key and node["rotate_requested_at"] is None

    # The old credential works until the new one is first used (an answer lost on the way can be
    # asked for again), then never again.
    assert not refused(coordinator, b.credential)
    assert not refused(coordinator, answer["credential"])
    assert refused(coordinator, b.credential)

    requested = audit(admin, "node.rotate", b.name)
    done = audit(admin, "node.rotate_key", b.name)
    assert len(requested) == 1 and len(done) == 1
    assert done[0]["actor"] == f"node:{b.name}"
    assert done[0]["detail"] == {
        "old_key": keys.fingerprint(b.keypair.public_key),
        "new_key": keys.fingerprint(new.public_key),
    }
    log = str(admin.get("/api/v1/audit").json())
    for secret in (new.public_key, b.keypair.public_key, answer["credential"], b.credential):
        assert secret not in log


def test_a_lost_answer_is_asked_for_again_and_changes_nothing_else(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    b = mesh["b"]
    assert admin.post(f"/api/v1/nodes/{b.name}/rotate-key").status_code == 200
    new = keys.generate_keypair()
    first = rotate(coordinator, b, new.public_key)
    assert first.status_code == 200, first.text
    # The request is done, but the same key may be given again: the first answer never reached the agent.
    again = rotate(coordinator, b, new.public_key)
    assert again.status_code == 200, again.text
    assert again.json()["netmap"]["public_key"] == new.public_key
    # Two credentials at most: the one in use and the last answered; the lost answer's is gone already.
    assert refused(coordinator, first.json()["credential"])
    assert not refused(coordinator, again.json()["credential"])
    assert refused(coordinator, first.json()["credential"]) and refused(coordinator, b.credential)
    assert len(audit(admin, "node.rotate_key", b.name)) == 1


def test_refused_rotations_change_nothing(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    a, b = mesh["a"], mesh["b"]
    # Not asked: a node's credential alone (a stolen enrollment.json) cannot give it a key of its choosing.
    with unchanged(admin):
        r = rotate(coordinator, b, keys.generate_keypair().public_key)
        assert_error(r, 403, "rotation_not_requested")
    assert admin.post(f"/api/v1/nodes/{b.name}/rotate-key").status_code == 200
    with unchanged(admin):
        assert_error(rotate(coordinator, b, a.keypair.public_key), 409, "duplicate_key")
        assert_error(rotate(coordinator, b, "not-a-key"), 422)
        assert_error(admin.post("/api/v1/nodes/no-such-node/rotate-key"), 404, "unknown_node")
        with coordinator.anonymous() as anon:
            r = anon.post("/api/v1/node/key", json={"public_key": keys.generate_keypair().public_key})
            assert_error(r, 401)
    assert not refused(coordinator, b.credential)


def test_a_static_peer_with_generated_keys_gets_new_ones_at_once(
    coordinator: Api, admin: httpx.Client
) -> None:
    r = admin.post("/api/v1/nodes", json={"name": "laptop-rotated", "generate_keys": True})
    assert r.status_code == 201, r.text
    before = admin.get("/api/v1/nodes/laptop-rotated/config").json()["interface"]["private_key"]
    r = admin.post("/api/v1/nodes/laptop-rotated/rotate-key")
    assert r.status_code == 200, r.text
    assert r.json()["rotate_requested_at"] is None
    after = admin.get("/api/v1/nodes/laptop-rotated/config").json()["interface"]["private_key"]
    assert after != before and keys.public_key_of(after) == r.json()["public_key"]
    own = admin.post(
        "/api/v1/nodes", json={"name": "phone-own-key", "public_key": keys.generate_keypair().public_key}
    )
    assert own.status_code == 201, own.text
    with unchanged(admin):
        assert_error(admin.post("/api/v1/nodes/phone-own-key/rotate-key"), 422, "not_rotatable")


def test_a_replacement_takes_the_nodes_place_and_the_old_instance_is_out_at_once(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled]
) -> None:
    a, b = mesh["a"], mesh["b"]
    old = admin.get(f"/api/v1/nodes/{b.name}").json()
    psk_before = peers_by_name(netmap(coordinator, a))[b.name]["psk"]
    token = create_token(admin, replaces=b.name)
    assert token["replaces"] == b.name and token["reusable"] is False
    # The token enrolls that name only; refused, it is not used up.
    with coordinator.anonymous() as anon, unchanged(admin):
        other = anon.post(
            "/api/v1/enroll",
            json={
                "token": token["token"],
                "name": "someone-else",
                "public_key": keys.generate_keypair().public_key,
            },
        )
        assert_error(other, 403, "token_for_other_node")
    with coordinator.anonymous() as anon:
        fresh = enroll(anon, token["token"], b.name, listen_port=51999)
    assert fresh.node_id == b.node_id
    assert fresh.first_netmap["overlay_ip"] == old["overlay_ip"]
    assert fresh.first_netmap["public_key"] == fresh.keypair.public_key
    assert refused(coordinator, b.credential)  # at once, without waiting for the new one's use
    node = admin.get(f"/api/v1/nodes/{b.name}").json()
    assert node["public_key"] == fresh.keypair.public_key and node["listen_port"] == 51999
    assert node["subnets"] == old["subnets"] and node["created_at"] == old["created_at"]
    peer = peers_by_name(netmap(coordinator, a))[b.name]
    assert peer["public_key"] == fresh.keypair.public_key
    assert peer["allowed_ips"] == [f"{old['overlay_ip']}/32", *old["subnets"]]  # routes kept, approved
    assert peer["psk"] != psk_before
    assert admin.get(f"/api/v1/nodes/{b.name}/status").status_code == 404  # the old instance's report is gone
    entries = audit(admin, "node.replace", b.name)
    assert len(entries) == 1 and entries[0]["actor"] == f"token:{token['id']}"

    # The old instance's relay tickets are revoked; the new one's pass, even within the same second.
    registry = Registry(Store(coordinator.db_url))
    try:
        revoked = {r.node_id: r.issued_before for r in registry.relay_revocations()}
    finally:
        registry.store.close()
    assert b.node_id in revoked
    with coordinator.node(fresh.credential) as client:
        grant = client.get("/api/v1/node/relay")
    assert grant.status_code == 200, grant.text
    claims, _, _ = tickets.decode_ticket(grant.json()["ticket"])
    assert claims.issued_at > revoked[b.node_id]


def test_replacement_tokens_are_refused_for_nodes_that_cannot_be_replaced(
    coordinator: Api, admin: httpx.Client
) -> None:
    r = admin.post("/api/v1/nodes", json={"name": "printer-static", "generate_keys": True})
    assert r.status_code == 201, r.text
    with unchanged(admin):
        assert_error(admin.post("/api/v1/tokens", json={"replaces": "no-such-node"}), 404, "unknown_node")
        assert_error(admin.post("/api/v1/tokens", json={"replaces": "printer-static"}), 422, "static_node")
        assert_error(admin.post("/api/v1/tokens", json={"replaces": "Not A Name"}), 422)
