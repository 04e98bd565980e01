"""/api/v1/openapi.json describes every route with schemas generated from the models; /healthz."""

from __future__ import annotations

from typing import Any

import pytest
from coordinator_harness import Api, version

# Every operation the API offers (docs/api.md); the document must describe each one.
OPERATIONS = {
    ("get", "/healthz"),
    ("post", "/api/v1/enroll"),
    ("get", "/api/v1/netmap"),
    ("post", "/api/v1/status"),
    ("put", "/api/v1/node/subnets"),
    ("post", "/api/v1/node/key"),
    ("post", "/api/v1/nodes/{node}/rotate-key"),
    ("get", "/api/v1/network"),
    ("patch", "/api/v1/network"),
    ("post", "/api/v1/tokens"),
    ("get", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{token_id}"),
    ("get", "/api/v1/nodes"),
    ("post", "/api/v1/nodes"),
    ("get", "/api/v1/nodes/{node}"),
    ("patch", "/api/v1/nodes/{node}"),
    ("delete", "/api/v1/nodes/{node}"),
    ("get", "/api/v1/nodes/{node}/status"),
    ("get", "/api/v1/nodes/{node}/config"),
    ("get", "/api/v1/statuses"),
    ("get", "/api/v1/routes"),
    ("get", "/api/v1/pairs"),
    ("put", "/api/v1/pairs/{a}/{b}"),
    ("get", "/api/v1/topology"),
    ("get", "/api/v1/prometheus/targets"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def document(coordinator: Api) -> dict[str, Any]:
    with coordinator.anonymous() as anon:
        r = anon.get("/api/v1/openapi.json")  # no credentials needed
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    return dict(r.json())


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_document_is_openapi_3_with_info(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"]
    assert document["info"]["version"]


def test_every_operation_is_described(document: dict[str, Any]) -> None:
    described = {(m, p) for p, item in document["paths"].items() for m in item if m in HTTP_METHODS}
    assert described >= OPERATIONS, OPERATIONS - described
    for path, item in document["paths"].items():
        for method, op in item.items():
            assert op["summary"], (method, path)
            assert op["responses"], (method, path)
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}, (method, path)


def test_every_described_operation_exists_on_the_server(coordinator: Api, document: dict[str, Any]) -> None:
    with coordinator.anonymous() as anon:
        for path, item in document["paths"].items():
            concrete = (
                path.replace("{token_id}", "1").replace("{node}", "x").replace("{a}", "x").replace("{b}", "y")
            )
            for method in item:
                r = anon.request(
                    method.upper(), concrete, json={} if method in ("post", "put", "patch") else None
                )
                assert r.status_code not in (404, 405) or r.json()["error"]["code"] not in (
                    "not_found",
                    "method_not_allowed",
                ), (method, path, r.text)


def test_schemas_come_from_the_models_and_every_reference_resolves(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("NetMap", "PeerConfig", "Node", "Route", "EnrollRequest", "EnrollResponse", "ErrorResponse"):
        assert name in schemas
    assert set(schemas["Route"]["properties"]["state"]["enum"]) == {
        "active",
        "standby",
        "conflict",
        "rejected",
        "pending",
    }
    assert {"public_key", "allowed_ips", "endpoints", "psk", "p2p", "mtu"} <= set(
        schemas["PeerConfig"]["properties"]
    )
    assert set(schemas["EnrollRequest"]["required"]) >= {"token", "name", "public_key"}
    assert {"mtu", "max_mtu"} <= set(schemas["Node"]["properties"])
    assert "mtu" in schemas["NetMap"]["properties"] and "mtu" in schemas["PeerConfig"]["properties"]
    assert {"mtu", "max_mtu"} <= set(schemas["StatusReport"]["properties"])
    assert "max_mtu" in schemas["EnrollRequest"]["properties"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def bounds(prop: dict[str, Any]) -> tuple[int, int]:
    """The integer range of a property that may be null (`anyOf: [integer, null]`) or not."""
    (schema,) = [s for s in prop.get("anyOf", [prop]) if s.get("type") == "integer"]
    return schema["minimum"], schema["maximum"]


def test_mtu_ranges_are_in_the_document(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for model in ("Network", "NetworkPatch", "NodePatch", "Node"):
        assert bounds(schemas[model]["properties"]["mtu"]) == (1280, 9000), model
    assert bounds(schemas["EnrollRequest"]["properties"]["max_mtu"]) == (576, 65535)
    assert bounds(schemas["StatusReport"]["properties"]["max_mtu"]) == (576, 65535)
    assert bounds(schemas["StatusReport"]["properties"]["mtu"]) == (576, 65535)
    assert schemas["NetMap"]["properties"]["mtu"]["default"] == 1420
    assert schemas["Network"]["properties"]["mtu"]["default"] == 1420


def test_request_bodies_and_errors_are_described(document: dict[str, Any]) -> None:
    enroll = document["paths"]["/api/v1/enroll"]["post"]
    assert enroll["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EnrollRequest"
    }
    assert "201" in enroll["responses"]
    assert "4XX" in enroll["responses"]
    assert "security" not in enroll
    assert document["paths"]["/api/v1/nodes"]["get"]["security"] == [{"admin": []}]
    assert document["paths"]["/api/v1/netmap"]["get"]["security"] == [{"node": []}]
    assert "304" in document["paths"]["/api/v1/netmap"]["get"]["responses"]
    assert set(document["components"]["securitySchemes"]) == {"admin", "node", "relay"}


def test_healthz_answers_without_credentials(coordinator: Api) -> None:
    with coordinator.anonymous() as anon:
        r = anon.get("/healthz")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok"
        assert body["version"] == version(anon) >= 1
