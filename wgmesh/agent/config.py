"""The agent's settings: command-line flags over `/etc/wgmesh/agent.toml`, over defaults."""

from __future__ import annotations

import argparse
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

from wgmesh import ipam
from wgmesh.agent import ha, ha_hook, route_guard
from wgmesh.api_client import check_url
from wgmesh.errors import ValidationError
from wgmesh.join_token import JoinToken
from wgmesh.models import check_name
from wgmesh.pins import Pin
from wgmesh.values import Backend, Endpoint, Prefix

DEFAULT_CONFIG = Path("/etc/wgmesh/agent.toml")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent process needs to know at start."""

    coordinator: tuple[str, ...]
    """The coordinators' URLs, all of one registry, the preferred first (wgmesh/failover.py)."""
    name: str
    token: str | None = field(default=None, repr=False)
    advertise: tuple[Prefix, ...] = ()
    aliases: Mapping[Prefix, Prefix] = field(default_factory=dict)
    """Aliases this gateway names for some of `advertise` (`--advertise PREFIX=ALIAS`, issue 20)."""
    listen_port: int = 51820
    tcp_port: int | None = None
    """The TCP port peers reach this agent's direct TCP listener on when UDP between them fails (issue 21);
    None: the WireGuard port's number; 0: no listener (peers then use the relay)."""
    interface: str = "wgmesh0"
    backend: Backend = "auto"
    state_dir: Path = Path("/var/lib/wgmesh-agent")
    masquerade: bool = False
    mss_clamp: bool = True
    """Clamp the TCP MSS of forwarded SYNs to what the tunnel carries (agent/ruleset.py)."""
    relay_ca: Path | None = None
    coordinator_pin: str | None = None
    """`sha256:…` of the coordinator's key, for a token that carries none (the token's pin otherwise)."""
    metrics_listen: str = "127.0.0.1:9586"
    """`ADDRESS:PORT` of the Prometheus /metrics listener, or `off`."""
    min_prefix_length: int = route_guard.MIN_PREFIX_V4
    """IPv4 netmap routes shorter than this are refused (agent/route_guard.py)."""
    min_prefix_length6: int = route_guard.MIN_PREFIX_V6
    """IPv6 netmap routes shorter than this are refused."""
    allow_wide_routes: bool = False
    """Install routes of any width, a default route too (never one covering a protected address)."""
    site: str | None = None
    """The site (VPC) this gateway serves; None: a site of its own (agent/ha.py, issue 18)."""
    on_primary: str | None = None
    """The command run when this gateway becomes or stops being an HA prefix's carrier (agent/ha_hook.py)."""
    ha_preempt_after: float = ha.PREEMPT_AFTER
    """Seconds an earlier member of an HA group answers before it takes its prefix back."""

    @property
    def hook(self) -> tuple[str, ...] | None:
        """`on_primary` as an argument vector."""
        return ha_hook.parse_command(self.on_primary) if self.on_primary else None

    def __post_init__(self) -> None:
        if isinstance(self.coordinator, str):  # one URL given as a string (tests, callers from before lists)
            object.__setattr__(self, "coordinator", (self.coordinator,))

    @property
    def direct_tcp_port(self) -> int | None:
        """The direct TCP listener's port, or None when it is off."""
        port = self.listen_port if self.tcp_port is None else self.tcp_port
        return port or None

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """`metrics_listen` as (address, port); None when off."""
        return parse_metrics_listen(self.metrics_listen)


def parse_metrics_listen(text: str) -> tuple[str, int] | None:
    """`off`, or `ADDRESS:PORT` (IPv6 as `[ADDRESS]:PORT`) with an IP address; ValidationError otherwise."""
    if text == "off":
        return None
    try:
        address = Endpoint.parse(text, port_zero=True)
    except ValidationError:
        address = None
    if address is None or address.ip is None:  # an address to bind: a name could resolve elsewhere
        raise ValidationError(f"metrics listen {text!r} must be ADDRESS:PORT or off", code="invalid_config")
    return address.address


def _hostname_label() -> str:
    label = socket.gethostname().split(".")[0].lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in label).strip("-")[:63] or "node"


def parse_advertised(entries: Iterable[object]) -> tuple[tuple[Prefix, ...], dict[Prefix, Prefix]]:
    """`--advertise` entries, `PREFIX` or `PREFIX=ALIAS`: the prefixes in order, and the aliases named."""
    prefixes: list[Prefix] = []
    aliases: dict[Prefix, Prefix] = {}
    for entry in entries:
        if not isinstance(entry, str):
            raise ValidationError("advertise must be a list of CIDR strings", code="invalid_config")
        text, equals, alias_text = entry.partition("=")
        prefix = ipam.parse_cidr(text.strip())
        prefixes.append(prefix)
        if equals:
            if not alias_text.strip():
                raise ValidationError(f"--advertise {entry}: an alias after '='", code="invalid_config")
            alias = ipam.parse_cidr(alias_text.strip())
            reason = ipam.alias_refusal(prefix, alias)
            if reason:
                raise ValidationError(f"--advertise {entry}: {reason}", code="invalid_config")
            aliases[prefix] = alias
    return tuple(prefixes), aliases


