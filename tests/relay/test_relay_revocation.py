"""Issue 16: a relay refuses the tickets of a deleted node once it has pulled the coordinator's revocation
list, and goes on serving valid tickets offline while the coordinator is down. Real coordinator and relay
processes; the relay pulls every 0.2 s so the wait is short, and every wait is a condition."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from coordinator_harness import Coordinator, create_token, enroll, running
from relay_harness import RelayProcess, nodes, relay_process, wait_until

from wgmesh.relay import protocol as p
from wgmesh.relay.identity import KEY_FILE, RelayIdentity, load_or_create_key
from wgmesh.relay.revocation import PATH, relay_token
from wgmesh.relay.tickets import generate_signing_key

Code = p.CloseCode


def test_deleted_nodes_ticket_is_refused_once_pulled_and_valid_ones_survive_an_outage(tmp_path: Path) -> None:
    log = tmp_path / "relay" / "relay.log"
    log.parent.mkdir()
    # The relay's key exists before the coordinator starts, so the coordinator can announce its pin.
    key_pem = load_or_create_key(log.parent / "relay-state" / KEY_FILE)
    pin = RelayIdentity.from_key(key_pem).pin
    announce = ["--announce-relay", f"r1=tls://127.0.0.1:9#{pin}"]
    coordinator = Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=announce)
    with running(coordinator) as c:
        with c.admin() as admin, c.anonymous() as anon:
            token = create_token(admin, reusable=True)["token"]
            gone, stays, peer = (enroll(anon, token, name) for name in ("gw-gone", "gw-stays", "gw-peer"))
        grants = {}
        for node in (gone, stays, peer):
            with c.node(node.credential) as client:
                grants[node.node_id] = client.get("/api/v1/node/relay").json()
        coordinator_key = grants[gone.node_id]["coordinator_key"]
        with relay_process(
            log,
            "--coordinator-key",
            coordinator_key,
            "--relay-id",
            "r1",
            "--coordinator",
            c.url,
            "--coordinator-pin",
            str(c.pin),
            "--revocation-interval",
            "0.2",
        ) as relay:
            ticket = {n: grants[n]["ticket"] for n in grants}
            with nodes(relay, 3) as (a, b, d):
                a.hello(gone.node_id, ticket[gone.node_id])
                b.hello(stays.node_id, ticket[stays.node_id])
                d.hello(peer.node_id, ticket[peer.node_id])
                with c.admin() as admin:
                    assert admin.delete("/api/v1/nodes/gw-gone").status_code in (200, 204)
                # Once pulled, its live connection is closed and its ticket no longer authenticates.
                a.expect_close(Code.BAD_TICKET, timeout=30)
                wait_until(
                    lambda: _hello_refused(relay, gone.node_id, ticket[gone.node_id]),
                    10,
                    "the deleted node's ticket refused",
                )
                b.send(p.Data(peer.node_id, b"still relayed"))
                assert d.data() == p.Data(stays.node_id, b"still relayed")
            assert "revoked" in relay.text()
            # The coordinator goes away: tickets are still verified offline, the list is kept.
            c.stop()
            wait_until(lambda: "revocation pull failed" in relay.text(), 10, "the relay noticing the outage")
            with nodes(relay, 2) as (b, d):
                b.hello(stays.node_id, ticket[stays.node_id])
                d.hello(peer.node_id, ticket[peer.node_id])
                b.send(p.Data(peer.node_id, b"coordinator down"))
                assert d.data() == p.Data(stays.node_id, b"coordinator down")
            assert _hello_refused(relay, gone.node_id, ticket[gone.node_id])


def _hello_refused(relay: RelayProcess, node_id: int, ticket: str) -> bool:
    with nodes(relay, 1) as (node,):
        node.send(p.Hello(node_id=node_id, ticket=ticket))
        frame = node.recv()
        return isinstance(frame, p.Close) and frame.code == Code.BAD_TICKET


def test_revocation_list_is_only_for_announced_relays_signing_with_their_pinned_key(tmp_path: Path) -> None:
    key_pem = RelayIdentity.from_key(load_or_create_key(tmp_path / "k" / KEY_FILE)).key_pem
    other_pem = RelayIdentity.from_key(load_or_create_key(tmp_path / "o" / KEY_FILE)).key_pem
    pin = RelayIdentity.from_key(key_pem).pin
    announce = ["--announce-relay", f"r1=tls://127.0.0.1:9#{pin}", "--announce-relay", "r2=tls://127.0.0.1:8"]
    with running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=announce)) as c:
        with c.admin() as admin, c.anonymous() as anon:
            node = enroll(anon, create_token(admin)["token"], "gw-x")

        def get(token: str) -> httpx.Response:
            with httpx.Client(base_url=c.url, verify=c.verify, trust_env=False) as client:
                return client.get(PATH, headers={"authorization": f"Bearer {token}"})

        now = time.time()
        ok = get(relay_token(key_pem, "r1", now))
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"revoked": []}
        for token in (
            relay_token(other_pem, "r1", now),  # another key than the pinned one
            relay_token(key_pem, "r2", now),  # a relay announced without a pin proves nothing
            relay_token(key_pem, "r3", now),  # not announced at all
            relay_token(key_pem, "r1", now - 3600),  # an old token
            node.credential,  # a node is not a relay
            generate_signing_key(),
        ):
            assert get(token).status_code == 401
