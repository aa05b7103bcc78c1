"""Twilio's side of one stream, with a cheap media frame for load tests.

`TwilioSide` numbers messages the way Twilio does; `media()` there builds each frame through
json.dumps and base64 (~7 µs). At 200 calls × 50 frames a second that is a noticeable share of
a core, so `Wire.media_b64` fills a template with a payload encoded once, up front. The text is
identical to `TwilioSide.media` (the tests check it).
"""

from __future__ import annotations

import base64

from voice_app.streams.audio import FRAME_BYTES, ULAW_SILENCE
from voice_app.streams.codec import TwilioSide

_MEDIA = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)
SILENCE_FRAME = bytes([ULAW_SILENCE]) * FRAME_BYTES
SILENCE_B64 = base64.b64encode(SILENCE_FRAME).decode("ascii")


def b64_frames(frames: list[bytes]) -> list[str]:
    return [base64.b64encode(frame).decode("ascii") for frame in frames]


class Wire(TwilioSide):
    def media_b64(self, payload_b64: str, nbytes: int = FRAME_BYTES) -> str:
        """Same text as `TwilioSide.media(payload)`, for a payload already in base64."""
        self._chunk += 1
        frame = _MEDIA % (
            self._next(),
            self.stream_sid,
            self._chunk,
            int(self._elapsed_ms),
            payload_b64,
        )
        self._elapsed_ms += nbytes / 8  # μ-law 8 kHz: 8 bytes per ms
        return frame
