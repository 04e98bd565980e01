"""A stop signal ends the agent even when it lands inside an edge that logs and goes on, or inside an
object's `__del__`, where the interpreter prints and ignores any exception."""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from wgmesh.agent import main as agent_main
from wgmesh.agent.agent import Stopped


@pytest.fixture
def stopper() -> Iterator[agent_main.StopOnSignal]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    made = agent_main.StopOnSignal(threading.Event())
    made.install()
    try:
        yield made
    finally:
        made.disarm()
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _edge_that_logs_any_failure() -> str:
    # The shape of the route and tc edges: any failure becomes a logged one and the loop goes on.
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    except Exception:
        return "swallowed"
    return "not raised"


def test_sigterm_inside_a_broad_except_still_stops(stopper: agent_main.StopOnSignal) -> None:
    with pytest.raises(Stopped, match="SIGTERM"):
        _edge_that_logs_any_failure()
    assert stopper.stop.is_set()


class _SignalledWhileCollected:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the Stopped raised here is printed and ignored


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the lost raise, on purpose
def test_a_stop_lost_inside_del_is_raised_again(stopper: agent_main.StopOnSignal) -> None:
    _SignalledWhileCollected()
    gc.collect()
    assert stopper.stop.is_set()
    deadline = time.monotonic() + 20 * agent_main.RERAISE_EVERY
    with pytest.raises(Stopped, match="SIGTERM"):
        while time.monotonic() < deadline:  # the agent going on with its work
            time.sleep(0.01)


def test_no_stop_is_raised_once_disarmed(stopper: agent_main.StopOnSignal) -> None:
    with pytest.raises(Stopped):
        os.kill(os.getpid(), signal.SIGTERM)
    stopper.disarm()  # the agent unwinds: its clean-up runs undisturbed
    time.sleep(4 * agent_main.RERAISE_EVERY)
