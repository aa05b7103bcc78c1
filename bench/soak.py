"""N concurrent calls for M minutes against one app process: latency over time, errors, memory.

    .venv/bin/python -m bench.soak                           # 50 calls for 2 minutes
    .venv/bin/python -m bench.soak --calls 100 --minutes 30

N caller slots, each placing scripted calls (~--call-seconds each) back to back until M minutes
have passed; calls under way then finish, so the run stops by itself a call length later. Prints
per-minute windows (by when the caller's line ended) and the app's memory at the start (idle,
after a warm-up call), at the end of the load, and after 10 s idle again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

import psutil

from bench import analysis
from bench.common import (
    APP_CORE,
    RESULTS,
    SECONDS_PER_TURN,
    App,
    Bench,
    Knobs,
    LoopProbe,
    Sampler,
    add_arguments,
    app_log_levels,
    call_config,
    callers,
    http_client,
    run_main,
    wait_for_quiet,
    warm_up,
    write_json,
)
from voice_app.simulator.call import run_call
from voice_app.simulator.report import CallReport

MB = 1024 * 1024


async def place_calls(
    app: App, args: argparse.Namespace, recordings: dict[str, bytes]
) -> list[CallReport]:
    """The slots' calls, back to back until the deadline. What each caller heard is kept
    compressed (the tone and silence shrink ~50x): a long soak would not fit otherwise."""
    turns = max(2, round(args.call_seconds / SECONDS_PER_TURN))
    config = call_config(app.url, turns, record=True)
    deadline = time.monotonic() + args.minutes * 60
    reports: list[CallReport] = []
    configs = callers(config)
    async with http_client() as http:

        async def slot(i: int) -> None:
            await asyncio.sleep(i / args.ramp_rate)
            while time.monotonic() < deadline:
                report = await run_call(next(configs), http=http)
                recordings[report.call_sid] = zlib.compress(report.recording or b"", 1)
                report.recording = None
                reports.append(report)

        await asyncio.gather(*(slot(i) for i in range(args.calls)))
    return reports


async def bench(args: argparse.Namespace) -> None:
    knobs = Knobs.from_args(args)
    recordings: dict[str, bytes] = {}
    bench_run = Bench("soak", knobs, args.app_ref, args.max_live_calls).run()
    async with bench_run as b, b.app(heap_frames=args.heap) as app:
        await warm_up(app)
        await wait_for_quiet(args.quiet_wait)
        assert b.standins is not None
        pids = {"app": app.pid, "standins": b.standins.pid, "driver": os.getpid()}
        with Sampler(pids, interval=1.0) as sampler, LoopProbe(app.url) as probe:
            await asyncio.sleep(2.0)
            idle = sampler.latest("app")
            await b.reset_timings()
            started = time.monotonic()
            reports = await place_calls(app, args, recordings)
            load_ended = time.monotonic()
            await asyncio.sleep(10.0)  # idle again: what stays allocated
            after = sampler.latest("app")
            left_open = open_sockets(app.pid, b.urls)
        timings = await b.timings()
        lines = await b.caller_lines()
        levels = app_log_levels(app.log)
    assert idle is not None and after is not None
    result = analysis.attribute(reports, timings, lines)
    gaps = analysis.Gaps()
    for report in reports:  # one recording unpacked at a time
        report.recording = zlib.decompress(recordings.pop(report.call_sid))
        gaps.extend(analysis.audio_gaps([report], result.reply_bytes))
        report.recording = None
    minutes = windows(reports, result, gaps, sampler, probe, started, load_ended)
    print_report(
        args,
        knobs,
        reports,
        result,
        gaps,
        minutes,
        sampler,
        idle,
        after,
        levels,
        (started, load_ended),
    )
    print(f"  TCP connections the app still held 10 s after the last call: {left_open}")
    if app.heap_log is not None:
        print_heap(app.heap_log)
    write_json(RESULTS / "soak.json", {"args": vars(args), "minutes": minutes})


def print_heap(path: Path) -> None:
    """The traced Python heap per snapshot, and where it grew between the first and the last."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    if not rows:
        print("  heap: no snapshot taken (the run was shorter than one interval)")
        return
    traced = " ".join(f"{r['traced'] / MB:.1f}" for r in rows)
    print(f"  traced Python heap after each minute's gc.collect() (MB): {traced}")
    print("  grew most since the first snapshot (bytes, objects, where):")
    for site in rows[-1].get("growth", []):
        print(f"    {site['bytes']:>10,} {site['count']:>7,}  {site['site']}")


