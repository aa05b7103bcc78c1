"""From simulator reports and stand-in stamps to figures: whose time each turn's latency was.

All times are time.monotonic() seconds (the simulator's loop clock and the stand-ins' stamps are
the same system-wide CLOCK_MONOTONIC). For one caller turn:

    latency   = first reply audio at the caller − the caller's last word (end of their line)
    stt       = speech_final sent by the STT stand-in − the caller's last word
                (endpointing + STT latency, plus the app relaying the caller's audio to Deepgram)
    llm       = Σ over tool steps (message_stop sent − request received)
                + final step (the token that completes the 1st sentence sent − request received)
    tts       = first audio sent by the TTS stand-in − the Speak that completed the sentence
    overhead  = latency − stt − llm − tts          ← the app's own time
              = to_llm + tools + to_tts + to_caller, where
    to_llm    = request received − speech_final sent     (transcript → turn-taking → agent → HTTP)
    tools     = Σ next request received − tool_use step's message_stop  (MCP tool + PostgreSQL)
    to_tts    = Speak (sentence complete) received − the token that completed it was sent
    to_caller = first audio at the caller − first audio sent by the TTS stand-in (relay, pacing)
    relay_in  = stt − (endpointing + STT latency): the inbound share of the app's time
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from voice_app.simulator.report import CallReport, percentile

TAG = re.compile(r"\bk(\d+)u(\d+)\b")
GAP_MIN_BYTES = 40 * 8  # 40 ms of μ-law 8 kHz
_SILENT_RUN = re.compile(
    rb"\xff{%d,}" % (GAP_MIN_BYTES + 1)
)  # the simulator records silence as 0xFF


@dataclass
class TurnFigures:
    call_sid: str
    index: int
    tool: bool  # the reply needed a tool step first
    end: float  # the caller's last word
    latency: float
    stt: float
    llm: float
    ttft: float  # Σ first token − request received, over the turn's LLM steps
    tts: float
    overhead: float
    to_llm: float
    tools: float
    to_tts: float
    to_caller: float

    @property
    def ms(self) -> dict[str, float]:
        names = ("latency", "stt", "llm", "ttft", "tts", "overhead")
        parts = ("to_llm", "tools", "to_tts", "to_caller")
        return {n: getattr(self, n) * 1000 for n in (*names, *parts)}


@dataclass
class Attribution:
    turns: list[TurnFigures] = field(default_factory=list)
    unattributed: list[str] = field(default_factory=list)  # why a turn could not be split
    greetings: list[tuple[float, float | None]] = field(default_factory=list)  # (latency, tts)
    reply_bytes: dict[tuple[str, int], int] = field(default_factory=dict)  # (call, turn) → audio


def attribute(
    reports: Sequence[CallReport], timings: dict[str, Any], caller_lines: list[tuple[str, str]]
) -> Attribution:
    """Split every caller turn's latency into the stand-ins' time and the app's.

    `caller_lines` (call SID, text) is the app's own log of what callers said: any tagged line of
    a call names its listen socket k, and turn j of that call is then utterance "k<k>u<j>"."""
    socket_of_call: dict[str, str] = {}
    for call_sid, text in caller_lines:
        if match := TAG.search(text):
            socket_of_call[call_sid] = match.group(1)
    tag_of_turn = {
        (call_sid, turn.index): f"k{socket_of_call[call_sid]}u{turn.index}"
        for report in reports
        if (call_sid := report.call_sid) in socket_of_call
        for turn in report.turns
    }
    call_of_tag = {tag: call_sid for (call_sid, _), tag in tag_of_turn.items()}
    llm_by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in timings["llm"]:
        if call["tag"] and not call["aborted"] and call["stop_at"] is not None:
            llm_by_tag[call["tag"]].append(call)
    tts_by_tag = {job["tag"]: job for job in timings["tts"] if job["tag"]}
    greeting_job: dict[str, dict[str, Any]] = {}  # call SID → its speak socket's first job
    conn_call = {job["conn"]: call_of_tag.get(job["tag"]) for job in tts_by_tag.values()}
    for job in sorted(timings["tts"], key=lambda j: j["first_speak_at"]):
        # The first untagged job of a call's first speak socket; a socket opened later (after a
        # reconnect) starts with some other line.
        if job["tag"] is None and (call_sid := conn_call.get(job["conn"])):
            greeting_job.setdefault(call_sid, job)

    out = Attribution()
    for (call_sid, index), tag in tag_of_turn.items():
        if tag in tts_by_tag:
            out.reply_bytes[(call_sid, index)] = tts_by_tag[tag]["audio_bytes"]
    for call_sid, job in greeting_job.items():
        out.reply_bytes[(call_sid, 0)] = job["audio_bytes"]
    for report in reports:
        for turn in report.turns:
            if turn.index == 0:
                if turn.latency_arrival_s is not None:
                    job = greeting_job.get(report.call_sid)
                    tts = job["first_audio_at"] - job["queued_at"] if job else None
                    out.greetings.append((turn.latency_arrival_s, tts))
                continue
            where = f"{report.call_sid} turn {turn.index}"
            if turn.first_arrival is None or turn.end is None:
                out.unattributed.append(f"{where}: no reply audio")
                continue
            tag = tag_of_turn.get((report.call_sid, turn.index))
            if tag is None:
                out.unattributed.append(f"{where}: the app logged no caller line of this call")
                continue
            figures = _split(
                report.call_sid,
                turn.index,
                turn.end,
                turn.first_arrival,
                tag,
                timings["stt_finals"].get(tag),
                llm_by_tag[tag],
                tts_by_tag.get(tag),
            )
            if isinstance(figures, str):
                out.unattributed.append(f"{where} ({tag}): {figures}")
            else:
                out.turns.append(figures)
    return out


def _split(
    call_sid: str,
    index: int,
    end: float,
    arrival: float,
    tag: str,
    final_at: float | None,
    llm_calls: list[dict[str, Any]],
    job: dict[str, Any] | None,
) -> TurnFigures | str:
    if final_at is None:
        return "no speech_final stamp"
    steps: list[dict[str, Any]] = []
    for call in sorted(llm_calls, key=lambda c: c["received_at"]):
        steps.append(call)
        if call["kind"] == "text":
            break
    if not steps or steps[-1]["kind"] != "text":
        return "no completed text step"
    if job is None or job["queued_at"] is None:
        return "no TTS stamps"
    final = steps[-1]
    llm = sum(s["stop_at"] - s["received_at"] for s in steps[:-1])
    llm += final["needed_at"] - final["received_at"]
    tools = sum(b["received_at"] - a["stop_at"] for a, b in pairwise(steps))
    latency = arrival - end
    stt = final_at - end
    tts = job["first_audio_at"] - job["queued_at"]
    return TurnFigures(
        call_sid=call_sid,
        index=index,
        tool=len(steps) > 1,
        end=end,
        latency=latency,
        stt=stt,
        llm=llm,
        ttft=sum(s["first_token_at"] - s["received_at"] for s in steps),
        tts=tts,
        overhead=latency - stt - llm - tts,
        to_llm=steps[0]["received_at"] - final_at,
        tools=tools,
        to_tts=job["queued_at"] - final["needed_at"],
        to_caller=arrival - job["first_audio_at"],
    )


# --- Outbound audio gaps ------------------------------------------------------------------------


@dataclass
class Gaps:
    replies_at: list[float] = field(default_factory=list)  # when each examined reply began
    gapped_at: list[float] = field(default_factory=list)  # ... of those with a gap
    gaps: list[tuple[float, float]] = field(default_factory=list)  # (when, ms)

    @property
    def replies(self) -> int:
        return len(self.replies_at)

    @property
    def replies_with_gaps(self) -> int:
        return len(self.gapped_at)

    @property
    def gaps_ms(self) -> list[float]:
        return [ms for _, ms in self.gaps]

    def extend(self, other: Gaps) -> None:
        self.replies_at += other.replies_at
        self.gapped_at += other.gapped_at
        self.gaps += other.gaps

    def between(self, start: float, end: float) -> Gaps:
        return Gaps(
            [t for t in self.replies_at if start <= t < end],
            [t for t in self.gapped_at if start <= t < end],
            [(t, ms) for t, ms in self.gaps if start <= t < end],
        )


def audio_gaps(
    reports: Iterable[CallReport],
    reply_bytes: dict[tuple[str, int], int],
    window: tuple[float, float] | None = None,
) -> Gaps:
    """Silences over 40 ms inside a reply, in what the caller heard.

    The TTS stand-in's tone has no silence in it and the next sentence's audio is always ready in
    time, so a silence before all of a reply's audio (`reply_bytes`, counted by the TTS stand-in)
    has played is its audio running out at the caller: the app fell behind. A reply ends there,
    or at the caller's next line (a barge-in). With a `window`, only replies that began in it.
    """
    gaps = Gaps()
    for report in reports:
        audio, t0 = report.recording, report.stream_started_at
        if audio is None or t0 is None:
            continue
        ends = [t.start for t in report.turns[1:]] + [report.ended_at]
        for turn, until in zip(report.turns, ends, strict=False):
            began, size = turn.first_played, reply_bytes.get((report.call_sid, turn.index))
            if began is None or until is None or not size:
                continue
            if window and not window[0] <= began <= window[1]:
                continue
            first = max(0, int((began - t0) * 8000))
            reply = audio[first : int((until - t0) * 8000)]
            gaps.replies_at.append(began)
            found = _gaps_in(reply, size)
            if found:
                gaps.gapped_at.append(began)
                gaps.gaps += [(began + at / 8000, n / 8) for at, n in found]
    return gaps


def _gaps_in(reply: bytes, size: int) -> list[tuple[int, int]]:
    """(offset, length) of each silence over 40 ms before `size` bytes of audio have played."""
    found, played, at = [], 0, 0
    for silence in _SILENT_RUN.finditer(reply):
        played += silence.start() - at
        if played >= size - GAP_MIN_BYTES:  # the reply had played out (give or take rounding)
            break
        found.append((silence.start(), len(silence.group(0))))
        at = silence.end()
    return found


# --- Numbers to text ------------------------------------------------------------------------------


def pcts(values: list[float]) -> dict[str, float | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def fmt(value: float | None, width: int = 7, digits: int = 0) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def pct_row(label: str, values: list[float], width: int = 22) -> str:
    s = pcts(values)
    return (
        f"  {label:<{width}} n={s['n']:<5} p50 {fmt(s['p50'])}  p95 {fmt(s['p95'])}  "
        f"p99 {fmt(s['p99'])}  max {fmt(s['max'])} ms"
    )


def breakdown(turns: list[TurnFigures], width: int = 22) -> list[str]:
    """Percentile rows of each part of the latency, in ms."""
    rows = [
        ("latency (last word → audio)", "latency"),
        ("  stt (→ speech_final)", "stt"),
        ("  llm (provider, waited)", "llm"),
        ("    of which TTFT", "ttft"),
        ("  tts (TTFB, measured)", "tts"),
        ("  APP OVERHEAD", "overhead"),
        ("    speech_final → LLM req", "to_llm"),
        ("    tool steps (MCP+DB)", "tools"),
        ("    token → TTS Speak", "to_tts"),
        ("    TTS audio → caller", "to_caller"),
    ]
    return [pct_row(label, [t.ms[key] for t in turns], width) for label, key in rows]
