"""wgmesh.cli.connection: where the URL and token come from, and how answers become exceptions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx
import pytest

from wgmesh.cli.connection import AdminClient, Target, config_path, load_config, resolve
from wgmesh.errors import (
    AuthError,
    ConflictError,
    ExhaustedError,
    MalformedRequestError,
    NotFoundError,
    UnreachableError,
    ValidationError,
    WgmeshError,
)
from wgmesh.models import Health
from wgmesh.pins import Pin


def args(
    coordinator: str | None = None, token: str | None = None, pin: str | None = None, ca: str | None = None
) -> argparse.Namespace:
    return argparse.Namespace(coordinator=coordinator, token=token, pin=pin, ca=ca)


def write_config(home: Path, text: str, mode: int = 0o600) -> Path:
    path = config_path({"HOME": str(home)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_config_path_follows_xdg_then_home(tmp_path: Path) -> None:
    assert config_path({"HOME": str(tmp_path)}) == tmp_path / ".config/wgmesh/cli.toml"
    assert config_path({"HOME": "/nowhere", "XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "wgmesh/cli.toml"


def test_flag_beats_environment_beats_config_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'coordinator = "http://file:1"\ntoken = "file-token"\n')
    env = {"HOME": str(tmp_path)}
    assert resolve(args(), env) == Target("http://file:1", "file-token")
    env |= {"WGMESH_URL": "http://env:2/", "WGMESH_TOKEN": "env-token"}
    assert resolve(args(), env) == Target("http://env:2", "env-token")
    assert resolve(args("https://flag:3", "flag-token"), env) == Target("https://flag:3", "flag-token")
    # Each setting on its own: a flag for one, the file for the other.
    assert resolve(args("http://flag:4"), {"HOME": str(tmp_path)}) == Target("http://flag:4", "file-token")


def test_several_coordinators_from_flags_the_environment_or_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, 'coordinator = ["https://a:1", "https://b:2/"]\ntoken = "t"\n')
    env = {"HOME": str(tmp_path)}
    assert resolve(args(), env).urls == ("https://a:1", "https://b:2")
    env["WGMESH_URL"] = "https://c:3, https://d:4,"
    assert resolve(args(), env).urls == ("https://c:3", "https://d:4")
    flags = argparse.Namespace(coordinator=["https://e:5", "https://f:6"], token=None, pin=None, ca=None)
    target = resolve(flags, env)
    assert (target.urls, target.url) == (("https://e:5", "https://f:6"), "https://e:5")
    with pytest.raises(ValidationError, match="names no URL"):
        resolve(args(), {**env, "WGMESH_URL": " , "})
    with pytest.raises(ValidationError, match="must look like"):
        resolve(args(), {**env, "WGMESH_URL": "https://c:3,ftp://d"})


def test_token_is_not_in_the_repr() -> None:
    assert "s3cret" not in repr(Target("http://x:1", "s3cret"))


def test_missing_settings_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"no coordinator: pass --coordinator URL, set WGMESH_URL"):
        resolve(args(), {"HOME": str(tmp_path)})
    with pytest.raises(ValidationError, match=r"no admin token: pass --token, set WGMESH_TOKEN"):
        resolve(args("http://x:1"), {"HOME": str(tmp_path)})


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://x", "http://", "http://x:1/?a=b", "x"])
def test_a_url_without_http_scheme_and_host_is_bad_usage(tmp_path: Path, url: str) -> None:
    with pytest.raises(ValidationError, match="coordinator URL"):
        resolve(args(url, "t"), {"HOME": str(tmp_path)})


def test_a_config_readable_by_others_is_used_with_a_warning(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'token = "t"\n', mode=0o644)
    warnings: list[str] = []
    assert load_config(path, warnings.append) == {"token": "t"}
    assert len(warnings) == 1 and "readable by others" in warnings[0] and "chmod 600" in warnings[0]
    path.chmod(0o600)
    warnings.clear()
    load_config(path, warnings.append)
    assert warnings == []


def test_the_config_is_read_only_when_needed(tmp_path: Path) -> None:
    write_config(tmp_path, "not toml at all [", mode=0o644)
    warnings: list[str] = []
    target = resolve(args("http://x:1", "t", PIN), {"HOME": str(tmp_path)}, warnings.append)
    assert target.url == "http://x:1" and warnings == []
    # Without a pin or CA file given, the file may hold one: it is read.
    with pytest.raises(ValidationError, match="is not valid TOML"):
        resolve(args("http://x:1", "t"), {"HOME": str(tmp_path)}, warnings.append)


PIN = "sha256:" + "ab" * 32


def test_pin_and_ca_come_from_flag_environment_or_config_file(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    write_config(tmp_path, f'coordinator = "https://file:1"\ntoken = "t"\npin = "{PIN}"\n')
    assert resolve(args(), env).pin == Pin.parse(PIN)
    other = "sha256:" + "cd" * 32
    assert resolve(args(), env | {"WGMESH_PIN": other}).pin == Pin.parse(other)
    # a --ca flag replaces the file's pin: the two are one choice
    flagged = resolve(args(ca="/etc/ssl/ca.pem"), env)
    assert (flagged.pin, flagged.ca) == (None, Path("/etc/ssl/ca.pem"))
    with pytest.raises(ValidationError, match="--pin or --ca, not both"):
        resolve(args(pin=PIN, ca="/x"), env)
    with pytest.raises(ValidationError, match="must start with sha256:"):
        resolve(args(pin="md5:00"), env)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("coordinator = [", "is not valid TOML"),
        ('coordinatr = "http://x:1"', "unknown key 'coordinatr'"),
        ("token = 5", "token must be a string"),
        ("coordinator = [1]", "coordinator must be a string or a list of URLs"),
    ],
)
def test_a_bad_config_file_is_bad_usage_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ValidationError, match=message) as caught:
        load_config(path)
    assert str(path) in caught.value.message


def mock(status: int, body: Any = None, *, content: bytes | None = None) -> AdminClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer tok"
        if content is not None:
            return httpx.Response(status, content=content)
        return httpx.Response(status, json=body)

    return AdminClient(Target("http://coord:1", "tok"), transport=httpx.MockTransport(handler))


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "malformed_json", MalformedRequestError),
        (401, "invalid_credentials", AuthError),
        (404, "unknown_node", NotFoundError),
        (409, "conflict", ConflictError),
        (409, "exhausted", ExhaustedError),
        (422, "invalid", ValidationError),
    ],
)
def test_error_answers_become_wgmesh_errors(status: int, code: str, kind: type[WgmeshError]) -> None:
    with mock(status, error(code, "what went wrong")) as client, pytest.raises(kind) as caught:
        client.get("/api/v1/x", Health)
    assert type(caught.value) is kind
    assert caught.value.code == code
    assert "what went wrong" in caught.value.message


def refused(client: AdminClient, kind: type[WgmeshError], match: str) -> WgmeshError:
    with client, pytest.raises(kind, match=match) as caught:
        client.get("/api/v1/x", Health)
    return caught.value


def test_401_points_at_the_token_and_a_missing_route_at_the_version() -> None:
    admin_401 = mock(401, error("invalid_credentials", "admin token is not valid"))
    refused(admin_401, AuthError, r"admin token is not valid \(coordinator http://coord:1; check --token")
    refused(
        mock(404, error("not_found", "Not Found")),
        NotFoundError,
        "is this a wgmesh coordinator of this version",
    )


def test_server_errors_and_foreign_answers_are_failures_not_usage() -> None:
    internal = mock(500, error("internal", "internal error; see the coordinator log"))
    exc = refused(internal, WgmeshError, "coordinator http://coord:1 failed: internal error")
    assert not isinstance(exc, ValidationError)
    refused(mock(502, content=b"<html>bad gateway</html>"), WgmeshError, "without a wgmesh error")
    refused(mock(200, {"unexpected": True}), WgmeshError, r"unexpected answer .* Health")


def test_transport_failures_are_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    target = Target("http://coord:1", "tok")
    refused(
        AdminClient(target, transport=httpx.MockTransport(refuse)),
        UnreachableError,
        r"^cannot reach the coordinator at http://coord:1: Connection refused$",
    )
    refused(
        AdminClient(target, timeout=2.5, transport=httpx.MockTransport(slow)),
        UnreachableError,
        r"did not answer within 2.5 s",
    )


def test_204_is_none_for_optional_answers() -> None:
    with mock(204, content=b"") as client:
        assert client.call_optional("PUT", "/api/v1/pairs/a/b", Health, json={"p2p": None}) is None
