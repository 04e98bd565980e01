"""Issue 17, end to end: two coordinators on one PostgreSQL and two relays, in a lab.

One lab serves the first three tests (each puts back what it stops): coordinator `hub2` ("A") takes changes
while gw1 and gw3 long-poll `hub` ("B"); a relay dies under a TCP stream; the database stops under a
running mesh. The fourth moves a SQLite lab's registry to PostgreSQL under running agents.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from lab_paths import CLI, TcpStream, ping_ok

from wgmesh import trust
from wgmesh.agent.local_status import SOCKET_NAME, read_local_status
from wgmesh.coordinator.listener import BACKOFF_MAX
from wgmesh.errors import NotFoundError, StoreError
from wgmesh.lab import Lab, wait_until
from wgmesh.lab.layout import RELAY_PORT
from wgmesh.lab.pings import ContinuousPing
from wgmesh.lab.timescale import scaled
from wgmesh.models import LocalStatus
from wgmesh.pins import Pin

pytestmark = [pytest.mark.e2e]

A, B = 2, 1
"""Coordinator numbers: A (`hub2`) takes the admin's changes, B (`hub`) serves gw1 and gw3."""


def peer_keys(lab: Lab) -> dict[str, set[str]]:
    """Each gateway's WireGuard peers (public keys), read from its interface."""
    return {lab.plan.site(i).node: {p.public_key for p in v.peers} for i, v in lab.observe().items()}


def followed(lab: Lab) -> dict[str, str | None]:
    """The coordinator URL each agent says it long-polls (its last status report)."""
    nodes = lab.api("GET", "/api/v1/topology")["nodes"]
    return {n["name"]: n.get("coordinator") for n in nodes if not n.get("static")}


def add_static_peer(lab: Lab, name: str, coordinator: int) -> str:
    """A static peer made through one coordinator only; returns its public key."""
    made = lab.api("POST", "/api/v1/nodes", {"name": name, "generate_keys": True}, coordinator=coordinator)
    return str(made["public_key"])


def everywhere(lab: Lab, key: str) -> bool:
    missing = [node for node, keys in peer_keys(lab).items() if key not in keys]
    assert not missing, f"not yet a peer of {', '.join(missing)}"
    return True


def database_of(lab: Lab, coordinator: int) -> str:
    """What coordinator number `coordinator` says of its database on /healthz (200 ok, 503 unavailable)."""
    tls = trust.for_client(Pin.parse(lab.pin), None)
    with httpx.Client(verify=tls, trust_env=False, timeout=scaled(5.0)) as client:
        answer = client.get(f"{lab.plan.coordinator_url(coordinator)}/healthz")
    return str(answer.json()["database"])


def cli(lab: Lab, *argv: str, urls: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """The operator's CLI given both coordinators, as `wgmesh lab env` sets it (the first on loopback), or
    given `urls`."""
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "WGMESH_URL": ",".join(urls or [lab.url, *lab.plan.coordinator_urls[1:]]),
        "WGMESH_TOKEN": lab.admin_token,
        "WGMESH_PIN": lab.pin,
        "COLUMNS": "200",
    }
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=60, check=False, env=env)


def running(lab: Lab, node: str) -> None:
    """Start `node` again if it is down, and wait until it does its job: how a test of the shared lab puts
    back what it stopped, whether it passed or not."""
    if not lab.alive(node):
        lab.start(node)
    lab.wait_started(node)


