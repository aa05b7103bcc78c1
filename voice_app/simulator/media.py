"""What the caller hears: Twilio's outbound playback queue, modelled in real time. Pure.

Audio the app sends is queued and played at 8000 bytes a second in arrival order; a mark is
reached once the audio queued before it has played; `clear` drops the queue and releases every
pending mark at once. Time is passed in (seconds on any monotonic clock). Every method returns
the marks Twilio would echo *now*, in order, so the caller of this model just sends them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from voice_app.streams.audio import SAMPLE_RATE, ULAW_SILENCE

StopReason = Literal["drained", "cleared"]
_SILENCE = bytes([ULAW_SILENCE]) * SAMPLE_RATE  # one second, sliced as needed


@dataclass(slots=True)
class _Chunk:
    data: bytes
    arrived: float


class Playback:
    """One call's outbound queue. Sample-exact: position `n` is time `t0 + n / 8000`."""

    def __init__(self, t0: float, *, record: bool = False) -> None:
        self.t0 = t0
        self._pos = 0  # samples (= μ-law bytes) of the timeline already played or silent
        self._queue: deque[_Chunk | str] = deque()  # audio chunks and mark names
        self._offset = 0  # bytes of the head chunk already played
        self.queued_bytes = 0  # audio not yet played
        self.recording: bytearray | None = bytearray() if record else None
        self.playing = False
        self.started_at: float | None = None  # when the current/last burst of audio began
        self.stopped_at: float | None = None  # when the last burst ended
        self.stop_reason: StopReason | None = None
        self.last_arrival: float | None = None  # of any audio
        self.marks_echoed = 0
        self.clears = 0
        self.last_clear_at: float | None = None
        self.bytes_since_clear = 0  # audio that arrived after the last clear
        # A watch reports the first audio that arrives (and starts playing) after a moment:
        # the assistant's reply to a caller line that ended then.
        self._watch_after: float | None = None
        self.watch_arrival: float | None = None
        self.watch_played: float | None = None

    def time_at(self, pos: int) -> float:
        return self.t0 + pos / SAMPLE_RATE

    # --- what the app sends --------------------------------------------------------------

    def push_audio(self, data: bytes, now: float) -> list[str]:
        echoes = self.advance(now)  # audio arriving at an idle queue starts playing *now*
        if data:
            self.last_arrival = now
            self.bytes_since_clear += len(data)
            after = self._watch_after
            if after is not None and self.watch_arrival is None and now >= after:
                self.watch_arrival = now
            self._queue.append(_Chunk(data, now))
            self.queued_bytes += len(data)
        return echoes

    def push_mark(self, name: str, now: float) -> list[str]:
        echoes = self.advance(now)
        if self.queued_bytes == 0:  # nothing ahead of it: Twilio echoes at once
            self.marks_echoed += 1
            echoes.append(name)
        else:
            self._queue.append(name)
        return echoes

    def clear(self, now: float) -> list[str]:
        """Drop every queued byte; the marks still pending echo immediately."""
        echoes = self.advance(now)
        self.clears += 1
        self.last_clear_at, self.bytes_since_clear = now, 0
        pending = [item for item in self._queue if isinstance(item, str)]
        if self.playing or self.queued_bytes:
            self._stop(self._pos, "cleared")
        self._queue.clear()
        self._offset = 0
        self.queued_bytes = 0
        self.marks_echoed += len(pending)
        return echoes + pending

    def discard(self) -> None:
        """The stream ended: its queue vanishes without echoes (there is no one to send them to)."""
        self._queue.clear()
        self._offset = 0
        self.queued_bytes = 0
        if self.playing:
            self._stop(self._pos, "cleared")

    # --- the passing of time ----------------------------------------------------------------

    def advance(self, now: float) -> list[str]:
        """Play (or record silence) up to `now`; returns the marks reached on the way."""
        need = int((now - self.t0) * SAMPLE_RATE) - self._pos
        reached: list[str] = []
        while self._queue and (need > 0 or isinstance(self._queue[0], str)):
            head = self._queue[0]
            if isinstance(head, str):
                self._queue.popleft()
                reached.append(head)
                continue
            if self._offset == 0:
                self._begin(head)
            take = min(need, len(head.data) - self._offset)
            if self.recording is not None:
                self.recording += head.data[self._offset : self._offset + take]
            self._offset += take
            self._pos += take
            self.queued_bytes -= take
            need -= take
            if self._offset == len(head.data):
                self._queue.popleft()
                self._offset = 0
        if self.playing and self.queued_bytes == 0:
            self._stop(self._pos, "drained")  # exact: the sample where the audio ran out
        if need > 0:
            if self.recording is not None:
                self._record_silence(need)
            self._pos += need
        self.marks_echoed += len(reached)
        return reached

    def _begin(self, chunk: _Chunk) -> None:
        at = self.time_at(self._pos)
        if not self.playing:
            self.playing = True
            self.started_at = at
        if (
            self._watch_after is not None
            and self.watch_played is None
            and chunk.arrived >= self._watch_after
        ):
            self.watch_played = at

    def _stop(self, pos: int, reason: StopReason) -> None:
        self.playing = False
        self.stopped_at = self.time_at(pos)
        self.stop_reason = reason

    def _record_silence(self, n: int) -> None:
        assert self.recording is not None
        while n > 0:
            take = min(n, len(_SILENCE))
            self.recording += _SILENCE[:take]
            n -= take

    # --- observations for the scripted caller -----------------------------------------------

    def watch(self, after: float) -> None:
        """Report the first audio arriving at or after `after`: when it arrived and first played."""
        self._watch_after = after
        self.watch_arrival = None
        self.watch_played = None

    def unwatch(self) -> None:
        self._watch_after = None
        self.watch_arrival = None
        self.watch_played = None

    def quiet_for(self, now: float) -> float | None:
        """Seconds since the assistant's audio last stopped, or None while it plays / never did."""
        if self.queued_bytes or self.stopped_at is None:
            return None
        return now - self.stopped_at