def open_sockets(pid: int, urls: dict[str, str]) -> dict[str, int]:
    """The app's TCP connections by peer and state: what calls left behind once they all ended
    (CLOSE_WAIT: the peer closed, the app never did)."""
    ports = {int(u.rsplit(":", 1)[1]): name for name, u in urls.items()}
    ports |= {5432: "postgresql", 6379: "redis"}
    proc = psutil.Process(pid)
    listening = {c.laddr.port for c in proc.net_connections(kind="tcp") if not c.raddr}
    counts: dict[str, int] = {}
    for conn in proc.net_connections(kind="tcp"):
        if not conn.raddr:
            continue
        if conn.laddr.port in listening:
            name = "inbound (callers, probes)"
        else:
            name = ports.get(conn.raddr.port, f"port {conn.raddr.port}")
        key = f"{name} {conn.status}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def windows(
    reports: list[CallReport],
    result: analysis.Attribution,
    gaps: analysis.Gaps,
    sampler: Sampler,
    probe: LoopProbe,
    started: float,
    ended: float,
) -> list[dict[str, Any]]:
    rows = []
    start = started
    while start < ended:
        end = min(start + 60, ended)
        turns = [t for t in result.turns if start <= t.end < end]
        calls_ended = [r for r in reports if r.ended_at is not None and start <= r.ended_at < end]
        live = sum(
            1
            for r in reports
            if r.stream_started_at is not None
            and r.stream_started_at < end
            and (r.ended_at or end) >= start
        )
        barge = [
            t.barge_in_latency_s * 1000
            for r in reports
            for t in r.turns
            if t.barge_in
            and t.start is not None
            and start <= t.start < end
            and t.barge_in_latency_s is not None
        ]
        g = gaps.between(start, end)
        rss = sampler.peak("app", start, end)
        rows.append(
            {
                "minute": len(rows) + 1,
                "calls_live": live,
                "turns": len(turns),
                "latency": analysis.pcts([t.ms["latency"] for t in turns]),
                "overhead": analysis.pcts([t.ms["overhead"] for t in turns]),
                "barge": analysis.pcts(barge),
                "replies": g.replies,
                "replies_with_gaps": g.replies_with_gaps,
                "calls_ended": len(calls_ended),
                "failed_calls": sum(r.outcome != "caller_hangup" for r in calls_ended),
                "reply_timeouts": sum(t.reply_timed_out for r in calls_ended for t in r.turns),
                "app_cpu": sampler.cpu_percent("app", start, end),
                "core0_others": sampler.others_on_core(APP_CORE, ["app"], start, end),
                "healthz": analysis.pcts(probe.ms(start, end)),
                "rss_mb": rss.rss / MB if rss else None,
            }
        )
        start = end
    return rows


def print_report(
    args: argparse.Namespace,
    knobs: Knobs,
    reports: list[CallReport],
    result: analysis.Attribution,
    gaps: analysis.Gaps,
    minutes: list[dict[str, Any]],
    sampler: Sampler,
    idle: Any,
    after: Any,
    levels: dict[str, int],
    load: tuple[float, float],
) -> None:
    f = analysis.fmt
    outcomes: dict[str, int] = {}
    for r in reports:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    print(
        f"soak: {args.calls} concurrent calls for {args.minutes:g} min against one app process "
        f"(core {APP_CORE}); {len(reports)} calls, {len(result.turns)} turns split"
    )
    print(f"  {knobs.describe()}")
    print()
    print("Per minute (ms; by when the caller's line ended). gapped = replies with a silence over")
    print("40 ms / replies; hz = GET /healthz answer time (the app's event-loop delay); CPU = the")
    print("app's, % of its core; c0 oth = what else ran on the app's core")
    print(
        f"{'min':>3} {'live':>4} {'turns':>5} | {'reply p50':>9} {'p95':>6} {'p99':>6} | "
        f"{'ovh p50':>7} {'p95':>6} {'p99':>6} | {'barge p95':>9} | {'gapped':>9} | "
        f"{'failed':>6} {'timeouts':>8} | {'hz p99':>6} {'CPU%':>5} {'c0 oth%':>7} {'RSS MB':>6}"
    )
    for m in minutes:
        lat, ovh = m["latency"], m["overhead"]
        print(
            f"{m['minute']:>3} {m['calls_live']:>4} {m['turns']:>5} | {f(lat['p50'], 9)} "
            f"{f(lat['p95'], 6)} {f(lat['p99'], 6)} | {f(ovh['p50'], 7)} {f(ovh['p95'], 6)} "
            f"{f(ovh['p99'], 6)} | {f(m['barge']['p95'], 9)} | "
            f"{m['replies_with_gaps']:>3}/{m['replies']:<5} | {m['failed_calls']:>6} "
            f"{m['reply_timeouts']:>8} | {f(m['healthz']['p99'], 6)} {f(m['app_cpu'], 5)} "
            f"{f(m['core0_others'], 7)} "
            f"{f(m['rss_mb'], 6)}"
        )
    print()
    print("Whole run")
    print(analysis.pct_row("reply latency", [t.ms["latency"] for t in result.turns]))
    print(analysis.pct_row("app overhead", [t.ms["overhead"] for t in result.turns]))
    print(
        f"  outcomes {outcomes}; {len(result.unattributed)} turns not split; "
        f"{len(gaps.gaps)} audio gaps in {gaps.replies_with_gaps}/{gaps.replies} replies; "
        f"protocol errors {sum(r.protocol_error_count for r in reports)}; "
        f"app log {dict(levels)}"
    )
    peak = sampler.peak("app", *load)
    lag = max((r.max_frame_lag_s for r in reports), default=0.0) * 1000
    print(
        f"  memory (RSS): idle before {idle.rss / MB:.0f} MB, peak under load "
        f"{(peak.rss if peak else 0) / MB:.0f} MB, idle after {after.rss / MB:.0f} MB "
        f"(growth {(after.rss - idle.rss) / MB:+.0f} MB); open files {idle.fds} → {after.fds}"
    )
    print(
        f"  simulator max frame lag {lag:.0f} ms; CPU over the load: app "
        f"{f(sampler.cpu_percent('app', *load), 0)}%, driver "
        f"{f(sampler.cpu_percent('driver', *load), 0)}%, stand-ins "
        f"{f(sampler.cpu_percent('standins', *load), 0)}%, rest of the host "
        f"{f(sampler.foreign_percent(*load), 0)}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--call-seconds", type=float, default=30.0, help="length of each call")
    parser.add_argument("--ramp-rate", type=float, default=10.0, help="slots started per second")
    parser.add_argument(
        "--heap",
        type=int,
        default=0,
        metavar="FRAMES",
        help="trace the app's heap (bench.heap_probe) keeping FRAMES frames per allocation: "
        "slower (1 frame: ~2x the app's CPU, 10: ~3x); tells a leak from allocator growth",
    )
    add_arguments(parser)
    args = parser.parse_args()
    run_main(bench, args)


if __name__ == "__main__":
    main()
