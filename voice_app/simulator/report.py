"""What a simulated call did: the outcome, the timeline, per-turn latencies; JSON and text forms.

Times inside a report are loop-clock seconds; everything written out is milliseconds from the
start of the call (the first webhook).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voice_app.simulator.caller import Turn

Outcome = Literal[
    "app_hangup",  # the app's TwiML hung up (or ran out of verbs) after the stream
    "transferred",  # <Dial>, or the stream ended and the app had nothing more to run
    "stream_closed",  # the app closed the stream and no TwiML followed
    "caller_hangup",  # the script finished, or --hangup-after
    "timeout",  # --max-duration reached
    "error",  # a webhook failed, the handshake was refused, TwiML was unreadable
]


@dataclass(frozen=True, slots=True)
class Event:
    at: float  # loop time
    kind: str
    text: str


@dataclass
class CallReport:
    call_sid: str
    started_at: float  # loop time of the first webhook
    outcome: Outcome = "error"
    detail: str = ""
    ended_at: float | None = None
    stream_started_at: float | None = None  # the recording starts here
    turns: list[Turn] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    marks_echoed: int = 0
    clears: int = 0
    protocol_errors: list[str] = field(default_factory=list)  # the first few
    protocol_error_count: int = 0
    max_frame_lag_s: float = 0.0
    recording: bytes | None = None  # μ-law 8 kHz as the caller heard it, from stream start

    def ms(self, at: float | None) -> float | None:
        return None if at is None else _round(at - self.started_at)

    @property
    def duration_s(self) -> float:
        return (self.ended_at or self.started_at) - self.started_at

    def timeline(self) -> list[Event]:
        """Webhook/stream events merged with what happened in each turn, in time order."""
        events = list(self.events)
        for turn in self.turns:
            if turn.index > 0 and turn.start is not None:
                kind = "caller keys" if turn.kind == "dtmf" else "caller says"
                events.append(Event(turn.start, kind, turn.said or ""))
            if turn.first_played is not None:
                words = f": {turn.assistant_words}" if turn.assistant_words else ""
                text = f"assistant audio starts (turn {turn.index}){words}"
                events.append(Event(turn.first_played, "assistant", text))
            if turn.barge_in_stop is not None:
                how = "cleared" if turn.barge_in_cleared else "ran out"
                events.append(Event(turn.barge_in_stop, "barge-in", f"assistant audio {how}"))
        return sorted(events, key=lambda e: e.at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_sid": self.call_sid,
            "outcome": self.outcome,
            "detail": self.detail,
            "duration_ms": _round(self.duration_s),
            "stream_started_ms": self.ms(self.stream_started_at),
            "marks_echoed": self.marks_echoed,
            "clears": self.clears,
            "protocol_error_count": self.protocol_error_count,
            "protocol_errors": self.protocol_errors,
            "max_frame_lag_ms": _round(self.max_frame_lag_s),
            "turns": [self._turn(turn) for turn in self.turns],
            "timeline": [
                {"t_ms": self.ms(e.at), "event": e.kind, "text": e.text} for e in self.timeline()
            ],
        }

    def _turn(self, turn: Turn) -> dict[str, Any]:
        return {
            "index": turn.index,
            "kind": turn.kind,
            "caller_said": turn.said,
            "transcript": turn.transcript,
            "assistant_words": turn.assistant_words,
            "caller_start_ms": self.ms(turn.start),
            "caller_end_ms": self.ms(turn.end),
            "latency_arrival_ms": _round(turn.latency_arrival_s),
            "latency_played_ms": _round(turn.latency_played_s),
            "reply_timed_out": turn.reply_timed_out,
            "assistant_overlapped": turn.assistant_overlapped,
            "stale_audio_bytes": turn.stale_audio_bytes,
            "barge_in": turn.barge_in,
            "barge_in_latency_ms": _round(turn.barge_in_latency_s),
            "barge_in_cleared": turn.barge_in_cleared,
        }


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- Many calls ------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0–100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _stats(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": _r(percentile(values, 50)),
        "p95": _r(percentile(values, 95)),
        "p99": _r(percentile(values, 99)),
        "max": _r(max(values)) if values else None,
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def summarize(reports: Iterable[CallReport]) -> dict[str, Any]:
    """Outcome counts and latency percentiles (ms) across calls."""
    reports = list(reports)
    greeting: list[float] = []
    arrival: list[float] = []
    played: list[float] = []
    barge: list[float] = []
    for report in reports:
        for turn in report.turns:
            target = greeting if turn.index == 0 else arrival
            if turn.latency_arrival_s is not None:
                target.append(turn.latency_arrival_s * 1000)
            if turn.index > 0 and turn.latency_played_s is not None:
                played.append(turn.latency_played_s * 1000)
            if turn.barge_in_latency_s is not None:
                barge.append(turn.barge_in_latency_s * 1000)
    return {
        "calls": len(reports),
        "outcomes": dict(Counter(r.outcome for r in reports)),
        "greeting_ms": _stats(greeting),
        "reply_arrival_ms": _stats(arrival),
        "reply_played_ms": _stats(played),
        "barge_in_ms": _stats(barge),
        "max_frame_lag_ms": _r(max((r.max_frame_lag_s * 1000 for r in reports), default=0.0)),
        "protocol_errors": sum(r.protocol_error_count for r in reports),
    }


def write_json(path: str | Path, reports: list[CallReport]) -> None:
    body = {"calls": [r.to_dict() for r in reports], "summary": summarize(reports)}
    Path(path).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


# --- Text ------------------------------------------------------------------------------------


def format_call(report: CallReport) -> str:
    lines = [f"call {report.call_sid}"]
    for event in report.timeline():
        lines.append(f"  {(event.at - report.started_at):8.3f}s  {event.kind:12} {event.text}")
    lines.append(
        f"  outcome: {report.outcome}"
        + (f" ({report.detail})" if report.detail else "")
        + f", {report.duration_s:.1f} s, {report.marks_echoed} marks echoed, "
        f"{report.clears} clears"
    )
    for turn in report.turns:
        who = "greeting" if turn.index == 0 else f"{turn.kind} {turn.said!r}"
        parts = [f"  turn {turn.index} ({who}):"]
        if turn.assistant_overlapped:
            parts.append("assistant talked during the line;")
        if turn.reply_timed_out:
            parts.append("no reply")
        elif turn.latency_arrival_s is None:
            parts.append("no reply after the line")
        else:
            parts.append(f"reply arrived {_fmt(turn.latency_arrival_s)}")
            parts.append(f"played {_fmt(turn.latency_played_s)}")
        if turn.barge_in:
            parts.append(f"barge-in, assistant stopped after {_fmt(turn.barge_in_latency_s)}")
        lines.append(" ".join(parts))
    for error in report.protocol_errors:
        lines.append(f"  protocol error: {error}")
    if report.protocol_error_count > len(report.protocol_errors):
        lines.append(f"  ... {report.protocol_error_count} protocol errors in all")
    return "\n".join(lines)


def _fmt(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


def format_summary(summary: dict[str, Any]) -> str:
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items()))
    lines = [f"{summary['calls']} calls: {outcomes}"]
    for key, label in (
        ("greeting_ms", "greeting"),
        ("reply_arrival_ms", "reply (arrival)"),
        ("reply_played_ms", "reply (played)"),
        ("barge_in_ms", "barge-in stop"),
    ):
        s = summary[key]
        if s["n"]:
            lines.append(
                f"  {label:16} n={s['n']:<4} p50 {s['p50']:7.1f}  p95 {s['p95']:7.1f}  "
                f"p99 {s['p99']:7.1f}  max {s['max']:7.1f} ms"
            )
    lines.append(f"  simulator max frame lag {summary['max_frame_lag_ms']} ms")
    if summary["protocol_errors"]:
        lines.append(f"  protocol errors: {summary['protocol_errors']}")
    return "\n".join(lines)
