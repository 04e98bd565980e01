"""The textual form of secrets handed out by the coordinator: `PREFIX_ID.SECRET`.

The id makes lookup cheap; only the secret part is hashed and compared in constant time. The nodes'
credentials at a registry version (`LiveCredentials`) say which ones a coordinator may take from memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from wgmesh.errors import AuthError
from wgmesh.values import NodeId

_FORM = re.compile(r"^(?P<prefix>[a-z]{3})_(?P<id>[0-9]{1,18})\.(?P<secret>[A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True, slots=True)
class Credential:
    """A parsed secret: its kind prefix, the row id it names and the secret itself."""

    prefix: str
    id: int
    secret: str

    def __repr__(self) -> str:
        return f"Credential(prefix={self.prefix!r}, id={self.id})"


def make_credential(prefix: str, row_id: int, secret: str) -> str:
    """The presentable form of a secret."""
    return f"{prefix}_{row_id}.{secret}"


def parse_credential(text: str, prefix: str, *, error: str = "enrollment token is not valid") -> Credential:
    """Parse a presented secret of kind `prefix`, or raise AuthError."""
    match = _FORM.fullmatch(text.strip())
    if match is None or match["prefix"] != prefix:
        code = "invalid_token" if prefix == "wgt" else "invalid_credential"
        raise AuthError(error, code=code)
    return Credential(prefix, int(match["id"]), match["secret"])


@dataclass(frozen=True)
class LiveCredentials:
    """The node credentials' rows at a registry version, and the nodes holding more than one (a rotation's
    answer not yet used, or lost): a credential seen to work is taken from memory only while its row is
    here and its node holds no other (Registry._vouched)."""

    version: int
    rows: frozenset[int]
    shared: frozenset[NodeId]

    @classmethod
    def of(cls, version: int, rows: Iterable[tuple[int, int]]) -> LiveCredentials:
        """From (row id, node id) pairs."""
        ids: set[int] = set()
        seen: set[NodeId] = set()
        shared: set[NodeId] = set()
        for row_id, node_id in rows:
            ids.add(row_id)
            (shared if node_id in seen else seen).add(NodeId(node_id))
        return cls(version, frozenset(ids), frozenset(shared))
