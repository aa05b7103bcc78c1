"""μ-law 8 kHz helpers: framing, silence, energy, PCM conversion, resampling, playback timing.

Everything here is pure: no clocks are read, time is passed in.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Iterator

with warnings.catch_warnings():
    # Deprecated in the 3.11/3.12 stdlib; on 3.13+ the audioop-lts package provides it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
BYTES_PER_MS = SAMPLE_RATE // 1000  # μ-law: one byte per sample
FRAME_MS = 20
FRAME_BYTES = FRAME_MS * BYTES_PER_MS  # 160
ULAW_SILENCE = 0xFF  # μ-law code for 0 (0x7F decodes to 0 as well)
SPEECH_RMS = 500  # 16-bit PCM RMS above which a frame is more than line noise


def duration_ms(nbytes: int) -> float:
    """Playing time of `nbytes` of μ-law 8 kHz."""
    return nbytes / BYTES_PER_MS


def silence(ms: float) -> bytes:
    """`ms` milliseconds of μ-law silence (rounded down to whole samples)."""
    return bytes([ULAW_SILENCE]) * int(ms * BYTES_PER_MS)


def frames(data: bytes, size: int = FRAME_BYTES) -> Iterator[bytes]:
    """Split μ-law into `size`-byte frames, padding the last one with silence."""
    for i in range(0, len(data), size):
        frame = data[i : i + size]
        yield frame if len(frame) == size else frame.ljust(size, b"\xff")


def ulaw_to_pcm16(data: bytes) -> bytes:
    """μ-law → signed 16-bit little-endian PCM (twice as many bytes)."""
    return audioop.ulaw2lin(data, 2)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Signed 16-bit PCM → μ-law. A trailing odd byte is dropped (it is half a sample)."""
    return audioop.lin2ulaw(pcm[: len(pcm) & ~1], 2)


def rms(frame: bytes) -> int:
    """Root-mean-square energy of a μ-law frame, on the 16-bit PCM scale (0–32767)."""
    return audioop.rms(ulaw_to_pcm16(frame), 2) if frame else 0


def is_speech_like(frame: bytes, threshold: int = SPEECH_RMS) -> bool:
    """Whether a μ-law frame is loud enough to be a voice rather than silence or hiss."""
    return rms(frame) >= threshold


class Resampler:
    """Streaming 16-bit mono PCM rate converter (e.g. 8k ↔ 16k).

    Keeps audioop's filter state between calls so chunk boundaries don't click.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError("sample rates must be positive")
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._state: tuple[int, tuple[tuple[int, int], ...]] | None = None
        self._odd = b""  # half a sample left over from the previous chunk

    def convert(self, pcm: bytes) -> bytes:
        pcm = self._odd + pcm
        whole = len(pcm) & ~1
        self._odd = pcm[whole:]
        if self.from_rate == self.to_rate:
            return pcm[:whole]
        out, self._state = audioop.ratecv(
            pcm[:whole], 2, 1, self.from_rate, self.to_rate, self._state
        )
        return out

    def reset(self) -> None:
        self._state = None
        self._odd = b""


class PlaybackClock:
    """A model of Twilio's outbound queue: audio plays in real time, in the order it was sent.

    Feed it what you send (`sent`, `marked`) with the time you sent it; ask it how far ahead
    of the caller's ear you are (`lead_ms`, for pacing) and which marks have been heard by now.
    Twilio's echoes remain the truth; this is the estimate you can act on before they arrive.
    """

    def __init__(self) -> None:
        self._end = 0.0  # when everything queued so far will have finished playing
        self._marks: deque[tuple[float, str]] = deque()  # (plays at, name), in order

    def sent(self, nbytes: int, now: float) -> None:
        """`nbytes` of μ-law were sent at `now`; they start after what is queued."""
        self._end = max(self._end, now) + nbytes / SAMPLE_RATE

    def marked(self, name: str, now: float) -> None:
        """A mark was sent at `now`; it is reached when the audio before it has played."""
        self._end = max(self._end, now)
        self._marks.append((self._end, name))

    def lead_ms(self, now: float) -> float:
        """How much audio is queued beyond what the caller has heard by `now`."""
        return max(0.0, self._end - now) * 1000

    def wait_s(self, now: float, max_lead_ms: float = 250.0, next_ms: float = 0.0) -> float:
        """How long to wait before sending `next_ms` more so the lead stays within
        `max_lead_ms`, counting what is about to be sent."""
        return max(0.0, self.lead_ms(now) + next_ms - max_lead_ms) / 1000

    def pop_played(self, now: float) -> list[str]:
        """Marks reached by `now` and not reported before, in order."""
        played: list[str] = []
        while self._marks and self._marks[0][0] <= now:
            played.append(self._marks.popleft()[1])
        return played

    @property
    def pending(self) -> tuple[str, ...]:
        """Marks sent but not yet reported as played."""
        return tuple(name for _, name in self._marks)

    def clear(self, now: float) -> list[str]:
        """Twilio dropped its queue at `now`: returns the marks that will echo without playing.

        Marks already reached stay queued for `pop_played`: they were heard.
        """
        dropped = [name for at, name in self._marks if at > now]
        if dropped:
            self._marks = deque((at, name) for at, name in self._marks if at <= now)
        self._end = min(self._end, now)
        return dropped
