"""Free text that nodes (and admins) send is refused at the API unless printable (docs/security.md, "Text
from nodes"): every such field of a status report, and a token's description, with one clear line."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from coordinator_harness import HOSTILE, Api, Enrolled, assert_error, create_token, enroll


@pytest.fixture(scope="module")
def pair(coordinator: Api, admin: httpx.Client) -> tuple[Enrolled, Enrolled]:
    token = create_token(admin, reusable=True)["token"]
    with coordinator.anonymous() as anon:
        return enroll(anon, token, "txt-a"), enroll(anon, token, "txt-b")


def report(peer: Enrolled, **fields: Any) -> dict[str, Any]:
    """A status report about `peer`; `interface` goes into a shadowed route, the rest into the peer."""
    interface = fields.pop("interface", "lan")
    return {
        "peers": [{"public_key": peer.keypair.public_key, "path": "relay", **fields}],
        "shadowed": [{"prefix": "10.9.0.0/24", "interface": interface}],
    }


FIELDS = {"reason": "peers.0.reason", "relay": "peers.0.relay", "endpoint": "peers.0.endpoint"}


@pytest.mark.parametrize("bad", HOSTILE, ids=["csi", "osc", "cr"])
@pytest.mark.parametrize("field", [*FIELDS, "interface"])
def test_a_status_field_with_control_characters_is_refused(
    coordinator: Api, pair: tuple[Enrolled, Enrolled], field: str, bad: str
) -> None:
    a, b = pair
    with coordinator.node(a.credential) as node:
        r = node.post("/api/v1/status", json=report(b, **{field: f"x{bad}y"}))
    error = assert_error(r, 422, "invalid")
    where = FIELDS.get(field, "shadowed.0.interface")
    assert error["message"] == f"{where}: must be printable text: no control characters (ESC, CR, LF, …)"
    assert "\n" not in error["message"] and "\x1b" not in error["message"]


def test_printable_text_of_any_script_is_accepted(coordinator: Api, pair: tuple[Enrolled, Enrolled]) -> None:
    a, b = pair
    with coordinator.node(a.credential) as node:
        r = node.post("/api/v1/status", json=report(b, reason="pas de poignée UDP — 5 s", relay="relais-ü"))
    assert r.status_code == 200, r.text


def test_over_long_free_text_is_refused(coordinator: Api, pair: tuple[Enrolled, Enrolled]) -> None:
    a, b = pair
    with coordinator.node(a.credential) as node:
        assert_error(node.post("/api/v1/status", json=report(b, reason="x" * 257)), 422, "invalid")
        assert_error(node.post("/api/v1/status", json=report(b, interface="i" * 33)), 422, "invalid")


@pytest.mark.parametrize("bad", HOSTILE, ids=["csi", "osc", "cr"])
def test_a_token_description_with_control_characters_is_refused(admin: httpx.Client, bad: str) -> None:
    r = admin.post("/api/v1/tokens", json={"description": f"site{bad}"})
    assert assert_error(r, 422, "invalid")["message"].startswith("description: must be printable text")


def test_a_bidi_override_is_refused_too(coordinator: Api, pair: tuple[Enrolled, Enrolled]) -> None:
    a, b = pair
    with coordinator.node(a.credential) as node:
        r = node.post("/api/v1/status", json=report(b, reason="ok\u202egnp.exe"))
    assert_error(r, 422, "invalid")
