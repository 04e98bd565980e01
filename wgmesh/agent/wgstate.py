"""Pure types describing a WireGuard device: what we want it to hold, and what it holds.

Keys are base64 strings as in the rest of wgmesh; backends convert at their edge (hex for UAPI).
Secrets (private and preshared keys) never show in a repr, so a logged or failed object leaks nothing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from wgmesh import keys
from wgmesh.values import Endpoint

KEEPALIVE = 25
"""Persistent keepalive (seconds) for every mesh peer: keeps NAT mappings open and handshakes fresh."""


class PrivateKey:
    """A WireGuard private key that shows only its public key's fingerprint when printed."""

    __slots__ = ("_public", "_value")

    def __init__(self, value: str) -> None:
        keys.decode_key(value)  # refuse a malformed key here, not deep inside a backend
        self._value = value
        self._public = keys.public_key_of(value)

    @property
    def public_key(self) -> str:
        """The matching public key (base64)."""
        return self._public

    def reveal(self) -> str:
        """The base64 private key, for the one place that hands it to the interface."""
        return self._value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return f"PrivateKey(public={keys.fingerprint(self._public)}…)"

    __str__ = __repr__


# Caches of pure functions of text: every apply parses each peer's allowed IPs from the netmap and from
# the interface again, and with 1,000 peers `ipaddress` alone took most of an apply's 100 ms budget.
# Bounded well above what one agent holds (a few prefixes per peer, a few thousand peers).
_CACHE_SIZE = 1 << 15


@functools.lru_cache(maxsize=_CACHE_SIZE)
def network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """`text` as a network, host bits cleared (ipaddress networks are immutable: safe to share)."""
    return ipaddress.ip_network(text.strip(), strict=False)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def canonical(text: str) -> str:
    """`text` as a network in its canonical spelling (what WireGuard and the kernel show)."""
    return str(network(text))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def span(text: str) -> tuple[int, int, int]:
    """`text` as (IP version, first address, last address), for overlap tests in plain integers."""
    net = network(text)
    first = int(net.network_address)
    return net.version, first, first + net.num_addresses - 1


def normalize_ips(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Allowed IPs as WireGuard stores them: host bits cleared, duplicates dropped, sorted."""
    return _normalized(tuple(prefixes))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _normalized(prefixes: tuple[str, ...]) -> tuple[str, ...]:
    nets = {network(p) for p in prefixes}
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return tuple(str(n) for n in ordered)


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """One peer's configuration: allowed IPs are normalized and sorted, so equal specs compare equal."""

    public_key: str
    allowed_ips: tuple[str, ...] = ()
    endpoint: Endpoint | None = None
    psk: str | None = field(default=None, repr=False)
    keepalive: int | None = None

    def __post_init__(self) -> None:
        # Normalize here so every producer (netmap, UAPI, netlink, tests) compares the same way.
        object.__setattr__(self, "allowed_ips", normalize_ips(self.allowed_ips))
        if self.keepalive == 0:
            object.__setattr__(self, "keepalive", None)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """A device's configuration. On a desired spec, None for `private_key`/`fwmark` means "leave as is"."""

    listen_port: int | None
    peers: Mapping[str, PeerSpec]
    private_key: PrivateKey | None = None
    fwmark: int | None = None

    @classmethod
    def of(
        cls,
        listen_port: int | None,
        peers: Iterable[PeerSpec],
        private_key: PrivateKey | None = None,
        fwmark: int | None = None,
    ) -> DeviceSpec:
        """Build a spec from a list of peers, keyed by public key."""
        return cls(listen_port, {p.public_key: p for p in peers}, private_key, fwmark)


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What the device counts for one peer."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    last_handshake: datetime | None = None
    endpoint: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class ObservedDevice:
    """What an interface holds now: its configuration plus per-peer counters."""

    spec: DeviceSpec
    stats: Mapping[str, PeerStats]

    @property
    def public_key(self) -> str | None:
        """The interface's public key, when it has a private key."""
        return self.spec.private_key.public_key if self.spec.private_key else None
