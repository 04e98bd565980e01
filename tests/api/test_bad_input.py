"""Every bad input gets the exact 4xx, the one error shape, a reason, and changes nothing."""

from __future__ import annotations

import base64
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from coordinator_harness import (
    Api,
    Coordinator,
    Enrolled,
    assert_error,
    create_token,
    enroll,
    enroll_body,
    running,
    state,
    unchanged,
)

from wgmesh import keys

BACKENDS = ("sqlite", "postgresql")
"""Run on both databases, through the same code (tests/api/conftest.py)."""

MIB = 1024 * 1024


def b64(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def twin_spelling(key: str) -> str:
    """The same 32 bytes spelled with the unused low bits of the last base64 character set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(key[-2])
    twin = key[:-2] + alphabet[last ^ 1] + "="
    assert base64.b64decode(twin) == base64.b64decode(key)
    return twin


@pytest.fixture(scope="module")
def mesh(coordinator: Api, admin: httpx.Client) -> dict[str, Enrolled]:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        return {
            "gw-a": enroll(anon, token, "gw-a", subnets=["10.1.0.0/16"]),
            "gw-b": enroll(anon, token, "gw-b", subnets=["10.2.0.0/16"]),
        }


@pytest.fixture
def anon(coordinator: Api) -> Iterator[httpx.Client]:
    with coordinator.anonymous() as client:
        yield client


@pytest.fixture
def node_a(coordinator: Api, mesh: dict[str, Enrolled]) -> Iterator[httpx.Client]:
    with coordinator.node(mesh["gw-a"].credential) as client:
        yield client


# --- enrollment -------------------------------------------------------------------------------------------

BAD_ENROLLMENTS: list[tuple[str, dict[str, Any], int, str, str]] = [
    # id, fields replacing the valid ones, status, code, words the message must contain
    ("name-slash", {"name": "gw/c"}, 422, "invalid", "hostname label"),
    ("name-dotdot", {"name": ".."}, 422, "invalid", "hostname label"),
    ("name-nul", {"name": "gw\x00c"}, 422, "invalid", "hostname label"),
    ("name-uppercase", {"name": "GW-C"}, 422, "invalid", "hostname label"),
    ("name-too-long", {"name": "c" * 64}, 422, "invalid", "hostname label"),
    ("name-empty", {"name": ""}, 422, "invalid", "hostname label"),
    ("name-missing", {"name": None}, 422, "invalid", "name"),
    ("key-not-base64", {"public_key": "this is not base64!"}, 422, "invalid", "not valid base64"),
    ("key-31-bytes", {"public_key": b64(31)}, 422, "invalid", "must be 32 bytes, got 31"),
    ("key-33-bytes", {"public_key": b64(33)}, 422, "invalid", "must be 32 bytes, got 33"),
    ("key-empty", {"public_key": ""}, 422, "invalid", "got 0"),
    ("cidr-host-bits", {"subnets": ["10.3.0.5/16"]}, 422, "invalid", "did you mean 10.3.0.0/16"),
    ("cidr-v6-host-bits", {"subnets": ["fd00:3::1/64"]}, 422, "invalid", "did you mean fd00:3::/64"),
    ("cidr-no-length", {"subnets": ["10.3.0.0"]}, 422, "invalid", "not a CIDR prefix"),
    ("cidr-bad-length", {"subnets": ["10.3.0.0/33"]}, 422, "invalid", "not a valid CIDR prefix"),
    ("cidr-garbage", {"subnets": ["banana"]}, 422, "invalid", "banana"),
    (
        "cidr-in-overlay",
        {"subnets": ["100.96.7.0/24"]},
        422,
        "invalid_route",
        "overlay network 100.96.0.0/16",
    ),
    ("cidr-holds-overlay", {"subnets": ["100.64.0.0/10"]}, 422, "invalid_route", "overlay network"),
    ("cidr-self-overlap", {"subnets": ["10.3.0.0/16", "10.3.1.0/24"]}, 422, "invalid_route", "10.3.0.0/16"),
    ("cidr-twice", {"subnets": ["10.3.0.0/16", "10.3.0.0/16"]}, 422, "invalid_route", "listed twice"),
    ("cidr-loopback", {"subnets": ["127.0.0.0/8"]}, 422, "invalid_route", "loopback"),
    ("port-zero", {"listen_port": 0}, 422, "invalid", "listen_port"),
    ("endpoint-bad", {"endpoints": ["gw-c:51820"]}, 422, "invalid", "endpoint"),
    ("unknown-field", {"admin": True}, 422, "invalid", "admin"),
    ("token-empty", {"token": ""}, 422, "invalid", "token"),
    ("token-garbage", {"token": "let me in"}, 401, "invalid_token", "not valid"),
]


@pytest.mark.parametrize(
    ("fields", "status", "code", "words"),
    [case[1:] for case in BAD_ENROLLMENTS],
    ids=[case[0] for case in BAD_ENROLLMENTS],
)
def test_bad_enrollment(
    admin: httpx.Client,
    anon: httpx.Client,
    mesh: dict[str, Enrolled],
    fields: dict[str, Any],
    status: int,
    code: str,
    words: str,
) -> None:
    token = create_token(admin)  # one-time: a refused request must not use it up
    body = {**enroll_body(token["token"], "gw-c"), **fields}
    body = {k: v for k, v in body.items() if v is not None}
    with unchanged(admin):
        error = assert_error(anon.post("/api/v1/enroll", json=body), status, code)
    assert words in error["message"]


@pytest.mark.parametrize("which", ["name", "key", "key-twin-spelling"])
def test_duplicate_name_or_key_is_refused(
    admin: httpx.Client, anon: httpx.Client, mesh: dict[str, Enrolled], which: str
) -> None:
    token = create_token(admin)
    taken = mesh["gw-a"]
    body = enroll_body(token["token"], "gw-c")
    if which == "name":
        body["name"] = taken.name
        status, code, words = 409, "duplicate_name", "'gw-a' already exists"
    elif which == "key":
        body["public_key"] = taken.keypair.public_key
        status, code, words = 409, "duplicate_key", keys.fingerprint(taken.keypair.public_key)
    else:
        body["public_key"] = twin_spelling(taken.keypair.public_key)
        status, code, words = 422, "invalid", "canonical"
    with unchanged(admin):
        error = assert_error(anon.post("/api/v1/enroll", json=body), status, code)
    assert words in error["message"]
    assert taken.keypair.private_key not in error["message"]


# --- admin changes to nodes, pairs and the network ---------------------------------------------------------

BAD_PATCHES: list[tuple[str, dict[str, Any], str]] = [
    ("cidr-host-bits", {"subnets": ["10.1.0.5/16"]}, "did you mean 10.1.0.0/16"),
    ("cidr-invalid", {"subnets": ["10.1.0.0/40"]}, "not a valid CIDR prefix"),
    ("cidr-in-overlay", {"subnets": ["100.96.0.0/24"]}, "overlay network"),
    ("cidr-self-overlap", {"subnets": ["10.1.0.0/16", "10.0.0.0/8"]}, "overlaps"),
    ("subnets-not-a-list", {"subnets": "10.1.0.0/16"}, "subnets"),
    ("p2p-unknown", {"p2p": "on"}, "p2p"),
    ("tag-uppercase", {"tags": ["Prod"]}, "tag"),
    ("unknown-field", {"name": "gw-z"}, "name"),
]


@pytest.mark.parametrize(("body", "words"), [c[1:] for c in BAD_PATCHES], ids=[c[0] for c in BAD_PATCHES])
def test_bad_node_patch(
    admin: httpx.Client, mesh: dict[str, Enrolled], body: dict[str, Any], words: str
) -> None:
    with unchanged(admin):
        error = assert_error(admin.patch("/api/v1/nodes/gw-a", json=body), 422)
    assert words in error["message"]


@pytest.mark.parametrize(
    ("subnets", "words"),
    [(["10.1.0.5/16"], "did you mean 10.1.0.0/16"), (["100.96.3.0/24"], "overlay"), (["x"], "not a CIDR")],
)
def test_bad_own_subnets_from_a_node(
    admin: httpx.Client, node_a: httpx.Client, subnets: list[str], words: str
) -> None:
    with unchanged(admin):
        error = assert_error(node_a.put("/api/v1/node/subnets", json={"subnets": subnets}), 422)
    assert words in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/nodes/gw-z", None),
        ("PATCH", "/api/v1/nodes/gw-z", {"p2p": "off"}),
        ("DELETE", "/api/v1/nodes/gw-z", None),
        ("GET", "/api/v1/nodes/gw-z/status", None),
        ("DELETE", "/api/v1/nodes/GW-A", None),  # names are not case-folded
        ("DELETE", "/api/v1/nodes/%2E%2E", None),  # '..' that the client does not resolve
        ("DELETE", "/api/v1/nodes/%00", None),
        ("DELETE", "/api/v1/nodes/424242", None),
        ("DELETE", "/api/v1/nodes/99999999999999999999999", None),  # no id that large
        ("DELETE", "/api/v1/nodes/%C2%B2", None),  # a digit to str.isdigit, not to int()
        ("PUT", "/api/v1/pairs/gw-a/gw-z", {"p2p": "off"}),
    ],
)
def test_unknown_node_is_404(
    admin: httpx.Client, mesh: dict[str, Enrolled], method: str, path: str, body: dict[str, Any] | None
) -> None:
    with unchanged(admin):
        assert_error(admin.request(method, path, json=body), 404, "unknown_node")


def test_a_path_with_a_slash_in_the_name_is_no_route(admin: httpx.Client, mesh: dict[str, Enrolled]) -> None:
    with unchanged(admin):
        assert_error(admin.delete("/api/v1/nodes/gw-a/extra"), 404, "not_found")
        assert_error(admin.put("/api/v1/nodes/gw-a", json={}), 405, "method_not_allowed")
        assert_error(admin.get("/api/v1/nodes/gw-a%2Fx/y"), 404, "not_found")
        assert_error(admin.get("/api/v1/no-such-thing"), 404, "not_found")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/pairs/gw-a/gw-a", {"p2p": "off"}, 422),
        ("/api/v1/pairs/gw-a/gw-b", {"p2p": "sometimes"}, 422),
        ("/api/v1/pairs/gw-a/gw-b", {}, 422),
    ],
)
def test_bad_pair_override(
    admin: httpx.Client, mesh: dict[str, Enrolled], path: str, body: dict[str, Any], status: int
) -> None:
    with unchanged(admin):
        assert_error(admin.put(path, json=body), status)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "gw-s"},  # neither generate_keys nor a key
        {"name": "gw-s", "generate_keys": True, "public_key": keys.generate_keypair().public_key},
        {"name": "gw-s", "public_key": b64(31)},
        {"name": "GW-S", "generate_keys": True},
        {"name": "gw-s", "generate_keys": True, "subnets": ["10.1.0.1/16"]},
    ],
)
def test_bad_static_peer(admin: httpx.Client, mesh: dict[str, Enrolled], body: dict[str, Any]) -> None:
    with unchanged(admin):
        assert_error(admin.post("/api/v1/nodes", json=body), 422)


def test_static_peer_with_a_taken_name_or_key(admin: httpx.Client, mesh: dict[str, Enrolled]) -> None:
    with unchanged(admin):
        assert_error(
            admin.post("/api/v1/nodes", json={"name": "gw-a", "generate_keys": True}), 409, "duplicate_name"
        )
        body = {"name": "gw-s", "public_key": mesh["gw-b"].keypair.public_key}
        assert_error(admin.post("/api/v1/nodes", json=body), 409, "duplicate_key")


@pytest.mark.parametrize("body", [{"p2p": "never"}, {"listen_port": 0}, {"overlay_cidr": "10.0.0.0/8"}])
def test_bad_network_patch(admin: httpx.Client, body: dict[str, Any]) -> None:
    with unchanged(admin):
        assert_error(admin.patch("/api/v1/network", json=body), 422, "invalid")


# --- credentials -------------------------------------------------------------------------------------------

ADMIN_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/nodes", None),
    ("POST", "/api/v1/tokens", {"reusable": True}),
    ("GET", "/api/v1/tokens", None),
    ("DELETE", "/api/v1/tokens/1", None),
    ("POST", "/api/v1/nodes", {"name": "gw-s", "generate_keys": True}),
    ("PATCH", "/api/v1/nodes/gw-a", {"subnets": []}),
    ("DELETE", "/api/v1/nodes/gw-b", None),
    ("GET", "/api/v1/routes", None),
    ("PUT", "/api/v1/pairs/gw-a/gw-b", {"p2p": "off"}),
    ("PATCH", "/api/v1/network", {"p2p": "off"}),
    ("GET", "/api/v1/topology", None),
]
NODE_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/netmap", None),
    ("POST", "/api/v1/status", {"endpoints": ["198.51.100.1:51820"]}),
    ("PUT", "/api/v1/node/subnets", {"subnets": []}),
]


def wrong_admin_headers(mesh: dict[str, Enrolled]) -> dict[str, dict[str, str]]:
    return {
        "missing": {},
        "empty-bearer": {"Authorization": "Bearer"},
        "basic-scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "wrong-token": {"Authorization": "Bearer admin-token-0123456780"},
        "token-prefix": {"Authorization": "Bearer admin-token"},
        "node-credential": {"Authorization": f"Bearer {mesh['gw-a'].credential}"},
    }


def wrong_node_headers(mesh: dict[str, Enrolled]) -> dict[str, dict[str, str]]:
    a, b = mesh["gw-a"].credential, mesh["gw-b"].credential
    a_id, a_secret = a.split(".", 1)
    b_id, _ = b.split(".", 1)
    return {
        "missing": {},
        "basic-scheme": {"Authorization": f"Basic {a}"},
        "admin-token": {"Authorization": "Bearer admin-token-0123456789"},
        "garbage": {"Authorization": "Bearer wgn_x"},
        "wrong-secret": {
            "Authorization": f"Bearer {a_id}.{a_secret[:-1]}{'A' if a_secret[-1] != 'A' else 'B'}"
        },
        "other-nodes-id": {"Authorization": f"Bearer {b_id}.{a_secret}"},
        "unknown-node": {"Authorization": f"Bearer wgn_424242.{a_secret}"},
    }


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_admin_calls_need_the_admin_token(
    coordinator: Api,
    admin: httpx.Client,
    mesh: dict[str, Enrolled],
    method: str,
    path: str,
    body: Any,
) -> None:
    with unchanged(admin), coordinator.anonymous() as client:
        for what, headers in wrong_admin_headers(mesh).items():
            r = client.request(method, path, json=body, headers=headers)
            error = assert_error(r, 401)
            expected = "missing_credentials" if what in ("missing", "empty-bearer", "basic-scheme") else None
            if expected:
                assert error["code"] == expected, (what, error)


@pytest.mark.parametrize(("method", "path", "body"), NODE_CALLS)
def test_node_calls_need_a_valid_node_credential(
    coordinator: Api,
    admin: httpx.Client,
    mesh: dict[str, Enrolled],
    method: str,
    path: str,
    body: Any,
) -> None:
    with unchanged(admin), coordinator.anonymous() as client:
        for what, headers in wrong_node_headers(mesh).items():
            r = client.request(method, path, json=body, headers=headers)
            assert_error(r, 401)
            assert "wgn_" not in r.text, what  # credentials are never echoed


# --- oversized bodies ----------------------------------------------------------------------------------------


def padded_json(size: int, body: dict[str, Any] | None = None) -> bytes:
    """A valid JSON object of exactly `size` bytes (whitespace padding)."""
    text = httpx.Request("POST", "/", json=body or {}).content
    assert text.endswith(b"}")
    return text[:-1] + b" " * (size - len(text)) + b"}"


@pytest.mark.parametrize("path", ["/api/v1/tokens", "/api/v1/enroll"])
def test_body_over_a_mebibyte_with_content_length_is_413(admin: httpx.Client, path: str) -> None:
    content = padded_json(MIB + 1)
    with unchanged(admin):
        r = admin.post(path, content=content, headers={"Content-Type": "application/json"})
        assert r.request.headers["content-length"] == str(MIB + 1)
        assert_error(r, 413, "payload_too_large")


def test_a_declared_oversized_body_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    # About the server on its socket (the answer comes before the body is read): the real process.
    with running(Coordinator(db=tmp_path / "c.db", log=tmp_path / "c.log")) as real, real.admin() as admin:
        head = (
            f"POST /api/v1/enroll HTTP/1.1\r\nHost: 127.0.0.1:{real.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {64 * MIB}\r\n\r\n"
        )
        context = real.verify
        assert isinstance(context, ssl.SSLContext)
        with (
            unchanged(admin),
            socket.create_connection(("127.0.0.1", real.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            sock.sendall(head.encode())  # and not one byte of the body
            received = b""
            while b"}}" not in received:  # the end of the JSON error body
                chunk = sock.recv(65536)  # the 5 s socket timeout bounds each wait
                if not chunk:
                    break
                received += chunk
    answer = received.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413 "), answer
    assert '"payload_too_large"' in answer


@pytest.mark.parametrize("path", ["/api/v1/tokens", "/api/v1/enroll"])
def test_body_over_a_mebibyte_streamed_in_chunks_is_413(admin: httpx.Client, path: str) -> None:
    content = padded_json(MIB + 1)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(content), 64 * 1024):
            yield content[i : i + 64 * 1024]

    with unchanged(admin):
        r = admin.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert r.request.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "payload_too_large")


def test_a_status_report_may_be_four_mebibytes_and_no_more(
    node_a: httpx.Client, anon: httpx.Client, admin: httpx.Client
) -> None:
    # 10,000 peers of ~270 bytes (StatusReport's bound) is ~2.7 MB: a report has 4 MiB, other calls 1 MiB.
    report = {"endpoints": [], "peers": []}
    headers = {"Content-Type": "application/json"}
    r = node_a.post("/api/v1/status", content=padded_json(2 * MIB, report), headers=headers)
    assert r.status_code == 200, r.text
    with unchanged(admin):
        too_big = padded_json(4 * MIB + 1, report)
        assert_error(
            node_a.post("/api/v1/status", content=too_big, headers=headers), 413, "payload_too_large"
        )

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(too_big), 256 * 1024):
                yield too_big[i : i + 256 * 1024]

        assert_error(
            node_a.post("/api/v1/status", content=chunks(), headers=headers), 413, "payload_too_large"
        )
        # Nobody's body is read before the credential passed: an anonymous 2 MiB report is 401.
        assert_error(anon.post("/api/v1/status", content=padded_json(2 * MIB, report), headers=headers), 401)
        # The heartbeat, a node call too, keeps the 1 MiB of every other call.
        big_beat = padded_json(MIB + 1, {})
        assert_error(node_a.post("/api/v1/node/heartbeat", content=big_beat, headers=headers), 413)


def test_a_body_of_exactly_a_mebibyte_is_accepted(admin: httpx.Client) -> None:
    before = len(state(admin)["/api/v1/tokens"]["tokens"])
    r = admin.post(
        "/api/v1/tokens",
        content=padded_json(MIB, {"description": "big"}),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert len(state(admin)["/api/v1/tokens"]["tokens"]) == before + 1


# --- malformed JSON ------------------------------------------------------------------------------------------

MALFORMED: list[tuple[str, bytes]] = [
    ("truncated", b'{"reusable": tr'),
    ("not-json", b"reusable=true"),
    ("empty", b""),
    ("single-quotes", b"{'reusable': true}"),
    ("trailing-comma", b'{"reusable": true,}'),
    ("invalid-utf8", b'{"description": "\xff\xfe"}'),
    ("deeply-nested", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("huge-integer", b'{"expires_in": ' + b"9" * 5000 + b"}"),
    ("nan", b'{"expires_in": NaN}'),
    ("infinity", b'{"expires_in": -Infinity}'),
]
NOT_AN_OBJECT: list[tuple[str, bytes]] = [
    ("array", b"[]"),
    ("string", b'"reusable"'),
    ("number", b"1"),
    ("null", b"null"),
    ("true", b"true"),
    ("list-of-object", b'[{"reusable": true}]'),
]


def json_calls(mesh: dict[str, Enrolled]) -> list[tuple[str, str, dict[str, str]]]:
    admin_auth = {"Authorization": "Bearer admin-token-0123456789"}
    node_auth = {"Authorization": f"Bearer {mesh['gw-a'].credential}"}
    return [
        ("POST", "/api/v1/enroll", {}),
        ("POST", "/api/v1/tokens", admin_auth),
        ("PATCH", "/api/v1/nodes/gw-a", admin_auth),
        ("POST", "/api/v1/status", node_auth),
    ]


@pytest.mark.parametrize("content", [c[1] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_json_is_400(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled], content: bytes
) -> None:
    with unchanged(admin), coordinator.anonymous() as client:
        for method, path, headers in json_calls(mesh):
            r = client.request(
                method, path, content=content, headers={**headers, "Content-Type": "application/json"}
            )
            error = assert_error(r, 400, "malformed_json")
            assert "JSON" in error["message"], (path, error)


@pytest.mark.parametrize("content", [c[1] for c in NOT_AN_OBJECT], ids=[c[0] for c in NOT_AN_OBJECT])
def test_json_that_is_not_an_object_is_400(
    coordinator: Api, admin: httpx.Client, mesh: dict[str, Enrolled], content: bytes
) -> None:
    with unchanged(admin), coordinator.anonymous() as client:
        for method, path, headers in json_calls(mesh):
            r = client.request(
                method, path, content=content, headers={**headers, "Content-Type": "application/json"}
            )
            error = assert_error(r, 400, "malformed_json")
            assert error["message"] == "request body must be a JSON object"


def test_the_coordinator_is_still_healthy_afterwards(coordinator: Api, admin: httpx.Client) -> None:
    assert admin.get("/healthz").json()["status"] == "ok"
    assert "internal error" not in coordinator.log.read_text()
    assert "Traceback" not in coordinator.log.read_text()
