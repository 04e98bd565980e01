"""operations.Lane: a bounded lane runs at most `at_once` calls at a time, and a body that does not arrive
within BODY_DEADLINE while it holds a turn is refused (408) instead of holding the others up."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request
from starlette.types import Message

from wgmesh.coordinator import operations
from wgmesh.coordinator.operations import Lane, Operation
from wgmesh.errors import RequestTimeoutError
from wgmesh.models import Heartbeat


async def _noop(_call: operations.Call) -> Heartbeat:
    return Heartbeat()


def test_a_bounded_lane_runs_its_calls_at_most_so_many_at_a_time() -> None:
    lane = Lane(threads=2, at_once=2)
    running, most = 0, 0

    async def call() -> None:
        nonlocal running, most
        async with lane.turn():
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(call() for _ in range(10)))

    asyncio.run(main())
    assert most == 2
    asyncio.run(main())  # another loop, as tests serve one app from one loop after another
    assert most == 2


def test_a_body_that_does_not_arrive_in_time_gives_up_its_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operations, "BODY_DEADLINE", 0.05)
    op = Operation("POST", "/x", _noop, "test", "node", body=Heartbeat, lane=Lane(threads=1, at_once=1))

    async def stalled() -> Message:
        await asyncio.sleep(3600)  # a client that sent its headers and then nothing
        raise AssertionError("unreachable")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "headers": [(b"content-type", b"application/json")],
    }

    async def main() -> None:
        with pytest.raises(RequestTimeoutError) as refused:
            await operations._read_in_turn(Request(scope, stalled), op, op.lane)
        assert refused.value.status == 408

    asyncio.run(main())
