"""What the lab benchmarks share: waiting on the lab as a script does, and the table of rounds they print.

Imported by the scripts next to it (`benchmarks/` is on the path of a script run from there).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from wgmesh.errors import WgmeshError
from wgmesh.lab import WaitTimeout, wait_until


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll `check`; the wall-clock time (time.time()) it first held, or SystemExit naming `what`.

    The lab's one wait (scaled to the machine); the API's errors, a report's missing key and a socket not
    there yet mean that the lab is still coming up.
    """
    started = time.time()
    try:
        took = wait_until(check, timeout, what, interval=interval, not_yet=(WgmeshError, KeyError, OSError))
    except WaitTimeout as exc:
        raise SystemExit(str(exc)) from exc
    return started + took


def print_rounds(
    columns: Sequence[tuple[str, str]], rounds: Sequence[object], width: int = 15, digits: int = 2
) -> None:
    """One line per round of the attributes `columns` names ((title, attribute)), then min, median, max."""
    print(f"{'round':<8}" + "".join(f"{title:>{width}}" for title, _ in columns))
    for n, r in enumerate(rounds, 1):
        print(f"{n:<8}" + "".join(f"{getattr(r, attr):>{width}.{digits}f}" for _, attr in columns))
    for label, pick in (("min", min), ("median", statistics.median), ("max", max)):
        values = [pick([getattr(r, attr) for r in rounds]) for _, attr in columns]
        print(f"{label:<8}" + "".join(f"{v:>{width}.{digits}f}" for v in values))
