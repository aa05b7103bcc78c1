"""Which words a stretch of reply audio carries, so a mark can say what the caller heard.

The synthesizer returns one audio stream per reply (Deepgram allows few flushes, so sentences are
not delimited in its output). We know the reply's text and how much audio has gone out, and we
learn the voice's pace from finished replies; a mark's text is the words that audio covers at that
pace, cut at a word boundary. When the reply's audio is complete, the last mark takes the rest.
"""

from __future__ import annotations

DEFAULT_MS_PER_CHAR = 62.0  # Aura-2 and flite both speak about 15-17 characters a second


class HeardText:
    def __init__(self, ms_per_char: float = DEFAULT_MS_PER_CHAR) -> None:
        self.ms_per_char = ms_per_char
        self._text = ""  # everything the reply has sent to the synthesizer so far
        self._covered = 0  # characters already assigned to a mark
        self._audio_ms = 0.0

    def start_reply(self) -> None:
        self._text, self._covered, self._audio_ms = "", 0, 0.0

    def add_text(self, text: str) -> None:
        self._text = f"{self._text} {text.strip()}" if self._text else text.strip()

    def add_audio(self, nbytes: int) -> None:
        self._audio_ms += nbytes / 8.0  # μ-law 8 kHz: 8 bytes a millisecond

    def take(self) -> str:
        """The words covered by the audio added since the last take."""
        target = min(len(self._text), int(self._audio_ms / self.ms_per_char))
        if target <= self._covered:
            return ""
        cut = self._text.rfind(" ", self._covered, target + 1)
        if target == len(self._text) or cut <= self._covered:
            cut = target if target == len(self._text) else self._covered
        return self._advance(cut)

    def take_rest(self) -> str:
        """The reply's audio is complete: the remaining words, and learn the pace from it."""
        if self._text and self._audio_ms > 0:
            observed = self._audio_ms / len(self._text)
            self.ms_per_char = 0.7 * self.ms_per_char + 0.3 * observed
        return self._advance(len(self._text))

    def _advance(self, cut: int) -> str:
        piece = self._text[self._covered : cut].strip()
        self._covered = cut
        return piece
