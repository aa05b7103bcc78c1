"""The two small interfaces the call engine speaks to, whatever engine is behind them.

Deepgram (production) and the offline engines (pocketsphinx, flite/espeak-ng) implement the same
protocols, so the CallSession never knows which it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

TranscriptKind = Literal["interim", "final", "speech_started", "utterance_end"]


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    """One thing the recogniser noticed.

    kind="interim": a provisional transcript of the words so far (may change);
    kind="final": a finalized segment; `speech_final` marks the end of the caller's utterance;
    kind="speech_started": voice activity began (no text yet);
    kind="utterance_end": a gap followed the last finalized word (ends a turn after finals).
    """

    kind: TranscriptKind
    text: str = ""
    speech_final: bool = False
    confidence: float = 1.0
    at: float = 0.0  # seconds from the start of the audio, as the recogniser counts


class TranscriberStream(Protocol):
    """A live recognition session for one call."""

    async def send_audio(self, mulaw: bytes) -> None:
        """Forward μ-law 8 kHz mono bytes (any length, usually 20 ms frames) immediately."""

    def events(self) -> AsyncIterator[TranscriptEvent]:
        """Transcript events as they arrive; ends when the stream is closed."""

    async def close(self) -> None:
        """Finish and release the connection. Safe to call twice."""


class SpeechToText(Protocol):
    name: str

    async def open(self) -> TranscriberStream:
        """Open a live stream (do it early: at the webhook or the stream's `start`)."""


@dataclass(frozen=True, slots=True)
class Flushed:
    """All audio for the text sent before the matching flush() has been delivered."""

    sequence_id: int = 0


@dataclass(frozen=True, slots=True)
class Cleared:
    """The synthesizer dropped everything queued before clear()."""

    sequence_id: int = 0


SpeechOutput = bytes | Flushed | Cleared


class SynthesizerStream(Protocol):
    """A streaming text-to-speech session for one call. Output is raw μ-law 8 kHz, no header."""

    async def speak(self, text: str) -> None:
        """Queue text to be spoken (a sentence or clause)."""

    async def flush(self) -> None:
        """Say everything queued now; a `Flushed` follows its audio. Once per reply."""

    async def clear(self) -> None:
        """Drop queued text and audio (barge-in); a `Cleared` follows."""

    def output(self) -> AsyncIterator[SpeechOutput]:
        """μ-law audio chunks and Flushed/Cleared markers, in order."""

    async def close(self) -> None:
        """Release the connection. Safe to call twice."""


class TextToSpeech(Protocol):
    name: str

    async def open(self) -> SynthesizerStream: ...
