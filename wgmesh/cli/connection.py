"""Where the CLI finds the coordinator and its admin token, and the admin HTTP client.

Each setting comes from the first of: the command-line flag, the environment variable, the config file
(`$XDG_CONFIG_HOME/wgmesh/cli.toml`, else `~/.config/wgmesh/cli.toml`, keys `coordinator`, `token`, and
`pin` or `ca` for how to trust the coordinator's TLS; without either, `SSL_CERT_FILE` or the system's store).
Several coordinators of one registry: `--coordinator` repeated, `WGMESH_URL` comma-separated, or a list
in the file; the client fails over between them as the agent does (wgmesh/failover.py).
The client is wgmesh.api_client's, which turns error answers into wgmesh.errors exceptions; it adds hints.
"""

from __future__ import annotations

import argparse
import os
import ssl
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from wgmesh import trust
from wgmesh.api_client import ApiClient, check_url
from wgmesh.errors import ValidationError
from wgmesh.pins import Pin

URL_ENV = "WGMESH_URL"
TOKEN_ENV = "WGMESH_TOKEN"  # noqa: S105 - the name of a variable, not a secret
PIN_ENV = "WGMESH_PIN"
CONFIG_KEYS = ("coordinator", "token", "pin", "ca")
TIMEOUT = 10.0

_M = TypeVar("_M", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class Target:
    """The coordinator URLs (of one registry, the preferred first) and the admin token to present there."""

    urls: tuple[str, ...]
    token: str = field(repr=False)
    pin: Pin | None = None
    """The coordinator's key (`wgmesh-coordinator pin`), trusted instead of any CA."""
    ca: Path | None = None
    """A CA file to verify the coordinator's certificate with, instead of the system's store."""

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):  # one URL given as a string
            object.__setattr__(self, "urls", (self.urls,))

    @property
    def url(self) -> str:
        """The preferred coordinator URL."""
        return self.urls[0]

    def tls(self, env: Mapping[str, str] | None = None) -> ssl.SSLContext:
        """How to trust the coordinator's TLS: the pin, else the CA file, else SSL_CERT_FILE / the system."""
        return trust.for_client(self.pin, self.ca, env)


def add_arguments(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """The connection flags every coordinator command takes; `nested` for a subcommand whose group
    already has them (a value given before the subcommand is kept)."""
    default = argparse.SUPPRESS if nested else None
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--coordinator",
        metavar="URL",
        action="append",
        default=default,
        help=f"coordinator URL, e.g. https://10.0.0.1:8080 (default: ${URL_ENV}, comma-separated, then "
        "cli.toml); repeat it for several coordinators of one registry: the first that answers is used",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=default,
        help=f"admin token (default: ${TOKEN_ENV}, then cli.toml; a flag is visible in `ps`)",
    )
    group.add_argument(
        "--pin",
        metavar="sha256:HEX",
        default=default,
        help=f"trust the coordinator whose key has this pin (`wgmesh-coordinator pin`; default: ${PIN_ENV}, "
        "then cli.toml)",
    )
    group.add_argument(
        "--ca",
        metavar="FILE",
        default=default,
        help="verify the coordinator's certificate with this CA file (default: cli.toml, then "
        "$SSL_CERT_FILE, then the system's store)",
    )


