"""The coordinator's real error answers become the same exception in the agent's, the CLI's and the lab's client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from coordinator_harness import ADMIN_TOKEN, Coordinator

from wgmesh import trust
from wgmesh.agent.client import CoordinatorClient
from wgmesh.api_client import ApiClient
from wgmesh.cli.connection import AdminClient, Target
from wgmesh.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    MalformedRequestError,
    NotFoundError,
    ValidationError,
    WgmeshError,
)
from wgmesh.lab.api import LabApi

REAL_PROCESS = (
    True  # the agent's, the CLI's and the lab's own HTTP clients need a URL (tests/api/conftest.py)
)


@pytest.fixture
def clients(coordinator: Coordinator) -> Iterator[dict[str, ApiClient]]:
    pin = coordinator.pin
    made: dict[str, ApiClient] = {
        "agent": CoordinatorClient(coordinator.url, ADMIN_TOKEN, tls=trust.pinned(lambda: [pin])),
        "cli": AdminClient(Target(coordinator.url, ADMIN_TOKEN, pin=pin)),
        "lab": LabApi(coordinator.url, ADMIN_TOKEN, pin=pin),
    }
    yield made
    for client in made.values():
        client.close()


def refusals(
    clients: dict[str, ApiClient], method: str, path: str, body: object
) -> dict[str, tuple[type, str]]:
    seen: dict[str, tuple[type, str]] = {}
    for name, client in clients.items():
        with pytest.raises(WgmeshError) as caught:
            client.request(method, path, json=body)
        seen[name] = (type(caught.value), caught.value.code)
    return seen


def test_a_body_that_is_not_an_object_is_a_malformed_request_everywhere(
    clients: dict[str, ApiClient],
) -> None:
    # The agent's client took this 400 for a ValidationError, which a console reports as bad usage (exit 2).
    seen = refusals(clients, "POST", "/api/v1/tokens", [1, 2])
    assert seen == dict.fromkeys(clients, (MalformedRequestError, "malformed_json"))


def test_a_cookie_change_without_the_csrf_token_is_forbidden_everywhere(
    clients: dict[str, ApiClient],
) -> None:
    # The agent's client took this 403 for an AuthError.
    for client in clients.values():
        client.bearer = None
        client.request(
            "POST", "/api/v1/session", json={"token": ADMIN_TOKEN}
        )  # the cookie, kept by the client
    seen = refusals(clients, "POST", "/api/v1/tokens", {})
    assert seen == dict.fromkeys(clients, (ForbiddenError, "csrf"))


def test_auth_not_found_conflict_and_invalid_input_agree(clients: dict[str, ApiClient]) -> None:
    assert refusals(clients, "GET", "/api/v1/nodes/nosuch", None) == dict.fromkeys(
        clients, (NotFoundError, "unknown_node")
    )
    assert refusals(clients, "PATCH", "/api/v1/nodes/gw1", {"p2p": "sometimes"}) == dict.fromkeys(
        clients, (ValidationError, "invalid")
    )
    clients["cli"].request("POST", "/api/v1/nodes", json={"name": "dup1", "generate_keys": True})
    assert refusals(
        clients, "POST", "/api/v1/nodes", {"name": "dup1", "generate_keys": True}
    ) == dict.fromkeys(clients, (ConflictError, "duplicate_name"))
    for client in clients.values():
        client.bearer = "not-the-admin-token"
    assert refusals(clients, "GET", "/api/v1/nodes", None) == dict.fromkeys(
        clients, (AuthError, "invalid_credentials")
    )
