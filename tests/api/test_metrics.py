"""GET /metrics on the coordinator (docs/metrics.md) against what the API shows, and the Prometheus HTTP
service discovery at GET /api/v1/prometheus/targets."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Coordinator,
    assert_error,
    coordinator_command,
    create_token,
    enroll,
    enroll_body,
    free_port,
    post_status,
    running,
    version,
    wait_until,
)
from metrics_harness import Samples, check, value


def scrape(coordinator: Api) -> Samples:
    with coordinator.scraper() as anon:  # no credentials: on its own listener instead
        return check(anon.get("/metrics"))


def labelled(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


@pytest.fixture(scope="module")
def token(admin: httpx.Client) -> str:
    return str(create_token(admin, reusable=True)["token"])


def test_enrollments_and_status_reports_move_the_node_counts(
    coordinator: Api, admin: httpx.Client, token: str
) -> None:
    before = scrape(coordinator)
    with coordinator.anonymous() as anon:
        a = enroll(anon, token, "m-gw-a", subnets=["10.61.0.0/24"])
        enroll(anon, token, "m-host-b")
        refused = anon.post("/api/v1/enroll", json=enroll_body("wgt_1.nope", "m-gw-c"))
    assert_error(refused, 401, "invalid_token")
    after = scrape(coordinator)
    assert value(after, "wgmesh_enrollments_total", result="ok") == (
        value(before, "wgmesh_enrollments_total", result="ok") + 2
    )
    assert value(after, "wgmesh_enrollments_total", result="invalid_token") == (
        value(before, "wgmesh_enrollments_total", result="invalid_token") + 1
    )
    nodes = admin.get("/api/v1/nodes").json()["nodes"]
    assert value(after, "wgmesh_nodes", state="offline") + value(
        after, "wgmesh_nodes", state="online"
    ) == len(nodes)
    assert value(after, "wgmesh_node_online", node="m-gw-a", role="gateway") == 0
    assert value(after, "wgmesh_node_online", node="m-host-b", role="node") == 0

    post_status(coordinator, a, {"endpoints": ["198.18.0.11:51820"]})
    reported = scrape(coordinator)
    assert value(reported, "wgmesh_node_online", node="m-gw-a", role="gateway") == 1
    assert value(reported, "wgmesh_nodes", state="online") == value(after, "wgmesh_nodes", state="online") + 1
    assert (
        value(reported, "wgmesh_nodes", state="offline") == value(after, "wgmesh_nodes", state="offline") - 1
    )
    assert value(reported, "wgmesh_node_last_seen_timestamp_seconds", node="m-gw-a") > 0
    assert value(reported, "wgmesh_registry_version") == version(admin)


def test_routes_are_counted_by_verdict(coordinator: Api, admin: httpx.Client, token: str) -> None:
    allowing = create_token(admin, reusable=True, allow_subnets=["10.70.0.0/16"])["token"]
    with coordinator.anonymous() as anon:
        enroll(anon, allowing, "r-gw-1", subnets=["10.70.0.0/16"], site="r-vpc")
        # the same prefix from the same site: standby, once approved
        enroll(anon, allowing, "r-gw-2", subnets=["10.70.0.0/16"], site="r-vpc")
        enroll(anon, allowing, "r-gw-3", subnets=["10.70.5.0/24"])  # inside it: conflict
        enroll(anon, token, "r-gw-4", subnets=["10.71.0.0/16"])  # no rule allows it: pending
    r = admin.post("/api/v1/nodes/r-gw-2/routes/approve", json={"prefix": "10.70.0.0/16"})
    assert r.status_code == 200, r.text
    routes = admin.get("/api/v1/routes").json()["routes"]
    samples = scrape(coordinator)
    assert value(samples, "wgmesh_routes", state="pending") >= 1
    for state in ("active", "standby", "conflict", "rejected", "pending"):
        assert value(samples, "wgmesh_routes", state=state) == sum(r["state"] == state for r in routes), state
    assert value(samples, "wgmesh_routes", state="conflict") >= 1
    assert value(samples, "wgmesh_routes", state="standby") >= 1


def test_latency_is_labelled_with_route_templates_not_paths(
    coordinator: Api, admin: httpx.Client, token: str
) -> None:
    with coordinator.anonymous() as anon:
        enroll(anon, token, "lat-node-7")
        assert anon.get("/no/such/lat-node-7").status_code == 404
    assert admin.get("/api/v1/nodes/lat-node-7").status_code == 200
    assert admin.get("/api/v1/nodes/lat-node-8").status_code == 404
    samples = scrape(coordinator)
    name = "wgmesh_http_request_duration_seconds_count"
    assert value(samples, name, method="GET", route="/api/v1/nodes/{node}", status="200") >= 1
    assert value(samples, name, method="GET", route="/api/v1/nodes/{node}", status="404") >= 1
    assert value(samples, name, method="POST", route="/api/v1/enroll", status="201") >= 1
    assert value(samples, name, method="GET", route="unmatched", status="404") >= 1
    buckets = labelled(samples, "wgmesh_http_request_duration_seconds_bucket")
    assert buckets and all(set(b) == {"method", "route", "status", "le"} for b in buckets)
    for labels in labelled(samples, name):
        assert "lat-node" not in labels["route"], labels


def test_long_polls_are_counted_while_they_wait(coordinator: Api, token: str) -> None:
    with coordinator.anonymous() as anon:
        node = enroll(anon, token, "poller")
    since = node.first_netmap["version"]
    done = threading.Event()

    def poll() -> None:
        with coordinator.node(node.credential) as client:
            client.get("/api/v1/netmap", params={"since": since, "wait": 20}, timeout=30)
        done.set()

    threading.Thread(target=poll, daemon=True).start()
    wait_until(lambda: value(scrape(coordinator), "wgmesh_netmap_long_polls") >= 1, 5, "a waiting long-poll")
    with coordinator.anonymous() as anon:
        enroll(anon, token, "poll-waker")  # bumps the version: the poll answers
    assert done.wait(5)
    wait_until(lambda: value(scrape(coordinator), "wgmesh_netmap_long_polls") == 0, 5, "no waiting long-poll")


def targets(admin: httpx.Client) -> dict[str, dict[str, Any]]:
    """The service discovery answer, a list of target groups, by node name."""
    r = admin.get("/api/v1/prometheus/targets")
    assert r.status_code == 200, r.text
    groups = r.json()
    assert isinstance(groups, list)
    return {g["labels"]["node"]: g for g in groups}


def test_service_discovery_lists_reported_metrics_addresses_of_the_nodes_own(
    coordinator: Api, admin: httpx.Client, token: str
) -> None:
    """Listed: an address of the node's own (eth0, public, overlay) it reported; never one of its choosing
    elsewhere (issue 16), nor one a Prometheus server elsewhere cannot reach."""
    with coordinator.anonymous() as anon:
        one = enroll(anon, token, "sd-one")
        local = enroll(anon, token, "sd-local")
        enroll(anon, token, "sd-silent")
        elsewhere = enroll(anon, token, "sd-elsewhere")
        inside = enroll(anon, token, "sd-overlay")
    post_status(coordinator, one, {"eth0_ip": "198.18.0.11", "metrics": "198.18.0.11:9586"})
    post_status(coordinator, local, {"metrics": "127.0.0.1:9586"})  # unreachable from a Prometheus server
    post_status(coordinator, elsewhere, {"eth0_ip": "198.18.0.12", "metrics": "10.0.0.5:6379"})
    address = inside.first_netmap["overlay_ip"]
    post_status(coordinator, inside, {"eth0_ip": "198.18.0.13", "metrics": f"{address}:9586"})
    by_node = targets(admin)
    overlay = admin.get("/api/v1/nodes/sd-one").json()["overlay_ip"]
    assert by_node["sd-one"] == {
        "targets": ["198.18.0.11:9586"],
        "labels": {"node": "sd-one", "overlay_ip": overlay},
    }
    assert by_node["sd-overlay"]["targets"] == [f"{address}:9586"]
    assert not {"sd-local", "sd-silent", "sd-elsewhere"} & set(by_node)
    # Its own eth0 address instead, and it is listed.
    post_status(coordinator, elsewhere, {"eth0_ip": "198.18.0.12", "metrics": "198.18.0.12:9586"})
    assert targets(admin)["sd-elsewhere"]["targets"] == ["198.18.0.12:9586"]


def test_service_discovery_needs_the_admin_token(coordinator: Api, token: str) -> None:
    with coordinator.anonymous() as anon:
        node = enroll(anon, token, "sd-intruder")
        assert_error(anon.get("/api/v1/prometheus/targets"), 401, "missing_credentials")
    with coordinator.node(node.credential) as client:
        assert_error(client.get("/api/v1/prometheus/targets"), 401)


def test_a_bad_metrics_address_is_refused(coordinator: Api, token: str) -> None:
    with coordinator.anonymous() as anon:
        node = enroll(anon, token, "sd-bad")
    with coordinator.node(node.credential) as client:
        assert_error(client.post("/api/v1/status", json={"metrics": "prometheus.example:9586"}), 422)


@pytest.fixture(scope="module")
def with_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    tmp: Path = tmp_path_factory.mktemp("coordinator-relay")
    relay = f"127.0.0.1:{free_port()}"
    with running(Coordinator(db=tmp / "c.db", log=tmp / "c.log", extra=["--relay", relay])) as c:
        yield c


def test_embedded_relay_metrics_appear_on_the_coordinator(with_relay: Coordinator) -> None:
    samples = scrape(with_relay)
    assert value(samples, "wgmesh_relay_connected_nodes") == 0
    assert ("wgmesh_relay_forwarded_frames_total", frozenset()) in samples
    assert value(samples, "wgmesh_relay_dropped_frames_total", reason="queue_full") == 0
    assert ("wgmesh_registry_version", frozenset()) in samples


def test_the_api_port_does_not_serve_metrics(coordinator: Api) -> None:
    # /metrics names every node: whoever reaches the API must not read it (docs/security.md)
    with coordinator.anonymous() as anon:
        assert_error(anon.get("/metrics"), 404, "not_found")


def test_the_metrics_listener_serves_metrics_and_only_them(with_relay: Coordinator) -> None:
    assert with_relay.metrics_url.startswith("http://127.0.0.1:")
    with with_relay.anonymous() as anon:
        assert_error(anon.get("/metrics"), 404, "not_found")
    with with_relay.scraper() as scraper:
        assert scraper.get("/metrics").status_code == 200
        assert scraper.get("/api/v1/nodes").status_code == 404  # nothing but the scrape there
        assert scraper.get("/healthz").status_code == 404


def test_metrics_listen_off_and_a_taken_port(tmp_path: Path) -> None:
    with running(
        Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log", extra=["--metrics-listen", "off"])
    ):
        pass
    assert "metrics listening" not in (tmp_path / "c.log").read_text()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            coordinator_command(tmp_path / "c.db", "--metrics-listen", f"127.0.0.1:{port}"),
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "WGMESH_ADMIN_TOKEN": "admin-token-0123456789"},
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"wgmesh-coordinator: --metrics-listen 127.0.0.1:{port}: Address already in use"
    )
