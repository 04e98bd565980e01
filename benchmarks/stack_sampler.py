"""A small sampling profiler for the coordinator under benchmarks/scale.py (py-spy is not installed here).

cProfile sees only the thread that enabled it, and the coordinator does most of its work in the
threadpool (run_in_threadpool): a thread here samples every thread's Python stack instead
(sys._current_frames) and counts, per function, the samples where it was on top (self) and anywhere on the
stack (total). Threads found waiting (epoll, a lock, a queue) are not counted, so the figures are shares of
busy samples.

It is driven through a control file, not signals (uvicorn owns the main thread's signal handling):
`on` starts a window, `off LABEL` writes the window's top functions to `<control>.LABEL.txt` and waits for
the next `on`. Started by scale.py as `python benchmarks/stack_sampler.py CONTROL -- coordinator args…`.
"""

from __future__ import annotations

import linecache
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType

INTERVAL = 0.005
TOP = 25
# Where a thread waits rather than works: its top frame is one of these (file name end, function).
IDLE = {
    ("threading.py", "wait"),
    ("threading.py", "_wait_for_tstate_lock"),
    ("selectors.py", "select"),
    ("queue.py", "get"),
    ("runners.py", "run"),  # uvloop's loop runs in C: an idle main thread shows asyncio.run's frame
    ("server.py", "serve"),
    ("base_events.py", "run_until_complete"),
    ("thread.py", "_worker"),  # a threadpool worker waiting for work
}
# A thread whose top frame's current line reads like this waits on a lock or a queue (the waiting itself
# is in C, so the Python frame on top is the caller): counted apart, as "blocked at".
BLOCKED = re.compile(r"\block\b|_lock\b|\.acquire\(|\.wait\(|\.get\(\)|\bwith self\._\w*lock")


_KEYS: dict[CodeType, str] = {}
_LINES: dict[tuple[CodeType, int], tuple[str, bool]] = {}


def _key(frame: FrameType) -> str:
    # Cached by code object: a busy coordinator starves this thread of the GIL, so each sample is cheap.
    code = frame.f_code
    key = _KEYS.get(code)
    if key is None:
        short = "/".join(Path(code.co_filename).parts[-2:])
        key = _KEYS[code] = f"{code.co_name} ({short}:{code.co_firstlineno})"
    return key


def _line(frame: FrameType) -> tuple[str, bool]:
    """The frame's current source line, and whether it waits on a lock or a queue."""
    at = (frame.f_code, frame.f_lineno or 0)  # None in some frames (a generator being set up)
    found = _LINES.get(at)
    if found is None:
        text = linecache.getline(frame.f_code.co_filename, at[1]).strip()[:60]
        found = _LINES[at] = (text, bool(BLOCKED.search(text)))
    return found


class Sampler:
    def __init__(self, control: Path) -> None:
        self.control = control
        self.own = threading.get_ident()
        self.self_counts: Counter[str] = Counter()
        self.total_counts: Counter[str] = Counter()
        self.blocked: Counter[str] = Counter()
        self.busy = 0
        self.samples = 0

    def sample(self) -> None:
        self.samples += 1
        for ident, frame in sys._current_frames().items():
            if ident == self.own:
                continue
            code = frame.f_code
            if (code.co_filename.rpartition("/")[2], code.co_name) in IDLE:
                continue
            line, blocked = _line(frame)
            if blocked:
                self.blocked[f"{_key(frame)} line {frame.f_lineno}: {line}"] += 1
                continue
            self.busy += 1
            self.self_counts[f"{_key(frame)} line {frame.f_lineno}"] += 1
            seen: set[str] = set()
            walk: FrameType | None = frame
            while walk is not None:
                key = _key(walk)
                if key not in seen:
                    seen.add(key)
                    self.total_counts[key] += 1
                walk = walk.f_back

    def dump(self, label: str) -> None:
        out = [
            f"window {label}: {self.samples} sampling rounds, {self.busy} busy thread samples, "
            f"{sum(self.blocked.values())} blocked"
        ]
        busy = max(self.busy, 1)
        out.append("top by self:")
        out += [f"  {n * 100 / busy:5.1f}%  {k}" for k, n in self.self_counts.most_common(TOP)]
        out.append("top by total (on the stack):")
        out += [f"  {n * 100 / busy:5.1f}%  {k}" for k, n in self.total_counts.most_common(TOP * 2)]
        out.append("blocked at (thread samples, not shares of busy):")
        out += [f"  {n:6d}  {k}" for k, n in self.blocked.most_common(10)]
        Path(f"{self.control}.{label}.txt").write_text("\n".join(out) + "\n")
        self.self_counts.clear()
        self.total_counts.clear()
        self.blocked.clear()
        self.busy = self.samples = 0

    def run(self) -> None:
        self.own = threading.get_ident()
        active = False
        last_check = 0.0
        while True:
            now = time.monotonic()
            if now - last_check > 0.05:
                last_check = now
                try:
                    command = self.control.read_text().split()
                except OSError:
                    command = []
                if command[:1] == ["on"] and not active:
                    active = True
                elif command[:1] == ["off"] and active:
                    active = False
                    self.dump(command[1] if len(command) > 1 else "window")
                    self.control.write_text("done\n")
            if active:
                try:
                    self.sample()
                except Exception as exc:  # a profiler must not end the window it measures
                    self.blocked[f"sampler error: {exc!r}"[:120]] += 1
            time.sleep(INTERVAL)


def main() -> None:
    control = Path(sys.argv[1])
    rest = sys.argv[sys.argv.index("--") + 1 :]
    sys.argv = ["wgmesh-coordinator", *rest]
    threading.Thread(target=Sampler(control).run, daemon=True, name="stack-sampler").start()
    from wgmesh.coordinator.main import main as coordinator  # noqa: PLC0415 - after the sampler starts

    coordinator()


if __name__ == "__main__":
    main()
