"""A continuous ping between lab nodes and the silences in it: how tests and benchmarks see an outage.

`ping -D` stamps each reply with the wall clock, so a silence is measured by the replies themselves, not by
when the log was read.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmesh.lab.handle import Lab

REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from", re.M)


def reply_times(text: str) -> list[float]:
    """The `-D` timestamps (time.time() seconds) of the replies in `ping -D` output."""
    return [float(m.group(1)) for m in REPLY.finditer(text)]


def longest_gap(times: list[float], since: float = 0.0) -> float:
    """The longest silence between consecutive replies at or after `since` (0 for fewer than two)."""
    kept = [t for t in times if t >= since]
    return max((b - a for a, b in itertools.pairwise(kept)), default=0.0)


def outage(times: list[float], since: float) -> tuple[float, float]:
    """(seconds from `since` to the reply that ended the longest silence after it, that silence); NaNs
    when no reply came after `since`."""
    pairs = [(a, b) for a, b in itertools.pairwise(times) if b > since]
    if not pairs:
        return float("nan"), float("nan")
    a, b = max(pairs, key=lambda ab: ab[1] - ab[0])
    return b - since, b - a


class ContinuousPing:
    """`ping -D` every `interval` seconds from node `src` to `dst`, its output in `log`."""

    def __init__(self, lab: Lab, src: str, dst: object, log: Path, interval: float = 0.1) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = lab.popen(
            src, "ping", "-n", "-D", "-i", f"{interval:g}", "-W", "1", str(dst), stdout=self._out
        )

    def replies(self) -> list[float]:
        """Every reply's time so far."""
        return reply_times(self.log.read_text())

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest silence between replies since `since` (time.time())."""
        return longest_gap(self.replies(), since)

    def outage(self, since: float) -> tuple[float, float]:
        """(seconds from `since` until the longest silence after it ended, that silence)."""
        return outage(self.replies(), since)

    def replies_since(self, moment: float) -> int:
        """Replies logged after `moment` (time.time()); a test waits on this instead of sleeping."""
        return sum(1 for t in self.replies() if t > moment)

    def last_reply(self) -> float | None:
        """The latest reply's time, or None before the first."""
        times = self.replies()
        return times[-1] if times else None

    def stop(self) -> None:
        """End the ping (it is ours: by its pid) and close its log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self._out.close()
