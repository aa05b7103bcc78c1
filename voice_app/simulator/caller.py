"""The scripted caller: what to send on each 20 ms tick, and the turns it observes. Pure.

A step (a line of speech or some keypresses) starts once the assistant has finished its reply to
the previous one — it started playing and then stayed quiet for `quiet_s` — or, for a barge-in
step, a fixed time after that reply started playing. Times are the send times of the frames that
carry the audio: a line "starts" with its first frame and "ends" with its last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voice_app.simulator.media import Playback
from voice_app.simulator.wire import SILENCE_B64, b64_frames
from voice_app.streams.audio import frames

StepKind = Literal["say", "wav", "dtmf"]
DTMF_GAP_TICKS = 10  # 200 ms between keypresses


@dataclass(slots=True)
class Step:
    kind: StepKind
    text: str  # the words (say), the file (wav) or the digits (dtmf)
    barge_in_after_ms: float | None = None  # speak this long after the reply starts playing
    audio: bytes = b""  # μ-law 8 kHz, filled in by `prepare` for say/wav steps
    payloads: list[str] = field(default_factory=list, repr=False)  # audio as base64 frames


@dataclass(slots=True)
class Turn:
    """One exchange: the caller's step, then the assistant's reply to it.

    Turn 0 is the greeting: no step, and its "end" is the moment the stream started.
    """

    index: int
    kind: Literal["greeting", "say", "wav", "dtmf"]
    said: str | None
    start: float | None = None
    end: float | None = None
    first_arrival: float | None = None  # first reply audio received after `end`
    first_played: float | None = None  # ... and when the caller began to hear it
    barge_in: bool = False  # the caller started while the assistant was audible
    barge_in_stop: float | None = None  # when the assistant's audio stopped playing after that
    barge_in_cleared: bool = False  # it stopped because the app sent `clear`
    reply_timed_out: bool = False
    assistant_overlapped: bool = False  # the app sent audio while the caller was speaking
    # Audio that arrived after the app's clear while the caller was still talking: the
    # cancelled reply's stale audio (it must be zero; a new reply waits for the caller).
    stale_audio_bytes: int = 0
    transcript: str | None = None  # the app's transcript of the caller, if it is ever known
    assistant_words: str | None = None

    @property
    def latency_arrival_s(self) -> float | None:
        return _minus(self.first_arrival, self.end)

    @property
    def latency_played_s(self) -> float | None:
        return _minus(self.first_played, self.end)

    @property
    def barge_in_latency_s(self) -> float | None:
        return _minus(self.barge_in_stop, self.start) if self.barge_in else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@dataclass(slots=True)
class Tick:
    """What to send now: one media frame (None = silence) and maybe a DTMF digit."""

    payload_b64: str | None = None
    digit: str | None = None
    finished: bool = False  # the script is done and its last reply has been heard


class Caller:
    def __init__(
        self, steps: list[Step], *, quiet_s: float = 0.7, reply_timeout_s: float = 15.0
    ) -> None:
        self.steps = steps
        self.quiet_s = quiet_s
        self.reply_timeout_s = reply_timeout_s
        self.turns: list[Turn] = []
        self._next_step = 0
        self._frames: list[str] = []  # the line being spoken, base64 per frame
        self._frame_index = 0
        self._digits = ""  # keys still to press
        self._gap = 0  # ticks until the next key

    def begin(self, now: float, playback: Playback) -> None:
        """The stream started: what the assistant says first is the greeting turn's reply."""
        if not self.turns:
            self.turns.append(Turn(0, "greeting", None, start=now, end=now))
        playback.watch(now)

    @property
    def current(self) -> Turn:
        return self.turns[-1]

    def tick(self, now: float, playback: Playback) -> Tick:
        self._observe(playback)
        if self._frames or self._digits:
            return self._continue(now, playback)
        if not self._reply_done(now, playback, self._barge_in_cue()):
            return Tick()
        if self._next_step >= len(self.steps):
            return Tick(finished=True)
        self._start(self.steps[self._next_step], now, playback)
        self._next_step += 1
        return self._continue(now, playback)

    # --- internals ---------------------------------------------------------------------------

    def _barge_in_cue(self) -> float | None:
        if self._next_step < len(self.steps):
            after_ms = self.steps[self._next_step].barge_in_after_ms
            return None if after_ms is None else after_ms / 1000
        return None

    def _reply_done(self, now: float, playback: Playback, barge_after_s: float | None) -> bool:
        turn = self.current
        assert turn.end is not None
        began = self._reply_began(turn, playback)
        if began is not None:
            if barge_after_s is not None:
                return now - began >= barge_after_s
            quiet = playback.quiet_for(now)
            stopped = playback.stopped_at
            if quiet is not None and stopped is not None and stopped >= began:
                return quiet >= self.quiet_s
            return False
        if now - turn.end >= self.reply_timeout_s:
            turn.reply_timed_out = True
            return True
        return False

    @staticmethod
    def _reply_began(turn: Turn, playback: Playback) -> float | None:
        """When the caller began to hear the reply to `turn`. Normally its first audio after
        the line; if the assistant was already talking as the line ended (it answered a pause
        mid-line), the moment the line ended: the caller still waits for it to finish."""
        assert turn.end is not None
        if turn.first_played is not None:
            return turn.first_played
        heard_past_end = playback.queued_bytes > 0 or (
            playback.stopped_at is not None and playback.stopped_at > turn.end
        )
        return turn.end if heard_past_end and turn.assistant_overlapped else None

    def _start(self, step: Step, now: float, playback: Playback) -> None:
        turn = Turn(len(self.turns), step.kind, step.text, start=now)
        # Audible now means the caller talks over the assistant: a barge-in.
        turn.barge_in = playback.queued_bytes > 0
        self.turns.append(turn)
        playback.unwatch()  # reply tracking restarts when this step ends
        if step.kind == "dtmf":
            self._digits, self._gap = step.text, 0
        else:
            if not step.payloads:  # encoded once per step, shared by every call that runs it
                step.payloads = b64_frames(list(frames(step.audio))) or [SILENCE_B64]
            self._frames, self._frame_index = step.payloads, 0

    def _continue(self, now: float, playback: Playback) -> Tick:
        if self._digits:
            if self._gap > 0:
                self._gap -= 1
                return Tick()
            digit, self._digits = self._digits[0], self._digits[1:]
            self._gap = DTMF_GAP_TICKS - 1
            if not self._digits:
                self._end(now, playback)
            return Tick(digit=digit)
        payload = self._frames[self._frame_index]
        self._frame_index += 1
        if self._frame_index == len(self._frames):
            self._frames = []
            self._end(now, playback)
        return Tick(payload_b64=payload)

    def _end(self, now: float, playback: Playback) -> None:
        turn = self.current
        turn.end = now
        arrived = playback.last_arrival
        turn.assistant_overlapped = (
            arrived is not None and turn.start is not None and (arrived > turn.start)
        )
        cleared = playback.last_clear_at
        if cleared is not None and turn.start is not None and cleared >= turn.start:
            turn.stale_audio_bytes = playback.bytes_since_clear
        playback.watch(now)

    def _observe(self, playback: Playback) -> None:
        turn = self.current
        if turn.end is not None:
            if turn.first_arrival is None and playback.watch_arrival is not None:
                turn.first_arrival = playback.watch_arrival
            if turn.first_played is None and playback.watch_played is not None:
                turn.first_played = playback.watch_played
        if turn.barge_in and turn.barge_in_stop is None and not playback.queued_bytes:
            stopped = playback.stopped_at
            if stopped is not None and turn.start is not None and stopped >= turn.start:
                turn.barge_in_stop = stopped
                turn.barge_in_cleared = playback.stop_reason == "cleared"
