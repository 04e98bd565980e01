"""Health from real probes (agent/path_control.py, agent/health.py): two path controllers on loopback; a
watched peer is probed twice a second even when idle, is `up` while it answers and `down` once it stops."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from wgmesh import keys
from wgmesh.agent.path_control import IDLE_PROBE_INTERVAL, WATCH_INTERVAL, PathController
from wgmesh.agent.wgstate import PeerStats
from wgmesh.lab.wait import wait_until
from wgmesh.models import NetMap, PeerConfig
from wgmesh.values import Endpoint, NodeId


def free_pair() -> int:
    """A port P with P+1 free too (WireGuard's port and the probe port)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                try:
                    b.bind(("0.0.0.0", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port pair")


def netmap_of(me: int, my_port: int, other: int, other_port: int, other_key: str) -> NetMap:
    return NetMap(
        version=1,
        node_id=NodeId(me),
        name=f"gw{me}",
        overlay_ip=f"100.96.0.{me}",
        overlay_cidr="100.96.0.0/16",  # type: ignore[arg-type]
        listen_port=my_port,
        p2p="auto",
        peers=[
            PeerConfig(
                node_id=NodeId(other),
                name=f"gw{other}",
                public_key=other_key,
                overlay_ip=f"100.96.0.{other}",
                allowed_ips=[f"100.96.0.{other}/32"],  # type: ignore[list-item]
                endpoints=[Endpoint("127.0.0.1", other_port)],
            )
        ],
    )


@pytest.fixture
def pair() -> Iterator[tuple[PathController, PathController, NetMap, NetMap]]:
    ka, kb = keys.generate_keypair(), keys.generate_keypair()
    pa, pb = free_pair(), free_pair()
    a, b = PathController(pa), PathController(pb)
    map_a = netmap_of(1, pa, 2, pb, kb.public_key)
    map_b = netmap_of(2, pb, 1, pa, ka.public_key)
    a.follow(map_a, ka)
    b.follow(map_b, kb)
    a.start(1)
    b.start(2)
    try:
        yield a, b, map_a, map_b
    finally:
        a.stop()
        b.stop()


def test_a_watched_idle_peer_is_up_while_it_answers_and_down_once_it_stops(
    pair: tuple[PathController, PathController, NetMap, NetMap],
) -> None:
    a, b, map_a, _ = pair
    a.watched = frozenset({2})
    idle = {map_a.peers[0].public_key: PeerStats(0, 0, None, None)}  # no traffic: never "busy"

    def ticked_state() -> str | None:
        a.tick(map_a, idle)
        found = a.health(2)
        return found.state if found else None

    wait_until(lambda: ticked_state() == "up", 10, "gw2 up")
    # Idle, yet probed about twice a second: answers keep coming, far more often than the 5 s of idle peers.
    answers: list[float] = []

    def four_answers() -> bool:
        ticked_state()
        last = a._peers[2].last_answer
        if last is not None and (not answers or last != answers[-1]):
            answers.append(last)
        return len(answers) >= 5

    wait_until(four_answers, 20, "answers")
    spacing = (answers[-1] - answers[0]) / (len(answers) - 1)
    assert spacing < IDLE_PROBE_INTERVAL / 2, f"{spacing:.2f} s between answers (watch: {WATCH_INTERVAL} s)"
    # gw2's agent dies: its probe socket closes.
    b.net.call(b.prober.close)
    wait_until(lambda: ticked_state() == "down", 15, "gw2 down")
    last = a._peers[2].last_answer
    assert last is not None and time.monotonic() - last >= 2.5  # never before the health deadline
