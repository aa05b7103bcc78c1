"""Give the C heap's free pages back to the system now and then (glibc's malloc_trim).

CPython serves objects over 512 bytes (audio frames, JSON messages, base64 payloads) from malloc.
Under a steady call load the holes they leave in glibc's main heap stay resident: a 35-minute
soak showed RSS creeping by 0.2-0.6 MB a minute, all of it in [heap], while the traced Python heap
stayed flat. `malloc_trim(0)` hands those free pages back, so RSS follows what is really in use.
Elsewhere (musl, macOS) there is no such call and this does nothing.
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


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


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
