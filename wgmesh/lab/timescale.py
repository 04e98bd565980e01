"""How much slower this machine is than the one the lab's time-outs were set on.

Every wait in the lab and the tests is a deadline on a condition; the deadline is a budget for work
(starting Python programs, a netlink dump, a handshake), so on a machine that does that work slower
the budget must grow with it. The factor comes from `WGMESH_TIME_SCALE`: set by hand, or measured once
by the test session (`measure_factor`) and exported, so every program the tests start inherits it.

What is measured is the start-up of a coordinator's imports in a fresh interpreter: the work that
made a fixed 30 s time-out fail under QEMU's software emulation, and a fair proxy for what the lab
waits on (Python programs starting, then doing a little work each).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from wgmesh.errors import ValidationError

ENV = "WGMESH_TIME_SCALE"

REFERENCE_STARTUP = 0.8
"""Seconds `python -c "import wgmesh.coordinator.main"` takes on the machine the time-outs were set on
(the 2-core development VM, idle: 0.55-0.7 s; rounded up so that an idle machine measures ≤ 1)."""

MAX_FACTOR = 100.0
"""A ceiling, so a measurement taken during a burst of load cannot make a hung test wait for hours."""

_PROBE = "import wgmesh.coordinator.main"


def time_scale() -> float:
    """The factor in force: `WGMESH_TIME_SCALE`, or 1 when it is not set."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return 1.0
    return parse_factor(raw)


def parse_factor(raw: str) -> float:
    """A factor as written in the environment: a number from 1 to MAX_FACTOR."""
    try:
        factor = float(raw)
    except ValueError:
        raise ValidationError(f"{ENV}={raw!r} is not a number", code="invalid_time_scale") from None
    if not 1.0 <= factor <= MAX_FACTOR:
        raise ValidationError(f"{ENV}={raw} must be from 1 to {MAX_FACTOR:g}", code="invalid_time_scale")
    return factor


def scaled(seconds: float) -> float:
    """`seconds` of budget on the reference machine, as a budget on this one."""
    return seconds * time_scale()


def factor_for(startup: float, reference: float = REFERENCE_STARTUP) -> float:
    """The factor for a measured start-up time: never below 1 (a fast machine keeps the budgets)."""
    return round(min(MAX_FACTOR, max(1.0, startup / reference)), 1)


def measure_startup(python: str = sys.executable, runs: int = 2) -> float:
    """Seconds a fresh interpreter takes to import the coordinator; the best of `runs`.

    The first run reads every module from disk (under QEMU through 9p: 64 s where the second took a
    fraction of it); what the lab waits on is mostly later, warm starts, so the best run is the measure.
    """
    ceiling = REFERENCE_STARTUP * MAX_FACTOR
    best = ceiling
    for _ in range(runs):
        started = time.monotonic()
        try:
            subprocess.run([python, "-c", _PROBE], check=True, timeout=ceiling)
        except subprocess.TimeoutExpired:
            continue  # at least MAX_FACTOR times slower: the ceiling stands
        best = min(best, time.monotonic() - started)
    return best


def measure_factor() -> float:
    """The factor for this machine, measured now."""
    return factor_for(measure_startup())


def describe() -> str:
    """`FACTOR (coordinator start-up S s, reference R s)`: measured now, for scripts to read."""
    startup = measure_startup()
    return (
        f"{factor_for(startup):g} (coordinator start-up {startup:.2f} s, reference {REFERENCE_STARTUP:g} s)"
    )
