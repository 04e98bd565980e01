"""`wgmesh-relay --metrics-listen`: the real relay process answers Prometheus scrapes with counters that
follow what synthetic nodes make it do (docs/metrics.md)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from metrics_harness import scrape, value
from relay_harness import RELAY_BIN, Keys, RelayProcess, free_port, nodes, relay_process, wait_until

from wgmesh.relay import protocol as p


@pytest.fixture(scope="module")
def metrics_relay(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, str]]:
    log = tmp_path_factory.mktemp("relay-metrics") / "relay.log"
    url = f"http://127.0.0.1:{free_port()}/metrics"
    listen = url.removeprefix("http://").removesuffix("/metrics")
    with relay_process(log, "--coordinator-key", keys.public, "--metrics-listen", listen) as relay:
        wait_until(lambda: "metrics listening" in relay.text(), 5, "the metrics listener")
        yield relay, url


def test_forwarded_frames_and_bytes_rise_with_traffic(
    metrics_relay: tuple[RelayProcess, str], keys: Keys
) -> None:
    relay, url = metrics_relay
    before = scrape(url)
    with nodes(relay, 2) as (a, b):
        a.hello(101, keys.ticket(101))
        b.hello(102, keys.ticket(102))
        during = scrape(url)
        assert value(during, "wgmesh_relay_connected_nodes") == 2
        for i in range(50):
            a.send(p.Data(102, bytes([i]) * 100))
        for _ in range(50):
            b.data()
        after = scrape(url)
    frames = value(after, "wgmesh_relay_forwarded_frames_total") - value(
        before, "wgmesh_relay_forwarded_frames_total"
    )
    sent = value(after, "wgmesh_relay_forwarded_bytes_total") - value(
        before, "wgmesh_relay_forwarded_bytes_total"
    )
    assert frames == 50
    assert sent >= 50 * 100
    assert (
        value(after, "wgmesh_relay_connections_total") >= value(before, "wgmesh_relay_connections_total") + 2
    )
    assert ("wgmesh_relay_queue_bytes", frozenset()) in after
    wait_until(lambda: value(scrape(url), "wgmesh_relay_connected_nodes") == 0, 5, "both nodes gone")


def test_drops_and_refusals_are_counted_by_reason(
    metrics_relay: tuple[RelayProcess, str], keys: Keys
) -> None:
    relay, url = metrics_relay
    before = scrape(url)
    with nodes(relay, 2) as (a, b):
        a.hello(111, keys.ticket(111))
        a.send(p.Data(999, b"nobody"), p.Data(111, b"myself"))
        assert a.alive()  # the frames were handled before the pong
        b.send(p.Hello(node_id=112, ticket=Keys().ticket(112)))  # another coordinator's ticket
        b.expect_close(p.CloseCode.BAD_TICKET)
    after = scrape(url)
    for reason in ("no_receiver", "to_self"):
        name = "wgmesh_relay_dropped_frames_total"
        assert value(after, name, reason=reason) == value(before, name, reason=reason) + 1, reason
    closes = "wgmesh_relay_closes_total"
    assert value(after, closes, code="bad_ticket") == value(before, closes, code="bad_ticket") + 1


def test_other_paths_are_not_found(metrics_relay: tuple[RelayProcess, str]) -> None:
    _, url = metrics_relay
    r = httpx.get(url.removesuffix("/metrics") + "/", timeout=5, trust_env=False)
    assert r.status_code == 404


def test_a_bad_metrics_address_is_one_line_with_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [RELAY_BIN, "--coordinator-key", Keys().public, "--metrics-listen", "nowhere"],
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines() == [
        "wgmesh-relay: --metrics-listen 'nowhere' must be HOST:PORT or off"
    ]
