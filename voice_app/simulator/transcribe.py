"""Optional: what the assistant said, recovered from the audio the caller heard (pocketsphinx).

The app does not tell Twilio its words, so the simulator only knows them by listening. This uses
the app's own offline recogniser when `voice_app.speech.offline_stt` is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import cast

from voice_app.simulator.report import CallReport
from voice_app.speech.base import SpeechToText, TranscriberStream
from voice_app.streams.audio import SAMPLE_RATE, frames, silence

EVENTS_TIMEOUT_S = 15.0


def offline_stt() -> SpeechToText | None:
    try:
        module = importlib.import_module("voice_app.speech.offline_stt")
    except ImportError:
        return None
    return cast(SpeechToText, module.OfflineSpeechToText())


async def transcribe_replies(report: CallReport, stt: SpeechToText) -> str | None:
    """Fill `assistant_words` of each turn from the recording: each reply runs from its first
    played frame to the caller's next step (or the end of the call). Returns a problem, if any."""
    if report.recording is None or report.stream_started_at is None:
        return None
    t0, audio = report.stream_started_at, report.recording
    turns = report.turns
    for i, turn in enumerate(turns):
        if turn.first_played is None:
            continue
        following = turns[i + 1].start if i + 1 < len(turns) else None
        begin = int((turn.first_played - t0) * SAMPLE_RATE)
        end = len(audio) if following is None else int((following - t0) * SAMPLE_RATE)
        if end > begin:
            try:
                turn.assistant_words = await transcribe(stt, audio[begin:end]) or None
            except (OSError, RuntimeError) as error:  # the recogniser would not start
                return f"transcription failed: {error}"
    return None


async def transcribe(stt: SpeechToText, mulaw: bytes) -> str:
    stream = await stt.open()
    texts: list[str] = []
    collector = asyncio.create_task(_collect(stream, texts))
    try:
        for frame in frames(mulaw + silence(1000)):  # trailing silence ends the last utterance
            await stream.send_audio(frame)
        await stream.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(collector), EVENTS_TIMEOUT_S)
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await stream.close()
    return " ".join(texts)


async def _collect(stream: TranscriberStream, texts: list[str]) -> None:
    async for event in stream.events():
        if event.kind == "final" and event.text:
            texts.append(event.text)
