"""Per-turn response latency, and how much of it is the app's own time; barge-in; greeting.

    .venv/bin/python -m bench.turn_latency                 # ~30 caller turns, 2 calls at a time
    .venv/bin/python -m bench.turn_latency --turns 60 --llm-ttft-ms 500

The app runs as `voice-app serve` in its own process on core 0, with the instrumented Deepgram and
Anthropic stand-ins (bench/standins.py) in another and the caller simulator in this one (core 1).
See bench/analysis.py for how a turn's latency is split between the providers and the app.
"""

from __future__ import annotations

import argparse
import math
import os
import time

from bench import analysis
from bench.common import (
    APP_CORE,
    RESULTS,
    SCRIPT,
    Bench,
    Knobs,
    Sampler,
    add_arguments,
    app_log_levels,
    call_config,
    run_calls,
    run_main,
    wait_for_quiet,
    warm_up,
    write_json,
)


async def bench(args: argparse.Namespace) -> None:
    knobs = Knobs.from_args(args)
    calls = math.ceil(args.turns / args.turns_per_call)
    bench_run = Bench("turn_latency", knobs, args.app_ref, args.max_live_calls).run()
    async with bench_run as b, b.app() as app:
        await warm_up(app)
        await wait_for_quiet(args.quiet_wait)
        await b.reset_timings()
        assert b.standins is not None
        pids = {"app": app.pid, "standins": b.standins.pid, "driver": os.getpid()}
        with Sampler(pids) as sampler:
            started = time.monotonic()
            config = call_config(app.url, args.turns_per_call, record=False)
            reports = await run_calls(config, calls, parallel=args.parallel)
            ended = time.monotonic()
        timings = await b.timings()
        lines = await b.caller_lines()
        levels = app_log_levels(app.log)
    result = analysis.attribute(reports, timings, lines)
    report(args, knobs, reports, result, ended - started, levels)
    app_cpu = analysis.fmt(sampler.cpu_percent("app", started, ended), 0)
    others = analysis.fmt(sampler.others_on_core(APP_CORE, ["app"], started, ended), 0)
    print(f"CPU during the run (% of one core): app {app_cpu}, others on the app's core {others}")
    write_json(
        RESULTS / "turn_latency.json",
        {
            "knobs": vars(args),
            "turns": [t.ms | {"tool": t.tool, "index": t.index} for t in result.turns],
        },
    )


def report(
    args: argparse.Namespace,
    knobs: Knobs,
    reports: list,  # type: ignore[type-arg]
    result: analysis.Attribution,
    elapsed: float,
    levels: dict[str, int],
) -> None:
    outcomes: dict[str, int] = {}
    for r in reports:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    turns = result.turns
    nominal_stt = knobs.stt_endpointing_ms + knobs.stt_latency_ms
    print(
        f"turn_latency: {len(reports)} calls x {args.turns_per_call} turns, "
        f"{args.parallel} at a time, {elapsed:.0f} s; outcomes {outcomes}"
    )
    print(f"  {knobs.describe()}")
    print(f"  script: {' | '.join(line.text for line in SCRIPT)} (cycled)")
    print()
    print("Response latency and its parts, per caller turn (ms)")
    for label, subset in (
        ("all turns", turns),
        ("tool turns", [t for t in turns if t.tool]),
        ("plain turns", [t for t in turns if not t.tool]),
    ):
        print(f" {label}:")
        print("\n".join(analysis.breakdown(subset, width=28)))
    relay_in = [t.ms["stt"] - nominal_stt for t in turns]
    app_total = [t.ms["overhead"] + r for t, r in zip(turns, relay_in, strict=True)]
    print(analysis.pct_row(f"inbound relay (stt − {nominal_stt})", relay_in, 28))
    print(analysis.pct_row("app total (overhead + relay)", app_total, 28))
    print()
    print("  overhead = (first audio at caller − speech_final sent) − LLM waited − TTS TTFB,")
    print("  all stamps on the host's CLOCK_MONOTONIC; LLM waited = each tool step's request →")
    print("  message_stop, plus the final step's request → the token completing sentence one.")
    if result.unattributed:
        print(f"  {len(result.unattributed)} turns not split, e.g. {result.unattributed[0]}")
    print()
    barge = [t for r in reports for t in r.turns if t.barge_in]
    stops = [t.barge_in_latency_s * 1000 for t in barge if t.barge_in_latency_s is not None]
    stale = [t.stale_audio_bytes for t in barge]
    print("Barge-in: caller's first word over the assistant → its audio stops at the caller")
    print(analysis.pct_row("barge-in stop", stops, 28))
    cleared = sum(t.barge_in_cleared for t in barge)
    print(
        f"  {len(barge)} barge-ins, {cleared} ended by a clear (the rest ran out while paused); "
        f"stale audio after clear: {sum(stale)} bytes in {sum(1 for s in stale if s)} turns"
    )
    print()
    greet = [g[0] * 1000 for g in result.greetings]
    greet_app = [(g[0] - g[1]) * 1000 for g in result.greetings if g[1] is not None]
    print("Greeting: stream `start` → first audio at the caller")
    print(analysis.pct_row("greeting", greet, 28))
    print(analysis.pct_row("greeting − TTS TTFB", greet_app, 28))
    lag = max((r.max_frame_lag_s for r in reports), default=0.0) * 1000
    print()
    print(f"simulator max frame lag {lag:.0f} ms; app log levels {dict(levels)}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_latency", description=__doc__)
    parser.add_argument("--turns", type=int, default=30, help="caller turns in all")
    parser.add_argument("--turns-per-call", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=2, help="calls at a time")
    add_arguments(parser)
    args = parser.parse_args()
    run_main(bench, args)


if __name__ == "__main__":
    main()
