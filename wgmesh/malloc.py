"""Giving freed memory back to the system, where the C library is glibc (a no-op elsewhere).

A coordinator at 1,000 nodes frees most of what a burst allocated (a thousand first status reports, their
versions and netmap changes within a minute), yet its RSS stayed ~120 MB higher: glibc kept the freed
chunks in its heap (measured: `mallinfo2` 156 MB of heap, 37 MB in use; `malloc_trim` took the RSS from
318 to 226 MB). Two causes, two remedies:

- glibc raises its mmap threshold to the largest block freed so far (up to 32 MB), so after the first
  209 KB report body every later one is carved from the heap, where it fragments it. A fixed threshold
  keeps blocks of 128 KiB and more (report bodies, netmap answers, compression buffers) mapped on their
  own and unmapped when freed.
- Smaller chunks freed in the middle of the heap are released only by `malloc_trim`, which the
  coordinator calls between bursts (`trim`, from a thread: it walks the heap under its lock).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import time

from wgmesh.logs import kv

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's <malloc.h>
MMAP_THRESHOLD = 128 * 1024
"""glibc's own starting threshold, kept fixed: a block this large is mapped and unmapped by itself."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # only glibc answers it
            return None
        libc = ctypes.CDLL("libc.so.6")
    except (ValueError, OSError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def available() -> bool:
    """Whether the C library is glibc, where the calls below do anything."""
    return _glibc() is not None


def map_large_blocks() -> bool:
    """Fix the mmap threshold at MMAP_THRESHOLD (before the process allocates much); False without glibc."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Return the heap's free pages to the system; False when none was (or without glibc)."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


async def trim_every(interval: float) -> None:
    """`trim` every `interval` seconds, on a worker thread, until cancelled."""
    if not available():
        return
    while True:
        await asyncio.sleep(interval)
        started = time.perf_counter()
        released = await asyncio.to_thread(trim)
        log.debug(
            "heap trimmed", extra=kv(released=released, ms=round((time.perf_counter() - started) * 1000, 1))
        )
