"""A stop signal ends the agent even when it lands inside an edge that logs and goes on."""

from __future__ import annotations

import os
import signal

import pytest

from wgmesh.agent import main as agent_main
from wgmesh.agent.agent import Stopped


def _edge_that_logs_any_failure() -> str:
    # The shape of the route and tc edges: any failure becomes a logged one and the loop goes on.
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except Exception:
        return "swallowed"
    return "not raised"


def test_sigterm_inside_a_broad_except_still_stops() -> None:
    previous = signal.signal(signal.SIGTERM, agent_main._on_signal)
    try:
        with pytest.raises(Stopped, match="SIGTERM"):
            _edge_that_logs_any_failure()
    finally:
        signal.signal(signal.SIGTERM, previous)
