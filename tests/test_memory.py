"""Free C-heap pages go back to the system (glibc), in a process of its own so RSS is clean."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

SCENARIO = """
import gc, os
from voice_app.memory import release_free_heap
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
# ~80 MB of malloc'd blocks (over pymalloc's 512 bytes), one in fifty kept: the holes between the
# survivors cannot be trimmed off the heap's top, as in a long call load.
blocks = [bytes(2000) + bytes([i % 256]) for i in range(40000)]
survivors = blocks[::50]
del blocks
gc.collect()
before = rss()
assert release_free_heap()
print(before - rss())
"""


@pytest.mark.skipif(
    sys.platform != "linux" or "musl" in (ctypes.util.find_library("c") or ""),
    reason="malloc_trim is glibc's",
)
def test_free_heap_pages_are_given_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO], capture_output=True, text=True, timeout=60, check=True
    )
    released_mb = int(out.stdout) / 2**20
    assert released_mb > 40, released_mb  # ~74 MB here; without the trim RSS stays put



ARGON2_IN_THREADS = """
import asyncio, os, sys
from voice_app.auth.secrets import hash_secret, verify_secret
from voice_app.memory import map_large_blocks, release_free_heap
def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
if sys.argv[1] == "mapped":
    assert map_large_blocks()
stored = hash_secret("4826")
async def main():
    before = rss()
    # PIN checks in the loop's thread pool, as sign-in runs them (19 MiB of argon2 memory each).
    await asyncio.gather(*(asyncio.to_thread(verify_secret, stored, "4826") for _ in range(12)))
    release_free_heap()
    print(rss() - before)
asyncio.run(main())
"""


@pytest.mark.skipif(
    sys.platform != "linux" or "musl" in (ctypes.util.find_library("c") or ""),
    reason="mallopt is glibc's",
)
def test_pin_hashing_buffers_do_not_stay_in_worker_thread_arenas() -> None:
    def growth_mb(mode: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", ARGON2_IN_THREADS, mode],
            capture_output=True, text=True, timeout=120, check=True,
        )
        return int(out.stdout) / 2**20

    assert growth_mb("default") > 30  # ~95 MB here: a 19 MiB buffer kept per worker thread
    assert growth_mb("mapped") < 10  # ~0 here
