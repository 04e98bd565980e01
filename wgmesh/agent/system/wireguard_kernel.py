"""Kernel WireGuard: a `wireguard` link configured over generic netlink with pyroute2.

pyroute2 ≥ 0.9.3 is required: older versions sent an empty allowed-IP list with every peer update,
which wiped a peer's allowed IPs on an endpoint change. A dump of a device with many peers arrives as
several messages, and a peer with many allowed IPs continues from one message into the next, so
`parse_info` reads and merges every message. Requests carry one peer each (pyroute2's `set` takes
one) and at most `ALLOWED_IPS_PER_MESSAGE` allowed IPs, keeping each message well under a page.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wgmesh import keys
from wgmesh.agent.plan import (
    AddPeer,
    DeviceOp,
    RemovePeer,
    ReplaceAllowedIps,
    SetEndpoint,
    SetFwmark,
    SetKeepalive,
    SetListenPort,
    SetPrivateKey,
    SetPsk,
)
from wgmesh.agent.system.iproute import link_kind
from wgmesh.agent.wgstate import (
    DeviceSpec,
    ObservedDevice,
    PeerSpec,
    PeerStats,
    PrivateKey,
)
from wgmesh.errors import BackendError
from wgmesh.logs import kv
from wgmesh.values import Endpoint

log = logging.getLogger("wgmesh.agent.kernel")

ALLOWED_IPS_PER_MESSAGE = 100
_ZERO_KEY = base64.b64encode(bytes(32)).decode()


def kernel_module_available() -> bool:
    """Whether this host can create `wireguard` links (module loaded, or loadable on demand)."""
    if Path("/sys/module/wireguard").exists():
        return True
    # Not loaded is not the same as absent: creating a link makes the kernel load the module.
    probe = f"wgmprobe{secrets.token_hex(3)}"
    try:
        from pyroute2 import IPRoute  # noqa: PLC0415

        with IPRoute() as ipr:
            ipr.link("add", ifname=probe, kind="wireguard")
            ipr.link("del", ifname=probe)
    except Exception:  # any failure (no module, no privilege) means: not available to us
        return False
    return True


def is_kernel_device(ifname: str) -> bool:
    """Whether `ifname` exists here as a kernel `wireguard` link."""
    try:
        return link_kind(ifname) == "wireguard"
    except BackendError:
        return False


# --- requests and answers (pure) ------------------------------------------------------------------


def _endpoint_fields(endpoint: Endpoint) -> dict[str, Any]:
    return {"endpoint_addr": endpoint.host, "endpoint_port": endpoint.port}


def _peer_requests(key: str, ips: Sequence[str], first: dict[str, Any]) -> list[dict[str, Any]]:
    requests = [
        {"peer": {**first, "replace_allowed_ips": True, "allowed_ips": list(ips[:ALLOWED_IPS_PER_MESSAGE])}}
    ]
    # Later parts add to the list the first one replaced, and must not create a peer removed meanwhile.
    for start in range(ALLOWED_IPS_PER_MESSAGE, len(ips), ALLOWED_IPS_PER_MESSAGE):
        part = list(ips[start : start + ALLOWED_IPS_PER_MESSAGE])
        requests.append({"peer": {"public_key": key, "update_only": True, "allowed_ips": part}})
    return requests


def requests_for(ops: Sequence[DeviceOp]) -> list[dict[str, Any]]:
    """Keyword arguments of the `WireGuard.set` calls that apply `ops`, in order."""
    requests: list[dict[str, Any]] = []
    for op in ops:
        match op:
            case SetPrivateKey(private_key=key):
                requests.append({"private_key": key.reveal()})
            case SetListenPort(port=port):
                requests.append({"listen_port": port})
            case SetFwmark(fwmark=mark):
                requests.append({"fwmark": mark})
            case RemovePeer(public_key=key):
                requests.append({"peer": {"public_key": key, "remove": True}})
            case SetEndpoint(public_key=key, endpoint=endpoint):
                # No allowed_ips key and no replace flag: the kernel leaves the list alone.
                peer = {"public_key": key, "update_only": True, **_endpoint_fields(endpoint)}
                requests.append({"peer": peer})
            case SetPsk(public_key=key, psk=psk):
                requests.append(
                    {"peer": {"public_key": key, "update_only": True, "preshared_key": psk or _ZERO_KEY}}
                )
            case SetKeepalive(public_key=key, keepalive=keepalive):
                peer = {"public_key": key, "update_only": True, "persistent_keepalive": keepalive or 0}
                requests.append({"peer": peer})
            case ReplaceAllowedIps(public_key=key, allowed_ips=ips):
                requests.extend(_peer_requests(key, ips, {"public_key": key, "update_only": True}))
            case AddPeer(peer=spec):
                first: dict[str, Any] = {
                    "public_key": spec.public_key,
                    "preshared_key": spec.psk or _ZERO_KEY,
                    "persistent_keepalive": spec.keepalive or 0,
                }
                if spec.endpoint:
                    first.update(_endpoint_fields(spec.endpoint))
                requests.extend(_peer_requests(spec.public_key, spec.allowed_ips, first))
    return requests


def _key(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    return None if text == _ZERO_KEY else text


def _endpoint(value: Any) -> Endpoint | None:
    if not value or not value.get("port"):
        return None
    return Endpoint(value["addr"], int(value["port"]))


def parse_info(messages: Iterable[Any]) -> ObservedDevice:
    """Merge every message of a `WireGuard.info` dump into one observed device."""
    device: dict[str, Any] = {}
    peers: dict[str, dict[str, Any]] = {}
    for msg in messages:
        for name in ("WGDEVICE_A_PRIVATE_KEY", "WGDEVICE_A_LISTEN_PORT", "WGDEVICE_A_FWMARK"):
            value = msg.get_attr(name)
            if value is not None and name not in device:
                device[name] = value
        for peer in msg.get_attr("WGDEVICE_A_PEERS") or []:
            key = _key(peer.get_attr("WGPEER_A_PUBLIC_KEY"))
            if key is None:
                continue
            # A continued peer repeats only its key and the next allowed IPs.
            entry = peers.setdefault(key, {"allowed_ips": []})
            for name in (
                "WGPEER_A_PRESHARED_KEY",
                "WGPEER_A_ENDPOINT",
                "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL",
                "WGPEER_A_LAST_HANDSHAKE_TIME",
                "WGPEER_A_RX_BYTES",
                "WGPEER_A_TX_BYTES",
            ):
                value = peer.get_attr(name)
                if value is not None:
                    entry[name] = value
            entry["allowed_ips"].extend(a.get("addr") for a in peer.get_attr("WGPEER_A_ALLOWEDIPS") or [])
    specs: list[PeerSpec] = []
    stats: dict[str, PeerStats] = {}
    for key, entry in peers.items():
        endpoint = _endpoint(entry.get("WGPEER_A_ENDPOINT"))
        specs.append(
            PeerSpec(
                public_key=key,
                allowed_ips=tuple(ip for ip in entry["allowed_ips"] if ip),
                endpoint=endpoint,
                psk=_key(entry.get("WGPEER_A_PRESHARED_KEY")),
                keepalive=entry.get("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or None,
            )
        )
        handshake = entry.get("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
        seconds = int(handshake.get("tv_sec", 0))
        stats[key] = PeerStats(
            rx_bytes=int(entry.get("WGPEER_A_RX_BYTES", 0)),
            tx_bytes=int(entry.get("WGPEER_A_TX_BYTES", 0)),
            last_handshake=(
                datetime.fromtimestamp(seconds + int(handshake.get("tv_nsec", 0)) / 1e9, UTC)
                if seconds
                else None
            ),
            endpoint=endpoint,
        )
    private = _key(device.get("WGDEVICE_A_PRIVATE_KEY"))
    spec = DeviceSpec.of(
        listen_port=int(device.get("WGDEVICE_A_LISTEN_PORT", 0)),
        peers=specs,
        private_key=PrivateKey(private) if private else None,
        fwmark=int(device.get("WGDEVICE_A_FWMARK", 0)),
    )
    return ObservedDevice(spec, stats)


# --- the backend ----------------------------------------------------------------------------------


class KernelBackend:
    """A kernel `wireguard` link: created when missing, adopted when present, deleted on cleanup."""

    kind = "kernel"

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname

    @contextlib.contextmanager
    def _errors(self, what: str) -> Any:
        try:
            yield
        except BackendError:
            raise
        except Exception as exc:  # pyroute2 raises NetlinkError, OSError, ValueError: one message
            raise BackendError(f"{what} on {self.ifname}: {exc}", code="netlink") from exc

    def ensure_up(self, private_key: PrivateKey, listen_port: int) -> bool:
        """Adopt the link if it exists (it must be a wireguard one), else create and configure it."""
        from pyroute2 import IPRoute, WireGuard  # noqa: PLC0415

        kind = link_kind(self.ifname)
        if kind is not None:
            if kind != "wireguard":
                raise BackendError(
                    f"{self.ifname} exists and is not a WireGuard link", code="interface_in_use"
                )
            return False
        with self._errors("creating the link"), IPRoute() as ipr:
            ipr.link("add", ifname=self.ifname, kind="wireguard")
        with self._errors("setting key and port"), WireGuard() as wg:
            wg.set(self.ifname, private_key=private_key.reveal(), listen_port=listen_port)
        log.info(
            "wireguard link created",
            extra=kv(
                interface=self.ifname, listen_port=listen_port, key=keys.fingerprint(private_key.public_key)
            ),
        )
        return True

    def observe(self) -> ObservedDevice:
        """The device's configuration and counters, from every message of one dump."""
        from pyroute2 import WireGuard  # noqa: PLC0415

        with self._errors("reading the device"), WireGuard() as wg:
            return parse_info(list(wg.info(self.ifname)))

    def apply(self, ops: Sequence[DeviceOp]) -> None:
        """Send `ops` as one request per peer (or part of a peer's allowed IPs)."""
        from pyroute2 import WireGuard  # noqa: PLC0415

        requests = requests_for(ops)
        if not requests:
            return
        with self._errors("configuring the device"), WireGuard() as wg:
            for request in requests:
                wg.set(self.ifname, **request)

    def cleanup(self) -> None:
        """Delete the link (its routes and addresses go with it)."""
        from pyroute2 import IPRoute  # noqa: PLC0415

        if not is_kernel_device(self.ifname):
            return
        with self._errors("deleting the link"), IPRoute() as ipr:
            ipr.link("del", ifname=self.ifname)
        log.info("wireguard link deleted", extra=kv(interface=self.ifname))
