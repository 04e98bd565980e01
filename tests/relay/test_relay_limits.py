"""Issue 16, relay limits, against real `wgmesh-relay` processes: a client that never reads is dropped once
its queue is full (replies count too), the connection caps refuse the excess while a valid node still gets
through, and a ticket for another relay is refused."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from relay_harness import Keys, Node, RelayProcess, nodes, relay_process, wait_until

from wgmesh.relay import protocol as p
from wgmesh.relay.main import RESERVED_DESCRIPTORS

QUEUE = 64 * 1024
FLOOD = 64 * 1024 * 1024
"""Bytes of pings the non-reading client sends: a thousand times its queue, so answering them all shows."""


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def limited(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A plain-TCP relay with a small send queue and small connection caps."""
    log = tmp_path_factory.mktemp("limited") / "relay.log"
    with relay_process(
        log,
        "--plain-tcp",
        "--coordinator-key",
        keys.public,
        "--relay-id",
        "r1",
        "--queue-bytes",
        str(QUEUE),
        "--max-connections",
        "40",
        "--max-unauthenticated-per-source",
        "8",
        "--hello-timeout",
        "30",
    ) as r:
        yield r


def test_client_that_never_reads_is_dropped_and_relay_memory_stays_bounded(
    limited: RelayProcess, keys: Keys
) -> None:
    assert limited.proc is not None
    with nodes(limited, 2) as (a, b):
        a.hello(1, keys.ticket(1))
        b.hello(2, keys.ticket(2))
        before = rss_bytes(limited.proc.pid)
        flooder = Node(limited, rcvbuf=4096)
        flooder.hello(3, keys.ticket(3))
        # The pings go on the flooder's own connection: hand its socket over and never read from it.
        flooder.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ping = p.encode(p.Ping(1)) * 4096
        dropped = False
        sent = 0
        with contextlib.closing(flooder.sock):
            while sent < FLOOD:
                try:
                    flooder.sock.sendall(ping)
                except (ConnectionResetError, BrokenPipeError):
                    dropped = True
                    break
                sent += len(ping)
        assert dropped, f"the relay took {sent} bytes of pings from a client that reads nothing"
        # Its pongs were not kept: the relay grew by far less than what the flood asked it to answer.
        assert rss_bytes(limited.proc.pid) - before < FLOOD // 4
        # The relay still serves a valid relayed exchange.
        a.send(p.Data(2, b"still here"))
        assert b.data() == p.Data(1, b"still here")
        assert a.alive()
    wait_until(
        lambda: "node=3 " in limited.text() and "code=slow_reader" in limited.text(), 5, "the drop logged"
    )


def test_unauthenticated_connections_per_source_are_capped(limited: RelayProcess, keys: Keys) -> None:
    with nodes(limited, 8):
        # The 9th connection from this address without a hello is refused at once.
        with nodes(limited, 1) as (extra,):
            extra.expect_close(p.CloseCode.BUSY)
        # A node from another address still gets through.
        with nodes(limited, 1, source="127.0.0.2") as (valid,):
            assert valid.hello(10, keys.ticket(10, relays=["r1"])).node_id == 10
    # Once the idle ones are gone, this address may connect again.
    with nodes(limited, 1) as (again,):
        assert again.hello(13, keys.ticket(13, relays=["r1"])).node_id == 13


def test_connection_caps_refuse_the_excess_while_a_valid_node_gets_through(
    keys: Keys, tmp_path: Path
) -> None:
    with relay_process(
        tmp_path / "relay.log", "--plain-tcp", "--coordinator-key", keys.public, "--max-connections", "6"
    ) as relay:
        # Unauthenticated connections may hold at most half the slots, wherever they come from.
        with nodes(relay, 1, source="127.0.0.3") as (a,), nodes(relay, 2, source="127.0.0.4"):
            with nodes(relay, 1, source="127.0.0.5") as (extra,):
                extra.expect_close(p.CloseCode.BUSY)
            assert a.hello(1, keys.ticket(1)).node_id == 1
            # a's hello freed an unauthenticated slot.
            with nodes(relay, 1, source="127.0.0.5") as (valid,):
                assert valid.hello(2, keys.ticket(2)).node_id == 2
        # Six authenticated nodes fill the relay; the seventh connection is refused.
        full: list[Node] = []
        try:
            for i in range(6):
                full.append(Node(relay))
                full[-1].hello(20 + i, keys.ticket(20 + i))
            with nodes(relay, 1) as (extra,):
                extra.expect_close(p.CloseCode.BUSY)
            full[0].close()
            # A slot freed is a slot a valid node gets.
            wait_until(lambda: _authenticates(relay, keys, 30), 5, "a node authenticating in the freed slot")
            assert all(node.alive() for node in full[1:])
        finally:
            for node in full:
                node.close()


