"""The agent's side of a key rotation (issue 16, node lifecycle): it makes the key, keeps it on disk
before the coordinator hears of it, sets it on the live interface with the netmap the coordinator
answers, and moves to the new credential; an agent stopped half-way takes the key on its next netmap;
a refused rotation leaves the old key and never stops the netmap following."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from agent_harness import memory_agent
from coordinator_harness import Coordinator, assert_error, create_token, enroll, version

from wgmesh import keys
from wgmesh.agent.agent import Agent
from wgmesh.agent.config import AgentConfig
from wgmesh.agent.system.memory import MemoryHost, MemoryWireGuard

REAL_PROCESS = True  # the agent's own HTTP client needs the coordinator's URL (tests/api/conftest.py)


@contextmanager
def agent(coordinator: Coordinator, state_dir: Path, name: str, token: str | None) -> Iterator[Agent]:
    """Gateway `name`'s agent on a memory data plane, enrolled and on its current netmap."""
    cfg = AgentConfig(
        coordinator=coordinator.url, name=name, token=token, state_dir=state_dir, metrics_listen="off"
    )
    with memory_agent(cfg) as made:
        made.dataplane.up()
        made.client.credential = made.enroll().credential
        made.follower.poll_once(wait=0)
        yield made


def device_key(made: Agent) -> str:
    """The public half of the private key set on the (memory) interface."""
    wg = made.dataplane._wg
    assert isinstance(wg, MemoryWireGuard) and wg.device is not None and wg.device.private_key is not None
    return wg.device.private_key.public_key


def coordinator_key(admin: httpx.Client, name: str) -> str:
    return str(admin.get(f"/api/v1/nodes/{name}").json()["public_key"])


def credential_on_disk(state_dir: Path) -> str:
    return str(json.loads((state_dir / "enrollment.json").read_text())["credential"])


def test_the_agent_rotates_when_asked_and_keeps_its_interface(
    coordinator: Coordinator, admin: httpx.Client, tmp_path: Path
) -> None:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        peer = enroll(anon, token, "rot-peer")
    with agent(coordinator, tmp_path, "rot-gw", token) as made:
        old_key, old_credential = made.keypair.public_key, made.client.credential
        wg = made.dataplane._wg
        assert isinstance(wg, MemoryWireGuard)
        assert device_key(made) == old_key and peer.keypair.public_key in (
            wg.device.peers if wg.device else {}
        )
        created = wg.created
        made.follower.rotate_if_asked()  # nothing asked: nothing happens
        assert made.keypair.public_key == old_key
        assert admin.post("/api/v1/nodes/rot-gw/rotate-key").status_code == 200
        assert made.follower.poll_once(wait=0)
        assert made.follower.current is not None and made.follower.current.rotate_key
        made.follower.rotate_if_asked()
        new_key = made.keypair.public_key
        assert new_key != old_key
        assert coordinator_key(admin, "rot-gw") == new_key == device_key(made)
        assert wg.created == created  # the same interface, its peer kept
        assert wg.device is not None and peer.keypair.public_key in wg.device.peers
        assert made.follower.current is not None and not made.follower.current.rotate_key
        # On disk: the new key and credential (0600), no pending key left.
        assert (tmp_path / "private.key").read_text().strip() == made.keypair.private_key
        assert not (tmp_path / "private.key.next").exists()
        assert credential_on_disk(tmp_path) == made.client.credential != old_credential
        assert (tmp_path / "private.key").stat().st_mode & 0o777 == 0o600
        # The new credential's first use retires the old one.
        at = version(admin)
        assert not made.follower.poll_once(wait=0)  # nothing new since the rotation's netmap
        assert version(admin) == at
        with coordinator.node(old_credential or "") as old:
            assert_error(old.get("/api/v1/netmap"), 401, "invalid_credential")


