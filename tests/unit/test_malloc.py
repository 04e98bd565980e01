"""wgmesh.malloc gives freed memory back to the system (glibc): each case runs in a fresh interpreter, whose
RSS is what is measured."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from wgmesh import malloc

pytestmark = pytest.mark.skipif(not malloc.available(), reason="the C library is not glibc")

RSS = """
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS"))
"""


def run(body: str) -> list[int]:
    """The MB figures `body` prints, run after RSS's `rss()` in a fresh interpreter."""
    code = "from wgmesh import malloc\n" + RSS + textwrap.dedent(body)
    # glibc's own tunables would change what is measured: the child runs without them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return [int(x) for x in done.stdout.split()]


def test_trim_returns_the_free_chunks_in_the_middle_of_the_heap() -> None:
    # 100 MB of 1 KB blocks, one in 64 kept alive (the last too): freed, they stay in the heap.
    before, after = run("""
        blocks = [bytes(1024) for _ in range(100_000)]
        kept = blocks[::64] + [blocks[-1]]
        del blocks
        before = rss()
        assert malloc.trim()
        print(before, rss())
    """)
    assert before - after >= 50, (before, after)


@pytest.mark.parametrize("fixed", [False, True])
def test_large_blocks_freed_are_unmapped_with_the_threshold_fixed(fixed: bool) -> None:
    # glibc raises its threshold to the largest block freed, and carves the next ones from the heap:
    # 200 blocks of 256 KB, each followed by a small one kept alive, stay resident when freed.
    grown, freed = run(f"""
        if {fixed}:
            assert malloc.map_large_blocks()
        first = bytearray(256 * 1024)
        del first
        blocks, kept = [], []
        for _ in range(200):
            blocks.append(bytearray(256 * 1024))
            kept.append(bytearray(1024))
        grown = rss()
        del blocks
        print(grown, rss())
    """)
    released = grown - freed
    assert released >= 40 if fixed else released < 10, (grown, freed)