def config_path(env: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/wgmesh/cli.toml`, else `$HOME/.config/wgmesh/cli.toml`."""
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or str(Path.home()), ".config")
    return Path(base) / "wgmesh" / "cli.toml"


def warn(message: str) -> None:
    """A warning on stderr, one line."""
    print(f"wgmesh: warning: {message}", file=sys.stderr)


def load_config(path: Path, on_warning: Callable[[str], None] = warn) -> dict[str, str]:
    """The keys of the CLI config file ({} when there is none); warns when others may read it."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}", code="bad_config") from exc
    if mode & 0o077:
        on_warning(f"{path} is readable by others (mode {mode:04o}); run: chmod 600 {path}")
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValidationError(f"{path} is not valid TOML: {exc}", code="bad_config") from exc
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ValidationError(
            f"{path}: unknown key {', '.join(map(repr, unknown))} (known: {', '.join(CONFIG_KEYS)})",
            code="bad_config",
        )
    for key, value in data.items():
        several = key == "coordinator" and isinstance(value, list)
        if several and all(isinstance(v, str) and "," not in v for v in value):
            data[key] = ",".join(value)  # the shape WGMESH_URL has
        elif not isinstance(value, str):
            kind = "a string or a list of URLs" if key == "coordinator" else "a string"
            raise ValidationError(f"{path}: {key} must be {kind}", code="bad_config")
    return {k: str(v) for k, v in data.items() if v}


def resolve(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    on_warning: Callable[[str], None] = warn,
) -> Target:
    """The coordinator and token to use: flag, then environment, then the config file."""
    env = os.environ if env is None else env
    given = getattr(args, "coordinator", None)
    url = (",".join(given) if isinstance(given, list) else given) or env.get(URL_ENV) or None
    token = getattr(args, "token", None) or env.get(TOKEN_ENV) or None
    path = config_path(env)
    pin = getattr(args, "pin", None) or env.get(PIN_ENV) or None
    ca = getattr(args, "ca", None)
    config = load_config(path, on_warning) if None in (url, token) or not (pin or ca) else {}
    url = url or config.get("coordinator")
    token = token or config.get("token")
    if not (pin or ca):  # a flag for one replaces the file's choice of either
        pin, ca = config.get("pin"), config.get("ca")
    if pin and ca:
        raise ValidationError("give --pin or --ca, not both", code="bad_config")
    if not url:
        raise ValidationError(
            f"no coordinator: pass --coordinator URL, set {URL_ENV}, or set coordinator in {path}",
            code="no_coordinator",
        )
    if not token:
        raise ValidationError(
            f"no admin token: pass --token, set {TOKEN_ENV}, or set token in {path}", code="no_token"
        )
    urls = tuple(dict.fromkeys(check_url(u.strip()) for u in url.split(",") if u.strip()))
    if not urls:
        raise ValidationError(f"coordinator {url!r} names no URL", code="bad_url")
    return Target(urls, token, Pin.parse(pin) if pin else None, Path(ca) if ca else None)


def segment(value: str) -> str:
    """A value quoted for use as one path segment."""
    return quote(value, safe="")


class AdminClient(ApiClient):
    """Admin calls to the coordinator; every failure surfaces as a WgmeshError with one line."""

    def __init__(
        self, target: Target, *, timeout: float = TIMEOUT, transport: httpx.BaseTransport | None = None
    ) -> None:
        super().__init__(
            target.urls,
            bearer=target.token,
            user_agent="wgmesh-cli",
            timeout=timeout,
            transport=transport,
            tls=target.tls(),
        )

    def describe(
        self, method: str, path: str, response: httpx.Response, code: str | None, message: str
    ) -> str:
        """The answer's message with a hint at what to check: the token, or the coordinator's version."""
        if response.status_code == 401 and code is not None:
            return f"{message} (coordinator {self.url}; check --token, ${TOKEN_ENV} or cli.toml)"
        if code in ("not_found", "method_not_allowed"):
            # The route itself is missing: an old coordinator, or a URL pointing somewhere else.
            return f"{self.url}{path}: {message.lower()} (is this a wgmesh coordinator of this version?)"
        return super().describe(method, path, response, code, message)

    def call_optional(self, method: str, path: str, model: type[_M], *, json: Any = None) -> _M | None:
        """Like `call`, but 204 No Content answers None."""
        response = self.request(method, path, json=json)
        if response.status_code == 204:
            return None
        return self.parse(response, path, model)

    def get(self, path: str, model: type[_M]) -> _M:
        """GET a `model` document."""
        return self.call("GET", path, model)


def connect(args: argparse.Namespace) -> AdminClient:
    """The admin client for the coordinator the command line, environment or config file names."""
    return AdminClient(resolve(args))
