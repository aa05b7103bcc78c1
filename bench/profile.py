"""Sample the app process with py-spy while a benchmark loads it: where its CPU went, and what held
its event loop for long stretches.

Needs py-spy (`.venv/bin/pip install py-spy`). py-spy runs on the driver's core; it pauses the
app for each sample (100 a second: whole stacks, at some cost), so take latency figures from a run
without --profile. Samples of a thread waiting (the event loop in epoll, an idle worker thread)
are left out of the CPU shares.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from bench.common import DRIVER_CORE, pin

SAMPLE_MS = 10  # --rate 100
# Leaf frames that are a thread waiting, not working.
_WAITING = ("Selector.select", "thread._worker", "Condition.wait", "Event.wait", "Thread._wait")
# The event loop's own frames: a stall is reported by the first frame below these.
_LOOP = ("asyncio.", "runpy.", "<", "threading.", "voice_app.cli.", "hypercorn.asyncio.run.")
# Where a frame's file path stops mattering: the library root, the stdlib, this checkout, or an
# --app-ref snapshot; what follows is the module.
_PREFIX = re.compile(
    r"^(?:.*/site-packages/|.*/lib/python3\.\d+/|.*/va_bench_app_[^/]+/|"
    + re.escape(str(Path(__file__).resolve().parents[1]))
    + "/)"
)


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100"]
    cmd += ["--idle", "--format", "speedscope", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pin(proc.pid, DRIVER_CORE)
    return proc


def _name(frame: dict[str, object]) -> str:
    """{'name': 'send', 'file': '…/site-packages/websockets/legacy/protocol.py'} →
    'websockets.legacy.protocol.send'."""
    path = _PREFIX.sub("", str(frame.get("file") or ""))
    module = path.removesuffix(".py").replace("/", ".")
    return f"{module}.{frame.get('name')}"


def _threads(path: Path) -> tuple[list[str], list[tuple[str, list[list[int]]]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    names = [_name(f) for f in data["shared"]["frames"]]
    return names, [(p["name"], p["samples"]) for p in data["profiles"]]


def summarize(path: Path, top: int = 12) -> list[str]:
    """Top functions by own time (leaf) and by inclusive time, over every thread's busy samples."""
    names, threads = _threads(path)
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for _, samples in threads:
        for stack in samples:
            frames = [names[i] for i in stack]
            if not frames or frames[-1].endswith(_WAITING):
                continue
            total += 1
            leaf[frames[-1]] += 1
            for name in set(frames):
                inclusive[name] += 1
    if not total:
        return ["  (no busy samples)"]
    lines = [f"  {total} busy samples at 100 Hz ({total * SAMPLE_MS / 1000:.1f} s of CPU)"]
    lines.append("  own time (leaf functions):")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in leaf.most_common(top)]
    lines.append("  inclusive time:")
    ranked = [
        (name, n)
        for name, n in inclusive.most_common()
        if n < total * 0.97 and not name.startswith(_LOOP)
    ]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in ranked[: top * 2]]
    return lines


def stalls(path: Path, min_ms: int = 50, top: int = 12) -> list[str]:
    """Stretches where the event loop thread never got back to epoll for `min_ms` or more.

    Each stretch is named by the deepest frame all its samples share below the loop's own frames:
    one callback that ran that long. When the samples share nothing below the loop, the loop was
    simply busy with many short callbacks back to back (saturated)."""
    names, threads = _threads(path)
    loop = next((s for n, s in threads if "MainThread" in n), threads[0][1] if threads else [])
    runs: list[list[list[str]]] = []
    current: list[list[str]] = []
    for stack in loop:
        frames = [names[i] for i in stack]
        if frames and not frames[-1].endswith(_WAITING):
            current.append(frames)
            continue
        if len(current) * SAMPLE_MS >= min_ms:
            runs.append(current)
        current = []
    by_cause: dict[str, list[int]] = defaultdict(list)
    for run in runs:
        common = run[0]
        for frames in run[1:]:
            n = 0
            while n < min(len(common), len(frames)) and common[n] == frames[n]:
                n += 1
            common = common[:n]
        own = [f for f in common if not f.startswith(_LOOP)]
        cause = " > ".join(own[-3:]) if own else "many callbacks back to back (loop saturated)"
        by_cause[cause].append(len(run) * SAMPLE_MS)
    if not runs:
        return [f"  no stretch of {min_ms} ms or more without the loop reaching epoll"]
    busy_ms = sum(len(r) for r in runs) * SAMPLE_MS
    lines = [
        f"  {len(runs)} stretches of ≥ {min_ms} ms without reaching epoll "
        f"({busy_ms / 1000:.1f} s in {len(loop) * SAMPLE_MS / 1000:.0f} s sampled), by cause:"
    ]
    ranked = sorted(by_cause.items(), key=lambda kv: -sum(kv[1]))
    for cause, lengths in ranked[:top]:
        n, worst, total = len(lengths), max(lengths), sum(lengths)
        lines.append(f"    {n:4d} x, max {worst:4d} ms, total {total:5d} ms  {cause}")
    # What the loop was doing in those stretches: each sample by the task it was running.
    tasks: Counter[str] = Counter()
    for run in runs:
        for frames in run:
            own = [f for f in frames if not f.startswith(_LOOP)]
            tasks[" > ".join(own[:2]) if own else "(the loop itself)"] += 1
    samples = sum(tasks.values())
    lines.append("  in those stretches, the loop ran (by task entry point):")
    lines += [f"    {100 * n / samples:5.1f}%  {name}" for name, n in tasks.most_common(top)]
    return lines
