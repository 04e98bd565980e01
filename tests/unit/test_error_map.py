"""The one map between the API's error answers and wgmesh.errors, and the three clients built on it."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import wgmesh
from wgmesh import errors
from wgmesh.agent.client import CoordinatorClient
from wgmesh.agent.probe_wire import ProbeFormatError
from wgmesh.api_client import ApiClient
from wgmesh.cli.connection import AdminClient, Target
from wgmesh.errors import (
    ConflictError,
    ExhaustedError,
    ForbiddenError,
    MalformedRequestError,
    NotFoundError,
    StoreError,
    UnreachableError,
    ValidationError,
    WgmeshError,
)
from wgmesh.lab.api import LabApi

PACKAGE = Path(wgmesh.__file__).parent
URL = "http://127.0.0.1:1"


@pytest.mark.parametrize("cls", errors.ANSWERS, ids=lambda c: c.__name__)
def test_an_answer_class_maps_to_itself_and_back_to_its_code_and_status(cls: type[WgmeshError]) -> None:
    assert errors.error_class(cls.status, cls.code) is cls
    exc = errors.from_answer(cls.status, cls.code, "what went wrong")
    assert type(exc) is cls
    assert (exc.code, exc.status, exc.message) == (cls.code, cls.status, "what went wrong")


def test_no_two_answer_classes_share_a_code_and_status() -> None:
    pairs = [(cls.status, cls.code) for cls in errors.ANSWERS]
    assert len(set(pairs)) == len(pairs)


def _raised_with_code() -> list[tuple[str, str]]:
    """(class name, code) of every `raise SomeError(…, code="…")` in wgmesh of a class an answer can name."""
    names = {cls.__name__ for cls in errors.ANSWERS}
    found: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            call = node.exc
            if not (isinstance(call.func, ast.Name) and call.func.id in names):
                continue
            for keyword in call.keywords:
                if keyword.arg == "code" and isinstance(keyword.value, ast.Constant):
                    found.add((call.func.id, str(keyword.value.value)))
    return sorted(found)


RAISED = _raised_with_code()


def test_the_scan_finds_the_coordinators_codes() -> None:
    # Guards the scan itself: if it found nothing, the test below would pass on nothing.
    assert ("ConflictError", "duplicate_name") in RAISED
    assert ("AuthError", "invalid_credentials") in RAISED
    assert ("ForbiddenError", "csrf") in RAISED
    assert len(RAISED) > 20


@pytest.mark.parametrize(("name", "code"), RAISED)
def test_every_code_wgmesh_raises_maps_back_to_the_class_that_raised_it(name: str, code: str) -> None:
    cls = getattr(errors, name)
    exc = errors.from_answer(cls.status, code, "m")
    assert type(exc) is cls
    assert exc.code == code


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, "no_status", NotFoundError),  # a handler answers it without raising
        (404, "not_found", NotFoundError),  # an unknown route
        (405, "method_not_allowed", WgmeshError),
        (409, "exhausted", ExhaustedError),
        (409, "conflict", ConflictError),
        (500, "internal", UnreachableError),
        (503, "store", StoreError),
        (502, None, UnreachableError),  # a proxy's page, not a wgmesh answer
        (418, None, WgmeshError),
        (408, None, UnreachableError),  # a proxy gave up waiting: try again later
        (429, None, UnreachableError),  # a proxy's rate limit: try again later
    ],
)
def test_answers_outside_the_table(status: int, code: str | None, kind: type[WgmeshError]) -> None:
    exc = errors.from_answer(status, code, "m")
    assert type(exc) is kind
    assert exc.code == (code or "http_error")
    assert exc.status == status  # the answer's own, also where the class stands for a range


def test_a_coordinator_without_its_database_is_one_the_agent_waits_for() -> None:
    assert issubclass(StoreError, UnreachableError)


def test_a_bad_probe_is_under_the_error_root() -> None:
    assert issubclass(ProbeFormatError, WgmeshError)
    assert ProbeFormatError("x").code == "bad_probe"


CLIENTS: dict[str, Callable[[httpx.BaseTransport], ApiClient]] = {
    "agent": lambda t: CoordinatorClient(URL, "credential", transport=t),
    "cli": lambda t: AdminClient(Target(URL, "token"), transport=t),
    "lab": lambda t: LabApi(URL, "token", transport=t),
}


# What each answer must be in every client. The agent and the CLI disagreed on the first two: to the agent,
# 400 was a ValidationError (a console's bad usage, exit 2) and 403 an AuthError.
EVERY_CLIENT: dict[tuple[int, str | None], type[WgmeshError]] = {
    (400, "malformed_json"): MalformedRequestError,
    (403, "csrf"): ForbiddenError,
    (409, "exhausted"): ExhaustedError,
    (422, "invalid_cidr"): ValidationError,
    (503, "store"): StoreError,
    (500, "internal"): UnreachableError,
    (502, None): UnreachableError,
}


@pytest.mark.parametrize(("status", "code"), list(EVERY_CLIENT))
def test_one_answer_is_one_exception_class_in_every_client(status: int, code: str | None) -> None:
    kind = EVERY_CLIENT[status, code]

    def answer(request: httpx.Request) -> httpx.Response:
        if code is None:
            return httpx.Response(status, content=b"<html>bad gateway</html>")
        return httpx.Response(status, json={"error": {"code": code, "message": "what went wrong"}})

    seen: dict[str, tuple[type[WgmeshError], str]] = {}
    for name, make in CLIENTS.items():
        with make(httpx.MockTransport(answer)) as client, pytest.raises(WgmeshError) as caught:
            client.request("POST", "/api/v1/x", json={})
        seen[name] = (type(caught.value), caught.value.code)
    assert seen == dict.fromkeys(CLIENTS, (kind, code or "http_error"))


def test_transport_failures_are_unreachable_in_every_client() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    for make in CLIENTS.values():
        with make(httpx.MockTransport(refuse)) as client, pytest.raises(UnreachableError) as caught:
            client.request("GET", "/healthz")
        assert caught.value.message == f"cannot reach the coordinator at {URL}: Connection refused"


def test_lab_messages_name_the_call_and_the_status() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"code": "no_status", "message": "no report yet"}})

    with (
        LabApi(URL, "token", transport=httpx.MockTransport(answer)) as api,
        pytest.raises(NotFoundError) as caught,
    ):
        api.json("GET", "/api/v1/nodes/gw1/status")
    assert caught.value.message == "GET /api/v1/nodes/gw1/status: 404 no report yet"
    assert caught.value.code == "no_status"


def test_the_lab_sends_nothing_off_the_machine() -> None:
    with pytest.raises(WgmeshError) as caught:
        LabApi("http://192.0.2.1:8080", "token")
    assert caught.value.code == "unsafe_destination"
