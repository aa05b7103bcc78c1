"""Give the C heap's free pages back to the system now and then (glibc's malloc_trim).

CPython serves objects over 512 bytes (audio frames, JSON messages, base64 payloads) from malloc.
Under a steady call load the holes they leave in glibc's main heap stay resident: a 35-minute
soak showed RSS creeping by 0.2-0.6 MB a minute, all of it in [heap], while the traced Python heap
stayed flat. `malloc_trim(0)` hands those free pages back, so RSS follows what is really in use.

Large blocks are the other half: glibc raises its mmap threshold after the first large free (up
to 32 MiB), so each argon2 PIN check's 19 MiB buffer then comes from, and stays in, the arena of
the worker thread that ran it: up to 19 MB per thread of the loop's pool, which no trim returns.
`map_large_blocks()` fixes the threshold at 1 MiB, so such buffers are mapped and unmapped.
Elsewhere (musl, macOS) neither call exists and both do nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)

TRIM_EVERY_S = 60.0
LARGE_BLOCK = 1 << 20
M_MMAP_THRESHOLD = -3  # glibc's malloc.h


@cache
def _libc_function(name: str, *argtypes: type) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    function = getattr(ctypes.CDLL(library), name, None)
    if function is None:
        return None
    function.argtypes, function.restype = list(argtypes), ctypes.c_int
    return function  # type: ignore[no-any-return]


def _malloc_trim() -> Callable[..., int] | None:
    return _libc_function("malloc_trim", ctypes.c_size_t)


def map_large_blocks() -> bool:
    """Serve blocks of LARGE_BLOCK or more from their own mappings, given back on free.
    Call once at start-up; False where the C library has no mallopt."""
    mallopt = _libc_function("mallopt", ctypes.c_int, ctypes.c_int)
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK) == 1


def release_free_heap() -> bool:
    """Return free heap pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


async def release_free_heap_periodically(every_s: float = TRIM_EVERY_S) -> None:
    """Run until cancelled. On the loop, not in a thread: a trim takes under a millisecond
    when a minute's worth of holes is all there is to give back (7 ms for 60 MB at once)."""
    if _malloc_trim() is None:
        return
    while True:
        await asyncio.sleep(every_s)
        started = time.perf_counter()
        release_free_heap()
        took_ms = (time.perf_counter() - started) * 1000
        if took_ms > 20:
            log.warning("releasing free heap pages took %.0f ms", took_ms)
