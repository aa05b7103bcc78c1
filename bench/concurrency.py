"""Concurrent calls against ONE app process pinned to ONE core: latency, gaps, CPU, memory.

    .venv/bin/python -m bench.concurrency                       # 1, 10, 50, 100, 200 calls
    .venv/bin/python -m bench.concurrency --levels 1 50 --call-seconds 60 --ramp-rate 5

Each level gets a fresh `voice-app serve` (core 0), one warm-up call, a quiet moment for the idle
baseline, then N callers started over N / ramp-rate seconds, each a scripted conversation of
about --call-seconds (tool turn, plain turns, a barge-in). Figures are taken over the window when
all N calls were live at once (from the last stream start to the first call's end); when the ramp
is too long for such a window, over the whole level (marked *).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench import analysis, profile
from bench.common import (
    APP_CORE,
    DB_POOL_SIZE,
    DRIVER_CORE,
    RESULTS,
    SECONDS_PER_TURN,
    App,
    Bench,
    DbProbe,
    Knobs,
    LoopProbe,
    Sampler,
    add_arguments,
    app_log_levels,
    call_config,
    pin,
    run_calls,
    run_main,
    wait_for_quiet,
    warm_up,
    write_json,
)
from voice_app.simulator.report import CallReport

MB = 1024 * 1024


@dataclass
class Level:
    calls: int
    full_window: bool  # figures come from the window with every admitted call live
    start: float
    end: float
    turns: list[analysis.TurnFigures] = field(default_factory=list)
    unattributed: int = 0
    barge_ms: list[float] = field(default_factory=list)
    stale_bytes: int = 0
    gaps: analysis.Gaps = field(default_factory=analysis.Gaps)
    app_cpu: float | None = None  # % of one core
    standins_cpu: float | None = None
    driver_cpu: float | None = None
    core0_others: float | None = None  # % of the app's core used by anything but the app
    core0_irq: float | None = None  # ... of which interrupt work (loopback networking)
    core1_busy: float | None = None  # % of the driver's core used (by anyone)
    healthz_ms: list[float] = field(default_factory=list)  # the app's loop delay, probed
    problems: Counter[str] = field(default_factory=Counter)  # failed calls, unsplit turns
    gc_pauses: list[tuple[int, float]] | None = None  # (generation, ms), with --gc-log
    db_held_max: int = 0  # the app's PostgreSQL connections in use at once (pool: 10)
    db_full_pct: float = 0.0  # share of the window with the whole pool in use
    rss_idle: int = 0
    rss_peak: int = 0
    fds_idle: int = 0
    fds_peak: int = 0
    frame_lag_ms: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    busy: int = 0  # calls turned away with the busy line (MAX_LIVE_CALLS)
    reply_timeouts: int = 0
    app_errors: int = 0
    app_warnings: int = 0

    @property
    def window_s(self) -> float:
        return self.end - self.start

    @property
    def admitted(self) -> int:
        return max(1, self.calls - self.busy)

    @property
    def rss_per_call_kb(self) -> float:
        return (self.rss_peak - self.rss_idle) / self.admitted / 1024

    @property
    def fds_per_call(self) -> float:
        return (self.fds_peak - self.fds_idle) / self.admitted


async def run_level(b: Bench, app: App, calls: int, args: argparse.Namespace) -> Level:
    await warm_up(app)
    assert b.standins is not None
    pids = {"app": app.pid, "standins": b.standins.pid, "driver": os.getpid()}
    database = b.database_url.rsplit("/", 1)[1]
    with Sampler(pids) as sampler, LoopProbe(app.url) as probe, DbProbe(database) as db:
        await asyncio.sleep(2.0)  # the idle baseline, after warm-up
        idle = sampler.latest("app")
        await b.reset_timings()
        turns = max(2, round(args.call_seconds / SECONDS_PER_TURN))
        config = call_config(app.url, turns, record=True)
        ramp_s = calls / args.ramp_rate
        profiler = None
        if calls == args.profile:  # sample the app once every call is live
            profiler = asyncio.create_task(
                profile_app(app, calls, ramp_s + 2, args.call_seconds / 2)
            )
        reports = await run_calls(config, calls, ramp_s=ramp_s)
        if profiler is not None:
            await profiler
    timings = await b.timings()
    lines = await b.caller_lines()
    levels = app_log_levels(app.log)
    assert idle is not None
    level = summarize(calls, reports, timings, lines, sampler, idle, levels)
    level.healthz_ms = probe.ms(level.start, level.end)
    level.db_held_max, level.db_full_pct = db.held(level.start, level.end)
    if app.gc_log is not None:
        level.gc_pauses = app.gc_pauses(level.start, level.end)
    return level


def _turned_away(report: CallReport) -> bool:
    """Heard the busy line (MAX_LIVE_CALLS), at the door or when its stream was refused."""
    return report.outcome == "app_hangup" and any(
        e.kind == "app says" and "lines are busy" in e.text for e in report.events
    )


def summarize(
    calls: int,
    reports: list[CallReport],
    timings: dict[str, Any],
    lines: list[tuple[str, str]],
    sampler: Sampler,
    idle: Any,
    levels: dict[str, int],
) -> Level:
    live = [r for r in reports if not _turned_away(r)]  # the window is theirs
    starts = [r.stream_started_at for r in live if r.stream_started_at is not None]
    ends = [r.ended_at for r in live if r.ended_at is not None]
    start, end = max(starts), min(ends)
    full = start < end
    if not full:
        start, end = min(starts), max(ends)
    result = analysis.attribute(reports, timings, lines)
    level = Level(calls, full, start, end, busy=len(reports) - len(live))
    level.turns = [t for t in result.turns if start <= t.end <= end]
    level.unattributed = len(result.unattributed)
    for why in result.unattributed:
        level.problems["turn not split: " + re.sub(r".*\): |.*: ", "", why, count=1)] += 1
    for report in reports:
        for turn in report.turns:
            if turn.barge_in and turn.start is not None and start <= turn.start <= end:
                if turn.barge_in_latency_s is not None:
                    level.barge_ms.append(turn.barge_in_latency_s * 1000)
                level.stale_bytes += turn.stale_audio_bytes
            level.reply_timeouts += turn.reply_timed_out
        level.outcomes[report.outcome] = level.outcomes.get(report.outcome, 0) + 1
        if report.outcome not in ("caller_hangup", "app_hangup"):
            level.problems[f"call {report.outcome}: {report.detail[:80]}"] += 1
    level.gaps = analysis.audio_gaps(reports, result.reply_bytes, (start, end))
    level.app_cpu = sampler.cpu_percent("app", start, end)
    level.standins_cpu = sampler.cpu_percent("standins", start, end)
    level.driver_cpu = sampler.cpu_percent("driver", start, end)
    level.core0_others = sampler.others_on_core(APP_CORE, ["app"], start, end)
    level.core0_irq = sampler.cpu_percent(f"core{APP_CORE}-irq", start, end)
    level.core1_busy = sampler.cpu_percent(f"core{DRIVER_CORE}", start, end)
    peak = sampler.peak("app", start, end)
    level.rss_idle, level.fds_idle = idle.rss, idle.fds
    level.rss_peak = peak.rss if peak else idle.rss
    level.fds_peak = max((s.fds for s in sampler.window("app", start, end)), default=idle.fds)
    level.frame_lag_ms = max((r.max_frame_lag_s for r in reports), default=0.0) * 1000
    level.app_errors = levels.get("error", 0) + levels.get("critical", 0)
    level.app_warnings = levels.get("warning", 0)
    return level


async def profile_app(app: App, calls: int, after_s: float, seconds: float) -> None:
    await asyncio.sleep(after_s)
    out = RESULTS / f"profile-c{calls}.speedscope.json"
    proc = profile.record(app.pid, seconds, out)
    if proc is None:
        print("--profile: py-spy not found (.venv/bin/pip install py-spy)")
        return
    await asyncio.to_thread(proc.wait)
    if out.exists():
        print(f"py-spy profile of the app, {seconds:.0f} s with every call live ({out.name}):")
        print("\n".join(profile.summarize(out)))
        print("event-loop stalls:")
        print("\n".join(profile.stalls(out)), flush=True)


def sdk_socket_cost(deepgram_url: str, pairs: int) -> dict[str, Any] | None:
    """The Deepgram SDK's share: its sockets alone, in a fresh process on the app's core."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sdk_sockets", "--url", deepgram_url, "--pairs", str(pairs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    pin(proc.pid, APP_CORE)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    return json.loads(out) if proc.returncode == 0 and out else None


def print_tables(levels: list[Level], knobs: Knobs, args: argparse.Namespace) -> None:
    turns = max(2, round(args.call_seconds / SECONDS_PER_TURN))
    print(
        f"concurrency: one app process on core {APP_CORE}; {turns} turns per call "
        f"(~{args.call_seconds:.0f} s), ramp {args.ramp_rate:g} calls/s"
    )
    print(f"  {knobs.describe()}")
    print()
    print("Latency at full concurrency (ms): reply = caller's last word → first reply audio;")
    print("overhead = the app's own share of it (see bench/analysis.py); barge-in = caller's first")
    print("word over the assistant → its audio stops at the caller")
    print(
        f"{'calls':>6} {'window':>7} {'turns':>6} | {'reply p50':>9} {'p95':>6} {'p99':>6} | "
        f"{'ovh p50':>7} {'p95':>6} {'p99':>6} {'max':>6} | {'barge p50':>9} {'p95':>6} "
        f"{'p99':>6} | {'stale B':>7}"
    )
    for lv in levels:
        lat = analysis.pcts([t.ms["latency"] for t in lv.turns])
        ovh = analysis.pcts([t.ms["overhead"] for t in lv.turns])
        bar = analysis.pcts(lv.barge_ms)
        f = analysis.fmt
        window = f"{lv.window_s:5.0f}s" + (" " if lv.full_window else "*")
        print(
            f"{lv.calls:>6} {window:>7} {len(lv.turns):>6} | {f(lat['p50'], 9)} "
            f"{f(lat['p95'], 6)} {f(lat['p99'], 6)} | {f(ovh['p50'], 7)} {f(ovh['p95'], 6)} "
            f"{f(ovh['p99'], 6)} {f(ovh['max'], 6)} | {f(bar['p50'], 9)} {f(bar['p95'], 6)} "
            f"{f(bar['p99'], 6)} | {lv.stale_bytes:>7}"
        )
    print()
    print("Where the app's overhead went, p95 per part (ms)")
    print(
        f"{'calls':>6} | {'sf→LLM':>7} {'tools':>6} {'tok→TTS':>7} {'TTS→caller':>10} | "
        f"{'relay in p95':>12}"
    )
    nominal = knobs.stt_endpointing_ms + knobs.stt_latency_ms
    for lv in levels:
        p = {
            k: analysis.pcts([t.ms[k] for t in lv.turns])["p95"]
            for k in ("to_llm", "tools", "to_tts", "to_caller")
        }
        relay = analysis.pcts([t.ms["stt"] - nominal for t in lv.turns])["p95"]
        f = analysis.fmt
        print(
            f"{lv.calls:>6} | {f(p['to_llm'], 7)} {f(p['tools'], 6)} {f(p['to_tts'], 7)} "
            f"{f(p['to_caller'], 10)} | {f(relay, 12)}"
        )
    print()
    print("Outbound audio gaps (silence > 40 ms inside a reply, as the caller heard it), the app's")
    print("event loop (GET /healthz every 200 ms: its answer time is the loop's delay), its")
    print(
        f"PostgreSQL connections in use (pool of {DB_POOL_SIZE}; full% = time all were) and errors"
    )
    print(
        f"{'calls':>6} | {'replies':>7} {'w/ gap':>6} {'gaps':>5} {'max ms':>6} | "
        f"{'healthz p50':>11} {'p99':>6} {'max':>6} | {'db max':>6} {'full%':>5} | "
        f"{'busy':>5} {'failed':>6} {'timeouts':>8} {'unsplit':>7} {'app err':>7} {'warn':>5}"
    )
    for lv in levels:
        g, f = lv.gaps, analysis.fmt
        hz = analysis.pcts(lv.healthz_ms)
        failed = sum(n for k, n in lv.outcomes.items() if k not in ("caller_hangup", "app_hangup"))
        print(
            f"{lv.calls:>6} | {g.replies:>7} {g.replies_with_gaps:>6} {len(g.gaps_ms):>5} "
            f"{f(max(g.gaps_ms, default=None), 6)} | {f(hz['p50'], 11)} {f(hz['p99'], 6)} "
            f"{f(hz['max'], 6)} | {lv.db_held_max:>6} {lv.db_full_pct:5.0f} | "
            f"{lv.busy:>5} {failed:>6} {lv.reply_timeouts:>8} {lv.unattributed:>7} "
            f"{lv.app_errors:>7} {lv.app_warnings:>5}"
        )
    for lv in levels:
        for problem, n in lv.problems.most_common(3):
            print(f"  {lv.calls} calls: {n} x {problem}")
    print()
    print("Resources: app CPU as % of its one core; RSS/fds per call = (peak − idle) / calls;")
    print(
        "core-0 others = what else ran on the app's core (PostgreSQL, Redis, kernel, other jobs);"
    )
    print(
        "core 1 = driver (simulator) + stand-ins + others; lag = the simulator's worst frame delay"
    )
    print(
        f"{'calls':>6} | {'app CPU%':>8} {'%/call':>6} {'core-0 others%':>14} {'irq%':>4} | "
        f"{'RSS idle':>8} "
        f"{'peak MB':>7} {'KB/call':>7} {'fds/call':>8} | {'driver%':>7} {'stand-ins%':>10} "
        f"{'core-1%':>7} {'lag ms':>6}"
    )
    for lv in levels:
        f = analysis.fmt
        per_call = lv.app_cpu / lv.admitted if lv.app_cpu is not None else None
        print(
            f"{lv.calls:>6} | {f(lv.app_cpu, 8)} {f(per_call, 6, 2)} {f(lv.core0_others, 14)} "
            f"{f(lv.core0_irq, 4)} | "
            f"{lv.rss_idle / MB:8.0f} {lv.rss_peak / MB:7.0f} {lv.rss_per_call_kb:7.0f} "
            f"{lv.fds_per_call:8.1f} | {f(lv.driver_cpu, 7)} {f(lv.standins_cpu, 10)} "
            f"{f(lv.core1_busy, 7)} {lv.frame_lag_ms:6.0f}"
        )
    if any(lv.gc_pauses is not None for lv in levels):
        print()
        print("Garbage-collector passes of 5 ms or more in the window (the loop stands still)")
        print(f"{'calls':>6} | {'gen0':>10} {'gen1':>10} {'gen2':>22} | {'stalled s/min':>13}")
        for lv in levels:
            pauses = lv.gc_pauses or []
            cells = []
            for gen in (0, 1, 2):
                ms = [m for g, m in pauses if g == gen]
                cells.append(f"{len(ms)} x≤{max(ms, default=0):.0f}" if ms else "0")
            gen2 = [m for g, m in pauses if g == 2]
            if gen2:
                cells[2] = f"{len(gen2)} x, max {max(gen2):.0f} ms"
            per_min = sum(m for _, m in pauses) / 1000 / max(lv.window_s, 1) * 60
            print(f"{lv.calls:>6} | {cells[0]:>10} {cells[1]:>10} {cells[2]:>22} | {per_min:13.1f}")


async def bench(args: argparse.Namespace) -> None:
    knobs = Knobs.from_args(args)
    levels: list[Level] = []
    sdk: dict[str, Any] | None = None
    async with Bench("concurrency", knobs, args.app_ref, args.max_live_calls).run() as b:
        for calls in args.levels:
            await wait_for_quiet(args.quiet_wait)
            started = time.monotonic()
            async with b.app(
                label=f"c{calls}", gc_log=args.gc_log, gc_freeze=args.gc_freeze
            ) as app:
                level = await run_level(b, app, calls, args)
            levels.append(level)
            print(f"... {calls} calls done in {time.monotonic() - started:.0f} s", flush=True)
        if args.sdk_pairs:
            sdk = await asyncio.to_thread(sdk_socket_cost, b.urls["deepgram"], args.sdk_pairs)
    print()
    print_tables(levels, knobs, args)
    if sdk:
        print()
        print(
            f"Deepgram SDK sockets alone (fresh process, {sdk['pairs']} STT+TTS pairs): "
            f"{sdk['rss_kb_per_pair']:.0f} KB RSS, {sdk['heap_kb_per_pair']:.0f} KB Python "
            f"heap, {sdk['fds_per_pair']:.1f} fds per call"
        )
    write_json(
        RESULTS / "concurrency.json",
        {
            "args": vars(args),
            "sdk_sockets": sdk,
            "levels": [
                asdict(lv) | {"turns": [t.ms for t in lv.turns], "problems": dict(lv.problems)}
                for lv in levels
            ],
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50, 100, 200])
    parser.add_argument("--call-seconds", type=float, default=40.0, help="length of each call")
    parser.add_argument("--ramp-rate", type=float, default=10.0, help="calls started per second")
    parser.add_argument("--sdk-pairs", type=int, default=100, help="0 skips the SDK probe")
    parser.add_argument("--profile", type=int, metavar="CALLS", help="py-spy the app at this level")
    parser.add_argument(
        "--gc-log", action="store_true", help="launch the app via bench.gc_probe: GC pauses"
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="... and gc.freeze() after imports (experiment)"
    )
    add_arguments(parser)
    args = parser.parse_args()
    run_main(bench, args)


if __name__ == "__main__":
    main()