def load(args: argparse.Namespace, *, require_coordinator: bool = True) -> AgentConfig:
    """Merge the config file (if any) with the flags that were given; validate the result."""
    values: dict[str, Any] = {}
    path = Path(args.config) if args.config else DEFAULT_CONFIG
    if args.config or path.exists():
        try:
            with path.open("rb") as fh:
                values.update(tomllib.load(fh))
        except FileNotFoundError as exc:
            raise ValidationError(f"config file {path} does not exist", code="invalid_config") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(f"config file {path}: {exc}", code="invalid_config") from exc
    known = {f.name for f in fields(AgentConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValidationError(f"config file {path}: unknown key {unknown[0]!r}", code="invalid_config")
    for name in known:
        given = getattr(args, name, None)
        if given not in (None, [], False):
            values[name] = given
    if getattr(args, "mss_clamp", None) is False:  # --no-mss-clamp: a flag that sets False
        values["mss_clamp"] = False
    for flag in ("mss_clamp", "allow_wide_routes"):
        if not isinstance(values.get(flag, True), bool):
            raise ValidationError(f"{flag} must be true or false", code="invalid_config")
    for key, most in (("min_prefix_length", 32), ("min_prefix_length6", 128)):
        if getattr(args, key, None) == 0:  # a flag given as 0 (no bound) is not "not given"
            values[key] = 0
        length = values.get(key, getattr(AgentConfig, key))
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= most:
            raise ValidationError(f"{key} must be a prefix length 0-{most}", code="invalid_config")
    given_urls = values.get("coordinator", ())
    if isinstance(given_urls, str):
        given_urls = [given_urls]  # `coordinator = "URL"` in the file, as before lists
    if not isinstance(given_urls, list | tuple) or not all(isinstance(u, str) for u in given_urls):
        raise ValidationError("coordinator must be a URL or a list of URLs", code="invalid_config")
    values["coordinator"] = tuple(dict.fromkeys(check_url(u) for u in given_urls))
    if values.get("token") and not values["coordinator"]:
        # A token names its coordinators (join_token.py); --coordinator still overrides.
        values["coordinator"] = tuple(check_url(u) for u in JoinToken.parse(str(values["token"])).urls)
    if values.get("coordinator_pin"):
        values["coordinator_pin"] = str(Pin.parse(str(values["coordinator_pin"])))
    if require_coordinator and not values.get("coordinator"):
        raise ValidationError("--coordinator URL is required (flag or config file)", code="invalid_config")
    values.setdefault("name", _hostname_label())
    try:
        check_name(values["name"])
    except ValueError as exc:
        raise ValidationError(f"--name {values['name']!r}: {exc}", code="invalid_config") from exc
    values["advertise"], values["aliases"] = parse_advertised(values.get("advertise", ()))
    if values.get("site") is not None:
        try:
            check_name(str(values["site"]))
        except ValueError as exc:
            raise ValidationError(f"--site {values['site']!r}: {exc}", code="invalid_config") from exc
    if values.get("on_primary") is not None:
        ha_hook.parse_command(str(values["on_primary"]))
    if getattr(args, "ha_preempt_after", None) == 0:  # given as 0 (take back at once) is not "not given"
        values["ha_preempt_after"] = 0.0
    preempt = values.get("ha_preempt_after", ha.PREEMPT_AFTER)
    if isinstance(preempt, bool) or not isinstance(preempt, int | float) or not 0 <= preempt <= 86400:
        raise ValidationError("ha_preempt_after must be 0-86400 seconds", code="invalid_config")
    values["ha_preempt_after"] = float(preempt)
    values["state_dir"] = Path(values.get("state_dir", AgentConfig.state_dir))
    if values.get("relay_ca"):
        values["relay_ca"] = Path(values["relay_ca"])
    backends = get_args(Backend)
    if values.get("backend", "auto") not in backends:
        named = f"{', '.join(backends[:-1])} or {backends[-1]}"
        raise ValidationError(f"backend must be {named}", code="invalid_config")
    iface = str(values.get("interface", AgentConfig.interface))
    if not 1 <= len(iface) <= 15 or "/" in iface or iface in (".", ".."):
        raise ValidationError(
            f"interface name {iface!r} is not valid (1-15 characters)", code="invalid_config"
        )
    values["metrics_listen"] = str(values.get("metrics_listen", AgentConfig.metrics_listen))
    parse_metrics_listen(values["metrics_listen"])
    port = int(values.get("listen_port", 51820))
    if not 1 <= port <= 65535:
        raise ValidationError(f"listen port {port} is out of range", code="invalid_config")
    if getattr(args, "tcp_port", None) == 0:  # given as 0 (no listener) is not "not given"
        values["tcp_port"] = 0
    tcp = values.get("tcp_port")
    if tcp is not None and (isinstance(tcp, bool) or not isinstance(tcp, int) or not 0 <= tcp <= 65535):
        raise ValidationError(f"tcp port {tcp!r} must be 0 (off) to 65535", code="invalid_config")
    return AgentConfig(**values)
