"""Which peers get a handshake started by the agent itself: those a netmap brings new, or under a new key
(a peer that joined, rotated its key or was replaced). DataPlane.start_handshakes sends each one datagram
through the tunnel, so WireGuard handshakes now instead of at the next packet either side sends.

Why: the two ends of a pair learn of each other from their own netmaps, a moment apart. A handshake from
the end that learned first reaches an end that does not know it yet and is dropped, and WireGuard then
waits 5 s (REKEY_TIMEOUT) before that end tries again: a new site answered after 5 s instead of 0.3 s (CI
run 21), a rotated key after 5.1 s instead of 0.2 s. A handshake started by the end that learned last
always meets a peer that knows it, so each end starting one when it learns makes the later one succeed.
"""

from __future__ import annotations

from wgmesh.models import NetMap, PeerConfig


def to_start(old: NetMap | None, new: NetMap) -> list[PeerConfig]:
    """The peers of `new` that `old` did not list under the same key (all of them without `old`)."""
    known = {(peer.node_id, peer.public_key) for peer in old.peers} if old is not None else set()
    return [peer for peer in new.peers if (peer.node_id, peer.public_key) not in known]
