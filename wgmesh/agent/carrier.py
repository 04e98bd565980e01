"""The middle rung of a peer's path ladder: direct UDP, then TCP straight to the peer, then the relay.

`paths.decide` chooses between direct UDP and the shim (its `relay` path). Once a peer is on the shim, its
datagrams go over a direct TCP link to the peer's agent when one is up (agent/direct_tcp.py), else through
the relay home; WireGuard's endpoint stays the peer's shim socket either way, so moving between the two
never touches WireGuard. Pure: the shim and the path controller act on what these return.
"""

from __future__ import annotations

from dataclasses import dataclass

from wgmesh.agent.paths import FORCED, PeerPath
from wgmesh.values import PathKind


@dataclass(frozen=True, slots=True)
class Offer:
    """What the netmap says of direct TCP to one peer."""

    listener: bool
    """The peer's agent announced a listener (the coordinator leaves it out when the pair's P2P is off)."""
    endpoints: bool
    """The peer has endpoint candidates (the listener's hosts)."""


def wants_tcp(state: PeerPath | None, offer: Offer) -> bool:
    """Whether to dial the peer's listener: the peer is on the shim because UDP failed (never because P2P
    is off or the peer has no endpoints, which `decide` forces), and the peer listens."""
    return (
        state is not None
        and state.path == "relay"
        and state.code not in FORCED
        and offer.listener
        and offer.endpoints
    )


@dataclass(frozen=True, slots=True)
class Carried:
    """How a peer on the shim is carried, for status."""

    path: PathKind
    note: str | None
    """Added to the path's reason: why TCP straight to the peer is not used, when it was tried."""


def carried(*, link_up: bool, tried: bool, error: str | None) -> Carried:
    """The path of a peer on the shim: `tcp-direct` while its direct link is up, else the relay, with the
    direct link's last error when one was dialed (`tried`)."""
    if link_up:
        return Carried("tcp-direct", "TCP straight to the peer works")
    if tried:
        return Carried("relay", f"direct TCP: {error or 'connecting'}")
    return Carried("relay", None)


def keeps_new_link(current_dialer: int, new_dialer: int) -> bool:
    """Of two links up between one pair, whether the new one replaces the current one. Both ends keep the
    link dialed by the lower node id, so they settle on one connection without a word about it; a redial
    by the same node replaces its old link (that one is on its way out)."""
    return new_dialer <= current_dialer


def reported_path(path: PathKind, coordinator_takes_tcp: bool) -> PathKind:
    """The path as a report names it: a coordinator from before direct TCP refuses `tcp-direct` in a report
    (its model knows two paths), so to it such a peer is on the relay (the shim, as before)."""
    return "relay" if path == "tcp-direct" and not coordinator_takes_tcp else path