def _authenticates(relay: RelayProcess, keys: Keys, node_id: int) -> bool:
    with nodes(relay, 1) as (node,):
        node.send(p.Hello(node_id=node_id, ticket=keys.ticket(node_id)))
        return isinstance(node.recv(), p.HelloOk)


def test_ticket_for_another_relay_is_refused(limited: RelayProcess, keys: Keys) -> None:
    with nodes(limited, 2) as (a, b):
        a.send(p.Hello(node_id=11, ticket=keys.ticket(11, relays=["r2", "r3"])))
        close = a.expect_close(p.CloseCode.BAD_TICKET)
        assert "r1" in close.message
        assert b.hello(12, keys.ticket(12, relays=["r2", "r1"])).node_id == 12


def test_silent_connection_is_closed_at_the_hello_deadline(keys: Keys, tmp_path: Path) -> None:
    with (
        relay_process(
            tmp_path / "relay.log", "--plain-tcp", "--coordinator-key", keys.public, "--hello-timeout", "0.5"
        ) as relay,
        nodes(relay, 1) as (silent,),
    ):
        start = time.monotonic()
        silent.expect_close(p.CloseCode.NOT_AUTHENTICATED)
        assert time.monotonic() - start < 5


def test_connection_cap_fits_the_open_files_limit(keys: Keys, tmp_path: Path) -> None:
    """A relay whose open-files limit cannot hold its cap lowers the cap (and says so) rather than run out
    of descriptors with a valid node waiting; one that may raise its limit does."""
    probe = (
        "import resource, sys\n"
        "from wgmesh.relay.main import fit_descriptors\n"
        "from wgmesh.relay.server import RelayConfig\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])))\n"
        "config = fit_descriptors(RelayConfig(host='127.0.0.1', port=0, coordinator_key=sys.argv[3],"
        " max_connections=1000))\n"
        "print(config.max_connections, resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )

    def run(soft: int, hard: int) -> list[int]:
        done = subprocess.run(
            [sys.executable, "-c", probe, str(soft), str(hard), keys.public],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return [int(v) for v in done.stdout.split()]

    assert run(300, 300) == [300 - RESERVED_DESCRIPTORS, 300]  # lowered to fit
    assert run(300, 4096) == [1000, 1000 + RESERVED_DESCRIPTORS]  # the limit raised instead


def test_idle_sockets_count_against_the_caps_before_any_tls_handshake(keys: Keys, tmp_path: Path) -> None:
    """The relay's TLS starts per connection once admitted: sockets that never start a handshake are
    counted and the excess is refused at once, without TLS (no close frame can be sent), while a node from
    another address completes its handshake and authenticates."""
    with relay_process(
        tmp_path / "relay.log",
        "--coordinator-key",
        keys.public,
        "--relay-id",
        "r1",
        "--max-unauthenticated-per-source",
        "4",
        "--hello-timeout",
        "30",
    ) as relay:
        assert relay.pin is not None
        idle = [socket.create_connection(("127.0.0.1", relay.port), timeout=5) for _ in range(4)]
        try:
            with (
                socket.create_connection(("127.0.0.1", relay.port), timeout=5) as extra,
                contextlib.suppress(ConnectionResetError),
            ):
                assert extra.recv(1) == b""  # dropped without a byte
            with nodes(relay, 1, source="127.0.0.2") as (valid,):
                assert valid.hello(5, keys.ticket(5, relays=["r1"])).node_id == 5
        finally:
            for sock in idle:
                sock.close()
        wait_until(lambda: "code=busy" in relay.text(), 5, "the refusal logged")
