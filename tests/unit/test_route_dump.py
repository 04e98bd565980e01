"""wgmesh.agent.system.iproute.parse_routes: the agent's own routes out of a raw rtnetlink route dump.

The messages are built here as the kernel lays them out (nlmsghdr, rtmsg, rtattrs padded to 4 bytes);
that the real kernel's dump reads the same is checked by the data-plane integration tests and
benchmarks/agent_scale.py (a second apply of the same netmap makes no route operation).
"""

from __future__ import annotations

import socket
import struct

import pytest

from wgmesh.agent.system.iproute import MAIN_TABLE, ROUTE_PROTO, parse_routes
from wgmesh.errors import BackendError

OIF = 7


def _attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def _route(
    dst: str | None,
    dst_len: int,
    *,
    family: int = socket.AF_INET,
    oif: int = OIF,
    proto: int = ROUTE_PROTO,
    table: int = MAIN_TABLE,
) -> bytes:
    attrs = b""
    if dst is not None:
        attrs += _attr(1, socket.inet_pton(family, dst))  # RTA_DST
    attrs += _attr(4, struct.pack("=I", oif))  # RTA_OIF
    attrs += _attr(15, struct.pack("=I", table))  # RTA_TABLE
    body = (
        struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table if table < 256 else 252, proto, 0, 1, 0)
        + attrs
    )
    return struct.pack("=IHHII", 16 + len(body), 24, 2, 1, 0) + body  # RTM_NEWROUTE, NLM_F_MULTI


def _done() -> bytes:
    return struct.pack("=IHHII", 20, 3, 2, 1, 0) + struct.pack("=i", 0)


def test_only_the_agents_routes_out_of_its_interface_in_the_main_table() -> None:
    chunk = b"".join(
        [
            _route("10.2.0.0", 24),
            _route("100.96.0.2", 32),
            _route("2001:db8:2::", 48, family=socket.AF_INET6),
            _route("10.3.0.0", 24, proto=4),  # a static route an operator added
            _route("10.4.0.0", 24, oif=OIF + 1),  # another interface
            _route("10.5.0.0", 24, table=1000),  # another table (only RTA_TABLE can say 1000)
            _route(None, 0),  # a default route: not one the agent installs
        ]
    )
    routes, done = parse_routes(chunk, oif=OIF, proto=ROUTE_PROTO, table=MAIN_TABLE)
    assert routes == ["10.2.0.0/24", "100.96.0.2/32", "2001:db8:2::/48"]
    assert done is False


def test_the_dump_ends_with_done_and_routes_before_it_count() -> None:
    routes, done = parse_routes(
        _route("10.2.0.0", 24) + _done(), oif=OIF, proto=ROUTE_PROTO, table=MAIN_TABLE
    )
    assert (routes, done) == (["10.2.0.0/24"], True)


def test_an_error_message_is_a_backend_error() -> None:
    error = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16  # NLMSG_ERROR, EPERM
    with pytest.raises(BackendError, match="route dump failed"):
        parse_routes(error, oif=OIF, proto=ROUTE_PROTO, table=MAIN_TABLE)


def test_a_message_longer_than_the_read_is_refused() -> None:
    whole = _route("10.2.0.0", 24)
    with pytest.raises(BackendError, match="malformed"):
        parse_routes(whole[:-4], oif=OIF, proto=ROUTE_PROTO, table=MAIN_TABLE)
