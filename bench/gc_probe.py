"""`voice-app serve`, plus a record of the garbage collector's passes (a diagnostic launcher).

    BENCH_GC_LOG=bench/results/gc.jsonl python -m bench.gc_probe serve --port 8080

Runs the app's own `voice_app.cli.main` unchanged, with a `gc.callbacks` hook that appends every
collection of `BENCH_GC_MIN_MS` (default 5) ms or more to BENCH_GC_LOG as a JSON line, with its
time on CLOCK_MONOTONIC. A cyclic collection runs inside whichever callback allocated, so the
event loop stands still for its whole length: this says how much of the loop's stalls it is.

BENCH_GC_FREEZE=1 tries the remedy: import the app's modules first, then `gc.freeze()`, so the
collector never again walks the ~330k objects that imports leave behind (a full pass over them
alone takes ~190 ms on the bench host).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any


def install(path: str, min_ms: float) -> None:
    log = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
    started = 0.0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        ms = (time.perf_counter() - started) * 1000
        if ms >= min_ms:
            line = {"at": time.monotonic(), "gen": info["generation"], "ms": round(ms, 2)}
            log.write(json.dumps(line) + "\n")
            log.flush()

    gc.callbacks.append(on_gc)


def freeze_after_imports() -> None:
    import voice_app.agent.claude
    import voice_app.app
    import voice_app.speech.deepgram
    import voice_app.streams.routes
    import voice_app.tools.server  # noqa: F401 - imported for the heap they leave behind

    gc.collect()
    gc.freeze()


def main() -> None:
    install(os.environ["BENCH_GC_LOG"], float(os.environ.get("BENCH_GC_MIN_MS", "5")))
    if os.environ.get("BENCH_GC_FREEZE") == "1":
        freeze_after_imports()
    from voice_app.cli import main as cli_main

    sys.exit(cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
