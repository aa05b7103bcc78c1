"""The caller's voice: scripted lines synthesized offline (flite, else espeak-ng) or read from WAV
files, as μ-law 8 kHz trimmed to the words (so "first word" and "last word" are the line's ends).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import warnings
import wave
from functools import lru_cache
from pathlib import Path

from voice_app.streams.audio import (
    SAMPLE_RATE,
    Resampler,
    frames,
    is_speech_like,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SYNTH_TIMEOUT_S = 30
_synth_lock = threading.Lock()  # concurrent calls saying the same line synthesize it once


class VoiceError(RuntimeError):
    """No synthesizer, or an audio file we cannot read."""


def synthesize(text: str) -> bytes:
    """`text` spoken by flite or espeak-ng, as trimmed μ-law 8 kHz. Cached.

    flite's awb voice: not the assistant's own, and among the best recognised offline."""
    with _synth_lock:
        return _synthesize(text)


@lru_cache(maxsize=256)
def _synthesize(text: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="voice-app-call-") as tmp:
        out = Path(tmp) / "line.wav"
        text_file = Path(tmp) / "line.txt"
        text_file.write_text(text, encoding="utf-8")  # a file, so text is never read as options
        if flite := shutil.which("flite"):
            cmd = [flite, "-voice", "awb", "-f", str(text_file), "-o", str(out)]
        elif espeak := shutil.which("espeak-ng"):
            cmd = [espeak, "-f", str(text_file), "-w", str(out)]
        else:
            raise VoiceError("no speech synthesizer: install flite or espeak-ng, or use --wav")
        result = subprocess.run(cmd, capture_output=True, timeout=SYNTH_TIMEOUT_S, check=False)
        if result.returncode != 0 or not out.is_file():
            raise VoiceError(f"{Path(cmd[0]).name} failed: {result.stderr.decode()[-200:]}")
        return trim(load_wav(out))


def load_wav(path: str | Path) -> bytes:
    """A PCM WAV file (any rate, width, channels) as μ-law 8 kHz mono."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as error:
        raise VoiceError(f"cannot read {path}: {error} (need a PCM WAV file)") from None
    if width != 2:
        pcm = audioop.lin2lin(pcm, width, 2)
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    elif channels != 1:
        raise VoiceError(f"{path}: {channels} channels; use mono or stereo")
    return pcm16_to_ulaw(Resampler(rate, SAMPLE_RATE).convert(pcm))


def trim(mulaw: bytes) -> bytes:
    """Drop the silent 20 ms frames at both ends."""
    chunks = list(frames(mulaw))
    loud = [i for i, chunk in enumerate(chunks) if is_speech_like(chunk, 200)]
    if not loud:
        return mulaw
    return b"".join(chunks[loud[0] : loud[-1] + 1])


def write_wav(path: str | Path, mulaw: bytes) -> None:
    """μ-law 8 kHz → a 16-bit PCM mono WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(ulaw_to_pcm16(mulaw))
