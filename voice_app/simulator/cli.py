"""`voice-app call`: play Twilio (and a scripted caller) against this app.

    voice-app call --say "what is on my todo list"
    voice-app call --say "what is on my todo list" --barge-in-after 1500 --say "stop"
    voice-app call --calls 200 --ramp 20 --say "what is on my todo list" --report run.json

Steps (--say, --wav, --dtmf) run in the order given, each after the assistant has finished its
reply to the previous one; --barge-in-after MS makes the *next* step start MS after that reply
starts playing instead.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import httpx

from voice_app.config import ConfigError, Settings
from voice_app.simulator.call import CallConfig, prepare, run_call
from voice_app.simulator.caller import Step, StepKind
from voice_app.simulator.report import (
    CallReport,
    format_call,
    format_summary,
    summarize,
    write_json,
)
from voice_app.simulator.voice import VoiceError, write_wav


class _StepAction(argparse.Action):
    """Collects --say/--wav/--dtmf/--barge-in-after into one ordered list of steps."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        steps: list[Step] = getattr(namespace, "steps", None) or []
        value = str(values)
        if self.dest == "barge_in_after":
            try:
                namespace.barge_in_after = float(value)
            except ValueError:
                parser.error(f"--barge-in-after: expected milliseconds, got {value!r}")
            namespace.steps = steps
            return
        kind = cast(StepKind, self.dest)
        if kind == "dtmf" and (not value or any(c not in "0123456789*#" for c in value)):
            parser.error(f"--dtmf: expected digits, * or #, got {value!r}")
        steps.append(Step(kind, value, getattr(namespace, "barge_in_after", None)))
        namespace.barge_in_after = None
        namespace.steps = steps


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    defaults = CallConfig.from_settings(settings)
    p = argparse.ArgumentParser(
        prog="voice-app call",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(steps=[], barge_in_after=None)
    where = p.add_argument_group("where")
    where.add_argument("--url", default=defaults.url, help="where to connect (default %(default)s)")
    where.add_argument(
        "--public-url",
        default=defaults.public_url,
        help="the URL the app believes it is at; requests are signed for it "
        "(default PUBLIC_BASE_URL: %(default)s)",
    )
    where.add_argument("--voice-path", default=defaults.voice_path)
    where.add_argument(
        "--status-path",
        default=defaults.status_path,
        help="call status callback at the end; '' to skip (default %(default)s)",
    )
    who = p.add_argument_group("caller")
    who.add_argument("--from", dest="from_number", default=defaults.from_number)
    who.add_argument("--to", dest="to_number", default=defaults.to_number)
    who.add_argument("--account", default=defaults.account, help="answers an account Gather")
    who.add_argument("--pin", default=defaults.pin, help="answers a PIN Gather")
    who.add_argument(
        "--gather-input",
        choices=("dtmf", "speech"),
        default="dtmf",
        help="answer Gathers with Digits or a SpeechResult",
    )
    script = p.add_argument_group("script (in order)")
    script.add_argument("--say", action=_StepAction, metavar="TEXT", help="speak a line")
    script.add_argument("--wav", action=_StepAction, metavar="FILE", help="play a WAV file")
    script.add_argument("--dtmf", action=_StepAction, metavar="DIGITS", help="press keys")
    script.add_argument(
        "--barge-in-after",
        action=_StepAction,
        metavar="MS",
        help="start the next step MS after the assistant's reply starts playing",
    )
    script.add_argument(
        "--quiet-ms",
        type=float,
        default=defaults.quiet_ms,
        help="silence that ends the assistant's reply (default %(default)s)",
    )
    script.add_argument("--reply-timeout", type=float, default=defaults.reply_timeout_s)
    script.add_argument("--hangup-after", type=float, metavar="S", help="hang up S s into the call")
    script.add_argument("--max-duration", type=float, default=defaults.max_duration_s)
    out = p.add_argument_group("output")
    out.add_argument("--record", metavar="WAV", help="what the caller heard, 8 kHz 16-bit")
    out.add_argument("--report", metavar="JSON", help="write the run as JSON")
    out.add_argument(
        "--transcribe",
        action="store_true",
        help="recover the assistant's words from its audio (offline pocketsphinx)",
    )
    load = p.add_argument_group("load")
    load.add_argument("--calls", type=int, default=1, help="concurrent calls")
    load.add_argument("--ramp", type=float, default=0.0, help="seconds over which to start them")
    return p


def config_from_args(args: argparse.Namespace, settings: Settings) -> CallConfig:
    return CallConfig.from_settings(
        settings,
        url=args.url.rstrip("/"),
        public_url=args.public_url.rstrip("/"),
        voice_path=args.voice_path,
        status_path=args.status_path or None,
        from_number=args.from_number,
        to_number=args.to_number,
        account=args.account,
        pin=args.pin,
        gather_input=args.gather_input,
        steps=args.steps,
        quiet_ms=args.quiet_ms,
        reply_timeout_s=args.reply_timeout,
        hangup_after_s=args.hangup_after,
        max_duration_s=args.max_duration,
        record=bool(args.record or args.transcribe),
    )


async def run_many(config: CallConfig, calls: int, ramp_s: float) -> list[CallReport]:
    """`calls` concurrent calls, started evenly over `ramp_s` seconds."""
    await prepare(config.steps)  # once, before any call starts
    # One HTTP client for all calls: building one per call (an SSL context each) stalls the
    # loop for long enough to delay every running call's frames during the ramp.
    async with httpx.AsyncClient(timeout=15.0, limits=httpx.Limits(max_connections=None)) as http:

        async def one(i: int) -> CallReport:
            await asyncio.sleep(ramp_s * i / calls)
            return await run_call(dataclasses.replace(config, call_sid=None), http=http)

        return list(await asyncio.gather(*(one(i) for i in range(calls))))


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    parser = build_parser(settings)
    args = parser.parse_args(argv)
    if args.barge_in_after is not None:
        parser.error("--barge-in-after must come before the step it applies to")
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    config = config_from_args(args, settings)
    try:
        reports = asyncio.run(_run(config, args))
    except VoiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.calls == 1:
        print(format_call(reports[0]))
    else:
        for report in reports:
            line = f"{report.call_sid}  {report.outcome:13} {report.duration_s:6.1f} s"
            print(f"{line}  {report.detail}")
    print(format_summary(summarize(reports)))
    if args.record:
        _write_recordings(Path(args.record), reports)
    if args.report:
        write_json(args.report, reports)
    return 0 if all(r.outcome not in ("error", "timeout") for r in reports) else 1


async def _run(config: CallConfig, args: argparse.Namespace) -> list[CallReport]:
    reports = await run_many(config, args.calls, args.ramp)
    if args.transcribe:
        from voice_app.simulator.transcribe import offline_stt, transcribe_replies

        stt = offline_stt()
        if stt is None:
            print("--transcribe: voice_app.speech.offline_stt is not available", file=sys.stderr)
        else:
            for report in reports:
                if problem := await transcribe_replies(report, stt):
                    print(f"--transcribe: {problem}", file=sys.stderr)
                    break
    return reports


def _write_recordings(path: Path, reports: list[CallReport]) -> None:
    for i, report in enumerate(reports, 1):
        if report.recording is None:
            continue
        target = path if len(reports) == 1 else path.with_name(f"{path.stem}-{i}{path.suffix}")
        write_wav(target, report.recording)
        print(f"recorded {len(report.recording) / 8000:.1f} s to {target}")
