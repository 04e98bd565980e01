"""Waiting for a condition with a deadline: the only way lab code and e2e tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable

from wgmesh.errors import WgmeshError
from wgmesh.lab.timescale import time_scale

# Where a long wait says how far it got (a spinner, a log line, or nothing).
Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """The progress sink when nobody is watching."""


class WaitTimeout(WgmeshError, AssertionError, code="timeout"):
    """A condition did not hold before its deadline (an AssertionError too, so pytest reports it plainly)."""


class NotYet(WgmeshError, code="not_yet"):
    """A waited-for condition does not hold yet; the message says why (the last one is reported on timeout)."""


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    not_yet: tuple[type[Exception], ...] = (),
) -> float:
    """Call `predicate` until it returns a true value; returns the seconds it took.

    A predicate may raise NotYet to say why it is not there yet (a test's predicate may use `assert`,
    pytest's way to say the same); the last reason is reported on timeout. `not_yet` names more
    exceptions that mean the same, for a predicate that asks something still coming up (a benchmark
    reading the coordinator's API while the lab starts). `timeout` is a budget on the reference
    machine: it is multiplied by the time scale (wgmesh.lab.timescale), so a slower machine waits
    longer before giving up, never less.
    """
    factor = time_scale()
    limit = timeout * factor
    start = time.monotonic()
    deadline = start + limit
    last = ""
    caught: tuple[type[Exception], ...] = (NotYet, AssertionError, *not_yet)
    while True:
        try:
            if predicate():
                return time.monotonic() - start
            last = ""
        except caught as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            detail = f" (last: {last})" if last else ""
            scale = f" ({timeout:g}s x time scale {factor:g})" if factor != 1 else ""
            raise WaitTimeout(f"timed out after {limit:g}s{scale} waiting for {what}{detail}")
        time.sleep(interval)
