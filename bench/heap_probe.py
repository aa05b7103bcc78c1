"""`voice-app serve` with tracemalloc: what the Python heap holds over a soak, and where it grows.

    BENCH_HEAP_LOG=bench/results/heap.jsonl python -m bench.heap_probe serve --port 8080

Runs the app's own `voice_app.cli.main` unchanged, with a thread that turns tracemalloc on
(BENCH_HEAP_FRAMES frames per allocation, default 1) BENCH_HEAP_AFTER_S (15) seconds in, once
the app is up, and then every BENCH_HEAP_EVERY_S (60) seconds collects garbage and appends one
JSON line: the traced total, and the allocation sites that grew most since the first snapshot.
RSS cannot tell a leak from the allocator keeping freed pages; the traced heap can. One frame
about doubles the app's CPU; ten about triple it, enough to saturate one core at 4 calls.
Take latency figures from a run without it, and keep few frames for a long run.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import tracemalloc

TOP = 12


def _site(stat: tracemalloc.StatisticDiff) -> str:
    """Where it was allocated, and the nearest caller in the app's own code."""
    frames = list(reversed(stat.traceback))  # most recent first

    def name(frame: tracemalloc.Frame) -> str:
        tail = "/".join(frame.filename.split("/")[-2:])  # package/module.py
        return f"{tail}:{frame.lineno}"

    ours = next((f for f in frames if "/voice_app/" in f.filename), None)
    where = name(frames[0])
    return f"{where} (from {name(ours)})" if ours is not None and ours is not frames[0] else where


def _watch(path: str, frames: int, every_s: float, after_s: float) -> None:
    # Tracing from the first import slows start-up past the bench's patience, and what start-up
    # allocates is not the question: trace what the calls allocate.
    time.sleep(after_s)
    tracemalloc.start(frames)
    first: tracemalloc.Snapshot | None = None
    with open(path, "a", encoding="utf-8") as log:
        while True:
            time.sleep(every_s)
            gc.collect()
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            traced, peak = tracemalloc.get_traced_memory()
            line: dict[str, object] = {"at": time.monotonic(), "traced": traced, "peak": peak}
            if first is None:
                first = snapshot
            else:
                diff = snapshot.compare_to(first, "traceback")
                line["growth"] = [
                    {"site": _site(d), "bytes": d.size_diff, "count": d.count_diff}
                    for d in diff[:TOP]
                    if d.size_diff > 0
                ]
            log.write(json.dumps(line) + "\n")
            log.flush()


def main() -> None:
    every = float(os.environ.get("BENCH_HEAP_EVERY_S", "60"))
    after = float(os.environ.get("BENCH_HEAP_AFTER_S", "15"))
    frames = int(os.environ.get("BENCH_HEAP_FRAMES", "1"))
    watcher = threading.Thread(
        target=_watch, args=(os.environ["BENCH_HEAP_LOG"], frames, every, after), daemon=True
    )
    watcher.start()
    from voice_app.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
