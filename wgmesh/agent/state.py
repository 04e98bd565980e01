"""The agent's state directory: its private key, its node credential, the last netmap and the coordinator's pin."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pydantic

from wgmesh import keys
from wgmesh.errors import WgmeshError
from wgmesh.models import NetMap, RelayGrant
from wgmesh.pins import Pin
from wgmesh.secure_files import ensure_private_dir, read_private, write_private

_Cached = TypeVar("_Cached", bound=pydantic.BaseModel)


class StateError(WgmeshError):
    """The state directory holds something unreadable."""

    code = "state"


@dataclass(frozen=True, slots=True)
class Enrollment:
    """Who this node is to the coordinator."""

    node_id: int
    credential: str
    coordinator: str

    def __repr__(self) -> str:
        return f"Enrollment(node_id={self.node_id}, coordinator={self.coordinator!r})"


@dataclass(frozen=True, slots=True)
class CoordinatorPins:
    """The coordinator key this agent trusts, and the next one it announced (agent/coordinator_pin.py)."""

    pin: Pin
    next: Pin | None = None


class StateDir:
    """Files under the agent's state directory (0700; every file 0600, written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def key_file(self) -> Path:
        return self.path / "private.key"

    @property
    def next_key_file(self) -> Path:
        """The key a rotation made, until the agent has taken it (agent.Agent.rotate_key)."""
        return self.path / "private.key.next"

    @property
    def enrollment_file(self) -> Path:
        return self.path / "enrollment.json"

    @property
    def netmap_file(self) -> Path:
        return self.path / "netmap.json"

    def prepare(self) -> None:
        """Create the directory with mode 0700."""
        ensure_private_dir(self.path)

    def _write(self, path: Path, data: bytes) -> None:
        self.prepare()  # the directory may have been removed under a running agent
        write_private(path, data)

    def private_key(self) -> keys.KeyPair:
        """The node's key pair; generated here on first use, never sent anywhere."""
        raw = read_private(self.key_file)
        if raw is not None:
            private = raw.decode().strip()
            try:
                return keys.KeyPair(private, keys.public_key_of(private))
            except WgmeshError as exc:
                raise StateError(f"{self.key_file} does not hold a valid key: {exc.message}") from exc
        pair = keys.generate_keypair()
        self._write(self.key_file, (pair.private_key + "\n").encode())
        return pair

    def pending_key(self) -> keys.KeyPair | None:
        """The key of a rotation not finished yet, or None."""
        raw = read_private(self.next_key_file)
        if raw is None:
            return None
        private = raw.decode().strip()
        try:
            return keys.KeyPair(private, keys.public_key_of(private))
        except WgmeshError as exc:
            raise StateError(f"{self.next_key_file} does not hold a valid key: {exc.message}") from exc

    def new_pending_key(self) -> keys.KeyPair:
        """Make the key a rotation offers the coordinator; it is on disk before the coordinator hears of it,
        so an agent that dies in between takes it on restart instead of losing it."""
        pair = keys.generate_keypair()
        self._write(self.next_key_file, (pair.private_key + "\n").encode())
        return pair

    def commit_key(self, pair: keys.KeyPair) -> None:
        """Make `pair` the node's key (the coordinator holds its public half) and forget the pending file."""
        self._write(self.key_file, (pair.private_key + "\n").encode())
        self.next_key_file.unlink(missing_ok=True)

    def enrollment(self) -> Enrollment | None:
        """The stored enrollment, or None before the first one."""
        raw = read_private(self.enrollment_file)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Enrollment(int(data["node_id"]), str(data["credential"]), str(data["coordinator"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"{self.enrollment_file} is corrupt; remove it to enroll again") from exc

    def save_enrollment(self, enrollment: Enrollment) -> None:
        """Persist the credential (0600, atomic)."""
        body = {
            "node_id": enrollment.node_id,
            "credential": enrollment.credential,
            "coordinator": enrollment.coordinator,
        }
        self._write(self.enrollment_file, json.dumps(body).encode())

    def cached_netmap(self) -> NetMap | None:
        """The last netmap applied, or None; a corrupt cache counts as none."""
        return _read_cache(self.netmap_file, NetMap)

    @property
    def grant_file(self) -> Path:
        """The last relay grant (its ticket is a bearer secret)."""
        return self.path / "relay-grant.json"

    def cached_grant(self) -> RelayGrant | None:
        """The last relay grant, so relayed peers keep working when the agent restarts without a coordinator."""
        return _read_cache(self.grant_file, RelayGrant)

    def save_grant(self, grant: RelayGrant) -> None:
        """Cache a relay grant (0600, atomic)."""
        self._write(self.grant_file, grant.model_dump_json().encode())

    @property
    def direct_tcp_key_file(self) -> Path:
        """The direct TCP listener's TLS key (PEM, 0600): kept, so its pin in peers' netmaps stays."""
        return self.path / "direct-tcp.key"

    @property
    def pin_file(self) -> Path:
        """The pinned coordinator key (not secret, but what keeps a forged coordinator out: 0600 too)."""
        return self.path / "coordinator-pin.json"

    def coordinator_pins(self) -> CoordinatorPins | None:
        """The pinned coordinator key, or None before the first contact with a pin."""
        raw = read_private(self.pin_file)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            following = data.get("next")
            return CoordinatorPins(Pin.parse(data["pin"]), Pin.parse(following) if following else None)
        except (ValueError, KeyError, TypeError, AttributeError, WgmeshError) as exc:
            # Never fall back to trusting any key: the agent stays refused until an operator looks.
            raise StateError(
                f"{self.pin_file} is corrupt; restore it, or remove it and restart with --coordinator-pin"
            ) from exc

    def save_coordinator_pins(self, pins: CoordinatorPins) -> None:
        """Persist the pins (0600, atomic)."""
        body = {"pin": str(pins.pin), "next": str(pins.next) if pins.next is not None else None}
        self._write(self.pin_file, json.dumps(body).encode())

    def save_netmap(self, netmap: NetMap) -> None:
        """Cache a netmap (it holds preshared keys: 0600, atomic)."""
        self._write(self.netmap_file, netmap.model_dump_json().encode())


def _read_cache(path: Path, model: type[_Cached]) -> _Cached | None:
    """A cache file parsed as `model`, or None when it is missing or unreadable: a cache rebuilds from
    the coordinator, so a corrupt one must never stop the agent."""
    raw = read_private(path)
    if raw is None:
        return None
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError:
        return None