# Site 3 reaches the others through the relays only: UDP blocked, and TCP to the other gateways too.
@pytest.mark.lab(
    sites=3, db="postgresql", coordinators=2, relays=2, block_udp=[3], block_tcp_between=[(1, 3), (2, 3)]
)
class TestTwoCoordinatorsTwoRelays:
    def test_a_change_through_a_reaches_agents_on_b_and_survives_a_being_killed(
        self, shared_lab: Lab
    ) -> None:
        lab = shared_lab
        a_url, b_url = lab.plan.coordinator_url(A), lab.plan.coordinator_url(B)
        wait_until(
            lambda: followed(lab) == {"gw1": b_url, "gw2": a_url, "gw3": b_url},
            10,
            "agents spread over A and B",
        )
        shown = cli(lab, "status")
        assert shown.returncode == 0, shown.stderr
        assert f"agents follow {b_url} (gw1, gw3); {a_url} (gw2)" in shown.stdout
        try:
            # a node added through A reaches every agent, those long-polling B too (LISTEN/NOTIFY)
            key = add_static_peer(lab, "phone1", A)
            took = wait_until(lambda: everywhere(lab, key), 5, "phone1 on every gateway")
            print(f"a static peer added through A was on every gateway {took:.2f} s later")

            # A killed as soon as it has answered a change: its agents fail over to B, the change lands once
            key = add_static_peer(lab, "phone2", A)
            lab.kill("hub2", signal.SIGKILL)
            took = wait_until(lambda: everywhere(lab, key), 15, "phone2 on every gateway after A died")
            moved = wait_until(lambda: followed(lab)["gw2"] == b_url, 15, "gw2 following B")
            print(f"A killed: phone2 on every gateway after {took:.2f} s; gw2 reported B {moved:.2f} s later")
            nodes = [n["name"] for n in lab.api("GET", "/api/v1/nodes")["nodes"]]
            assert nodes.count("phone2") == 1
            made = [e for e in lab.api("GET", "/api/v1/audit")["entries"] if e["action"] == "node.create"]
            assert [e["target"] for e in made] == ["phone1", "phone2"]
            # the operator's CLI with A first in its list is answered by B
            listed = cli(lab, "nodes", "--json", urls=[a_url, lab.url])
            assert listed.returncode == 0, listed.stderr
            assert sorted(n["name"] for n in json.loads(listed.stdout)["nodes"]) == sorted(nodes)
        finally:
            running(lab, "hub2")
            for name in ("phone1", "phone2"):
                with contextlib.suppress(NotFoundError):
                    lab.api("DELETE", f"/api/v1/nodes/{name}")

    def test_relayed_pair_homed_on_different_relays_survives_one_relay_killed(
        self, shared_lab: Lab, tmp_path: Path
    ) -> None:
        lab = shared_lab
        one, three = lab.plan.site(1), lab.plan.site(3)
        relay1 = f"{lab.plan.hub_address(1)}:{RELAY_PORT}"
        relay2 = f"{lab.plan.hub_address(2)}:{RELAY_PORT}"
        try:
            # Homes as an outage leaves them: gw3 cut off from relay 1 and gw1 from relay 2 each move to the
            # other one, and stay there once both relays are reachable again (a home moves only for a
            # clearly nearer relay: wgmesh/agent/relay_choice.py).
            cut_off(lab, "gw3", relay1)
            cut_off(lab, "gw1", relay2)
            wait_until(
                lambda: home(lab, "gw1", "gw3") == relay1 and home(lab, "gw3", "gw1") == relay2, 15, "homes"
            )
        finally:
            for node in ("gw1", "gw3"):
                lab.exec(node, "nft", "delete", "table", "ip", CUT_TABLE)  # absent if the cut failed

        def both_relays_up() -> bool:
            for node in ("gw1", "gw3"):
                relays = {r.id: r.up for r in local_status(lab, node).relays}
                assert relays == {relay1: True, relay2: True}, (node, relays)
            return True

        wait_until(both_relays_up, 20, "gw1 and gw3 connected to both relays again")
        assert (home(lab, "gw1", "gw3"), home(lab, "gw3", "gw1")) == (relay1, relay2)
        # homed on different relays, they reach each other: each relay carries one direction
        assert ping_ok(lab, "vm1", three.vm_ip) and ping_ok(lab, "vm3", one.vm_ip)

        ping = ContinuousPing(lab, one.host, three.vm_ip, tmp_path / "ping.log")
        stream = TcpStream(lab, one, three, tmp_path / "stop")
        try:
            wait_until(lambda: len(ping.replies()) >= 10, 10, "the ping running")
            killed_at = time.time()
            lab.kill("relay", signal.SIGKILL)
            took = wait_until(lambda: home(lab, "gw1", "gw3") == relay2, 20, "gw1 sending through relay 2")
            settled = time.time()
            wait_until(lambda: ping.replies_since(settled) >= 20, 10, "two more seconds of replies")
            gap = ping.longest_gap(since=killed_at - 1)
            print(f"relay 1 killed: gw1 on relay 2 after {took:.2f} s; longest ping gap {gap:.2f} s")
            assert gap < scaled(10), f"relayed traffic stopped for {gap:.1f} s"
            total, _ = stream.finish()
            print(f"TCP stream carried {total / 1e6:.1f} MB intact across the relay's death")
            assert total > 1e6
        finally:
            ping.stop()
            stream.kill()
            running(lab, "relay")

    def test_agents_forward_without_the_database_and_everything_resumes(self, shared_lab: Lab) -> None:
        lab = shared_lab
        coordinators = (lab.process("hub"), lab.process("hub2"))
        lab.kill("db")
        try:
            for _ in range(3):
                assert ping_ok(lab, "vm1", lab.plan.site(2).vm_ip), "a direct pair stopped with the database"
                assert ping_ok(lab, "vm1", lab.plan.site(3).vm_ip), "a relayed pair stopped with the database"
            shown = cli(lab, "status")
            assert shown.returncode == 1
            lines = shown.stderr.strip().splitlines()
            assert len(lines) == 1 and "database is unavailable" in lines[0], shown.stderr
            with pytest.raises(StoreError, match="database is unavailable"):
                add_static_peer(lab, "phone3", B)
            assert [database_of(lab, n) for n in (A, B)] == ["unavailable", "unavailable"]
        finally:
            running(lab, "db")

        def healthy() -> bool:
            states = [database_of(lab, n) for n in (A, B)]
            assert states == ["ok", "ok"], states
            return True

        took = wait_until(healthy, 15, "both coordinators on the database again")
        assert (lab.process("hub"), lab.process("hub2")) == coordinators, "a coordinator was restarted"
        assert cli(lab, "status").returncode == 0
        # changes flow again, and their notifications: a change on A reaches agents on B (whose listener
        # may still be in its back-off, up to listener.BACKOFF_MAX = 5 s, when /healthz says ok)
        key = add_static_peer(lab, "phone3", A)
        try:
            wait_until(lambda: everywhere(lab, key), 5 + BACKOFF_MAX, "phone3 on every gateway")
        finally:
            lab.api("DELETE", "/api/v1/nodes/phone3")
        print(f"database back: both coordinators healthy {took:.2f} s after it accepted connections")


