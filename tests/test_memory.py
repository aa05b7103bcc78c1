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

