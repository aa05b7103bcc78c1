"""Offline text-to-speech: Debian's `flite` (preferred: clearer) or `espeak-ng`, as subprocesses.

Each piece of text gets its own synthesizer process, started as soon as `speak()` is called (at
most `max_parallel` at once), so sentence 2 is being synthesised while sentence 1's audio streams
out. Audio leaves in text order as μ-law 8 kHz chunks; `flush()` puts a `Flushed` after the audio
of everything spoken before it; `clear()` kills what is running, drops what is queued, and answers
`Cleared` after any audio already handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import signal
import warnings
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass

from voice_app.speech.base import Cleared, Flushed, SpeechOutput
from voice_app.streams.audio import BYTES_PER_MS, SAMPLE_RATE, Resampler, pcm16_to_ulaw

with warnings.catch_warnings():
    # Deprecated in the 3.11/3.12 stdlib; on 3.13+ the audioop-lts package provides it.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

log = logging.getLogger(__name__)

ENGINES = ("flite", "espeak-ng")  # in order of preference
DEFAULT_VOICES = {"flite": "rms", "espeak-ng": "en-us"}


def wav_to_mulaw(data: bytes) -> bytes:
    """A 16-bit PCM WAV (any rate, mono or stereo) → μ-law 8 kHz mono."""
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = w.readframes(w.getnframes())  # espeak-ng streams: its header overstates the length
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    if rate > SAMPLE_RATE:
        pcm = _smooth(_smooth(pcm))  # ratecv doesn't low-pass: tame what would alias into 0–4 kHz
    return pcm16_to_ulaw(Resampler(rate, SAMPLE_RATE).convert(pcm))


def _smooth(pcm: bytes) -> bytes:
    """Average each sample with the next: a tiny low-pass filter (nulls the Nyquist frequency)."""
    half = audioop.mul(pcm, 2, 0.5)
    return audioop.add(half, half[2:] + b"\0\0", 2)


@dataclass(frozen=True, slots=True)
class _Engine:
    binary: str  # absolute path
    kind: str  # "flite" or "espeak-ng"
    voice: str

    def command(self, text: str) -> tuple[list[str], bytes | None]:
        """argv and stdin for one synthesis whose WAV comes out on stdout."""
        if self.kind == "flite":
            # flite can't write WAV to "-", but /dev/stdout works: it writes the file in one go.
            return [self.binary, "-voice", self.voice, "-t", text, "-o", "/dev/stdout"], None
        # Text on stdin: a sentence starting with "-" must not look like an option.
        return [self.binary, "--stdout", "-v", self.voice, "--stdin"], text.encode()


class OfflineTextToSpeech:
    """`TextToSpeech` with flite (or espeak-ng), μ-law 8 kHz out.

    engine: "flite" or "espeak-ng"; None picks the first on PATH, flite first.
    voice: the engine's voice name (flite: rms, slt, awb, kal, …; espeak-ng: en-us, …).
    """

    name = "offline"

    def __init__(
        self,
        *,
        engine: str | None = None,
        voice: str | None = None,
        chunk_ms: int = 40,
        max_parallel: int = 2,
    ) -> None:
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
        self.engine = engine
        self.voice = voice
        self.chunk_ms = chunk_ms
        self.max_parallel = max_parallel

    def find_engine(self) -> _Engine:
        """The synthesizer binary to run; a clear error naming the Debian package if none."""
        for kind in [self.engine] if self.engine else ENGINES:
            if binary := shutil.which(kind):
                return _Engine(binary, kind, self.voice or DEFAULT_VOICES[kind])
        wanted = self.engine or "flite (or espeak-ng)"
        raise RuntimeError(
            f"offline text-to-speech needs {wanted} on PATH: "
            f"apt-get install {self.engine or 'flite'}"
        )

    async def open(self) -> OfflineSynthesizerStream:
        return OfflineSynthesizerStream(
            self.find_engine(), self.chunk_ms * BYTES_PER_MS, self.max_parallel
        )


class OfflineSynthesizerStream:
    """One call's synthesis: a queue of per-text synth tasks and flush markers, emitted in order."""

    def __init__(self, engine: _Engine, chunk_bytes: int, max_parallel: int) -> None:
        self._engine = engine
        self._chunk_bytes = chunk_bytes
        self._slots = asyncio.Semaphore(max_parallel)
        self._queue: asyncio.Queue[asyncio.Task[bytes] | Flushed] = asyncio.Queue()
        self._out: asyncio.Queue[SpeechOutput | None] = asyncio.Queue()
        self._synths: set[asyncio.Task[bytes]] = set()
        self._emitter = asyncio.create_task(self._emit(), name="offline-tts")
        self._flushes = 0
        self._closed = False

    async def speak(self, text: str) -> None:
        if self._closed or not text.strip():
            return
        task = asyncio.create_task(self._synthesize(text))
        self._synths.add(task)
        task.add_done_callback(self._synths.discard)
        self._queue.put_nowait(task)

    async def flush(self) -> None:
        if self._closed:
            return
        self._queue.put_nowait(Flushed(self._flushes))
        self._flushes += 1

    async def clear(self) -> None:
        if self._closed:
            return
        await self._stop()
        self._out.put_nowait(Cleared())
        self._emitter = asyncio.create_task(self._emit(), name="offline-tts")

    async def output(self) -> AsyncIterator[SpeechOutput]:
        while (item := await self._out.get()) is not None:
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop()
        self._out.put_nowait(None)

    async def _stop(self) -> None:
        """Stop emitting and kill every synthesis; queued text and flushes are dropped."""
        self._emitter.cancel()
        tasks = [self._emitter, *self._synths]
        for task in self._synths:
            task.cancel()
        while not self._queue.empty():
            self._queue.get_nowait()
        await asyncio.wait(tasks)  # wait() never raises: their cancellation stays theirs

    async def _emit(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, Flushed):
                self._out.put_nowait(item)
                continue
            try:
                audio = await item
            except Exception as exc:
                log.warning("offline tts: a sentence failed and is skipped: %s", exc)
                continue
            for i in range(0, len(audio), self._chunk_bytes):
                self._out.put_nowait(audio[i : i + self._chunk_bytes])

    async def _synthesize(self, text: str) -> bytes:
        argv, stdin = self._engine.command(text)
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                wav, err = await proc.communicate(stdin)
            finally:
                if proc.returncode is None:  # cancelled (barge-in): don't leave it running
                    # os.kill, not proc.kill(): that reaps a process that just exited, racing
                    # asyncio's child watcher. A zombie's pid is not reused, so this is safe.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    await proc.wait()
        if proc.returncode != 0:
            problem = err.decode(errors="replace")[:200]
            raise RuntimeError(f"{self._engine.kind} exited {proc.returncode}: {problem}")
        return wav_to_mulaw(wav)