def test_an_agent_stopped_after_the_coordinator_took_its_key_takes_it_on_restart(
    coordinator: Coordinator, admin: httpx.Client, tmp_path: Path
) -> None:
    token = create_token(admin)["token"]
    with agent(coordinator, tmp_path, "rot-crash", token) as made:
        old_key = made.keypair.public_key
        assert admin.post("/api/v1/nodes/rot-crash/rotate-key").status_code == 200
        pending = made.state.new_pending_key()
        # The coordinator takes the key, and the agent stops before it hears the answer.
        made.client.rotate_key(pending.public_key)
    assert coordinator_key(admin, "rot-crash") == pending.public_key
    with agent(coordinator, tmp_path, "rot-crash", None) as again:
        # It started on the old key, and its first netmap names the pending one: it takes it.
        assert again.keypair.public_key == pending.public_key != old_key
        assert device_key(again) == pending.public_key
        assert not (tmp_path / "private.key.next").exists()
        assert again.follower.poll_once(wait=0) is False  # its old credential still works: never used the new


def test_a_refused_rotation_keeps_the_old_key_and_the_netmaps_coming(
    coordinator: Coordinator, admin: httpx.Client, tmp_path: Path
) -> None:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        other = enroll(anon, token, "rot-other")
    with agent(coordinator, tmp_path, "rot-refused", token) as made:
        old_key = made.keypair.public_key
        # A pending key that is another node's (a broken disk, a copied state directory): refused.
        (tmp_path / "private.key.next").write_text(other.keypair.private_key + "\n")
        assert admin.post("/api/v1/nodes/rot-refused/rotate-key").status_code == 200
        assert made.follower.poll_once(wait=0)
        made.follower.rotate_if_asked()
        assert made.keypair.public_key == old_key == device_key(made) == coordinator_key(admin, "rot-refused")
        # Not asked again before its back-off, and the netmaps keep coming meanwhile.
        assert made.follower.rotate_after > 0
        made.follower.rotate_if_asked()
        assert admin.patch("/api/v1/nodes/rot-refused", json={"tags": ["still-followed"]}).status_code == 200
        assert made.follower.poll_once(wait=0)
        # Once the pending key is a good one, the rotation goes through.
        (tmp_path / "private.key.next").unlink()
        made.follower.rotate_after = 0.0
        made.follower.rotate_if_asked()
        assert made.keypair.public_key != old_key
        assert coordinator_key(admin, "rot-refused") == made.keypair.public_key == device_key(made)


def test_handshakes_start_with_new_peers_and_new_keys_only(
    coordinator: Coordinator, admin: httpx.Client, tmp_path: Path
) -> None:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        peer = enroll(anon, token, "rot-peer-b")
        quiet = enroll(anon, token, "rot-peer-c")
    with agent(coordinator, tmp_path, "rot-watcher", token) as made:
        host = made.dataplane._host
        assert isinstance(host, MemoryHost)
        ifname = made.cfg.interface
        overlay, other = peer.first_netmap["overlay_ip"], quiet.first_netmap["overlay_ip"]
        # The first netmap brings every peer: one datagram each, through the tunnel.
        assert {(ifname, overlay), (ifname, other)} <= set(host.sent)
        seen = len(host.sent)
        assert admin.post("/api/v1/nodes/rot-peer-b/rotate-key").status_code == 200
        assert made.follower.poll_once(wait=0)  # the request changes nothing a peer sees
        assert host.sent[seen:] == []
        with coordinator.node(peer.credential) as client:
            r = client.post("/api/v1/node/key", json={"public_key": keys.generate_keypair().public_key})
            assert r.status_code == 200, r.text
        assert made.follower.poll_once(wait=0)
        assert host.sent[seen:] == [(ifname, overlay)]  # the rotated peer only
        # A netmap without new peers or keys sends nothing.
        assert admin.patch("/api/v1/nodes/rot-peer-c", json={"tags": ["x"]}).status_code == 200
        assert made.follower.poll_once(wait=0)
        assert host.sent[seen:] == [(ifname, overlay)]
        # A peer that joins gets one.
        with coordinator.anonymous() as anon:
            joined = enroll(anon, token, "rot-peer-d")
        assert made.follower.poll_once(wait=0)
        assert host.sent[seen + 1 :] == [(ifname, joined.first_netmap["overlay_ip"])]