CUT_TABLE = "cutrelay"


def cut_off(lab: Lab, node: str, relay: str) -> None:
    """Refuse `node`'s TCP to `relay` (HOST:PORT) with resets: its connection there drops at once."""
    host, port = relay.rsplit(":", 1)
    script = (
        f"table ip {CUT_TABLE} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {host} tcp dport {port} reject with tcp reset\n  }}\n}}\n"
    )
    lab.exec(node, "nft", "-f", "-", input=script, check=True)


def local_status(lab: Lab, node: str) -> LocalStatus:
    """The agent's own status, from its unix socket (fresh, unlike its last report to the coordinator)."""
    return read_local_status(lab.plan.state_dir / node / SOCKET_NAME)


def home(lab: Lab, node: str, peer: str) -> str | None:
    """The relay `node` sends `peer`'s datagrams through, as the agent says now."""
    found = next((p for p in local_status(lab, node).peers if p.name == peer), None)
    assert found is not None and found.path == "relay", found
    return found.relay


@pytest.mark.lab(sites=2)
def test_a_sqlite_lab_moves_to_postgresql_and_its_agents_carry_on(lab: Lab) -> None:
    before = {n["name"]: (n["id"], n["overlay_ip"]) for n in lab.api("GET", "/api/v1/nodes")["nodes"]}
    agents = (lab.process("gw1"), lab.process("gw2"))
    down = lab.move_to_postgresql(coordinators=2)
    print(f"registry moved to PostgreSQL; no coordinator answered for {down:.1f} s")
    assert lab.state.db == "postgresql" and lab.plan.coordinators == 2
    after = {n["name"]: (n["id"], n["overlay_ip"]) for n in lab.api("GET", "/api/v1/nodes")["nodes"]}
    assert after == before
    assert ping_ok(lab, "vm1", lab.plan.site(2).vm_ip)
    # the agents, not restarted, follow the first coordinator (now on PostgreSQL); a change made on the
    # second, new one reaches them through the database's notifications
    key = add_static_peer(lab, "phone", 2)
    took = wait_until(
        lambda: everywhere(lab, key), 10, "a change made on the new coordinator on every gateway"
    )
    assert (lab.process("gw1"), lab.process("gw2")) == agents

    def reporting() -> bool:
        statuses = {s["node"]: s for s in lab.api("GET", "/api/v1/statuses")["statuses"]}
        assert {"gw1", "gw2"} <= statuses.keys(), statuses.keys()
        return True

    wait_until(reporting, 10, "both agents' status reports on PostgreSQL")
    print(f"a change on the second coordinator reached both agents in {took:.2f} s")
