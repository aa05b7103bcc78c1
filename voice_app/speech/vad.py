"""Energy voice-activity detection for the offline recogniser. Pure: levels in, decisions out.

Frames are judged against an adaptive noise floor (a quiet line and a hissy one both work). Speech
starts after `onset_ms` of loud frames, so a click or a cough is not a caller talking, and ends
after `hangover_ms` of quiet, so the pauses between words don't split an utterance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

VadChange = Literal["start", "end"]


@dataclass
class EnergyVad:
    frame_ms: int = 20
    onset_ms: int = 80
    hangover_ms: int = 600
    min_rms: int = 400  # 16-bit PCM RMS a voice must exceed even on a silent line
    noise_ratio: float = 3.0  # ...and it must be this many times louder than the line's noise
    in_speech: bool = field(default=False, init=False)
    noise: float | None = field(default=None, init=False)  # tracked noise floor (RMS)
    _loud: int = field(default=0, init=False)  # consecutive loud frames (before onset)
    _quiet: int = field(default=0, init=False)  # consecutive quiet frames (during speech)

    @property
    def threshold(self) -> float:
        return max(self.min_rms, (self.noise or 0.0) * self.noise_ratio)

    def update(self, rms: int) -> VadChange | None:
        """Judge one frame by its RMS; returns "start" or "end" when the state flips."""
        loud = rms >= self.threshold
        if not self.in_speech:
            self._track_noise(rms)
            self._loud = self._loud + 1 if loud else 0
            if self._loud * self.frame_ms >= self.onset_ms:
                self.in_speech, self._quiet = True, 0
                return "start"
            return None
        self._quiet = 0 if loud else self._quiet + 1
        if self._quiet * self.frame_ms >= self.hangover_ms:
            self.in_speech, self._loud = False, 0
            return "end"
        return None

    def force_end(self, rms: int) -> None:
        """End speech that went on too long: the level that kept it open was noise, not a voice."""
        self.in_speech, self._loud, self._quiet = False, 0, 0
        self.noise = float(rms)

    def _track_noise(self, rms: int) -> None:
        if self.noise is None:
            self.noise = float(rms)  # the line's first frame: usually ringback silence or hiss
            return
        # Falls fast (a quiet moment is the best noise estimate), rises slowly (~2 s).
        rate = 0.2 if rms < self.noise else 0.01
        self.noise += (rms - self.noise) * rate
