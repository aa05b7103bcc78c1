"""The production Deepgram adapters, through the real SDK, against the local Deepgram stand-in.

Audio is sent faster than real time: the stand-in counts audio time, not wall time, so 300 ms of
silence "takes" 300 ms of endpointing however fast it arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from deepgram.core.api_error import ApiError

from tests.standins import wait_for
from tests.standins.deepgram import DeepgramStandIn, Utterance, tone
from voice_app.speech.base import Cleared, Flushed, TranscriptEvent
from voice_app.speech.deepgram import (
    DeepgramSpeechToText,
    DeepgramTextToSpeech,
    DeepgramTranscriberStream,
    deepgram_environment,
)

KEY = "dg-test-key"
FRAME = 160  # 20 ms of μ-law


def speech(ms: int) -> bytes:
    return tone(ms * 8, amplitude=8000)


def silence(ms: int) -> bytes:
    return b"\xff" * (ms * 8)  # μ-law 0xFF is digital silence


async def send(stream: DeepgramTranscriberStream, audio: bytes) -> None:
    """Frame by frame, as Twilio delivers it (only faster)."""
    for i in range(0, len(audio), FRAME):
        await stream.send_audio(audio[i : i + FRAME])


async def collect_until(
    events: AsyncIterator[TranscriptEvent], kind: str, timeout: float = 3.0
) -> list[TranscriptEvent]:
    seen: list[TranscriptEvent] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            seen.append(event)
            if event.kind == kind:
                return seen
    return seen


@pytest.fixture
async def dg() -> AsyncIterator[DeepgramStandIn]:
    async with DeepgramStandIn(api_key=KEY) as standin:
        yield standin


def test_environment_from_deepgram_url() -> None:
    assert deepgram_environment("https://api.deepgram.com").production == "wss://api.deepgram.com"
    local = deepgram_environment("http://127.0.0.1:9000/")
    assert (local.base, local.production) == ("http://127.0.0.1:9000", "ws://127.0.0.1:9000")
    secure = deepgram_environment("https://dg.internal.example")
    assert (secure.base, secure.production) == (
        "https://dg.internal.example",
        "wss://dg.internal.example",
    )


async def test_stt_utterance_gives_interim_final_and_utterance_end(dg: DeepgramStandIn) -> None:
    dg.expect_utterances(["What is on my todo list?"])
    stream = await DeepgramSpeechToText(KEY, dg.url).open()
    events = stream.events()
    await send(stream, silence(200) + speech(1000) + silence(1200))
    seen = await collect_until(events, "utterance_end")
    kinds = [e.kind for e in seen]
    assert kinds[0] == "speech_started" and seen[0].at == pytest.approx(0.2)
    assert "interim" in kinds
    final = next(e for e in seen if e.kind == "final")
    assert final.text == "What is on my todo list?" and final.speech_final
    assert kinds.index("interim") < kinds.index("final") < kinds.index("utterance_end")
    await stream.close()

    conn = dg.listen_connections[0]
    assert conn.headers["Authorization"] == f"Token {KEY}"
    assert conn.query == {
        "model": "nova-3",
        "language": "en-US",
        "encoding": "mulaw",
        "sample_rate": "8000",
        "channels": "1",
        "interim_results": "true",
        "endpointing": "300",
        "utterance_end_ms": "1000",
        "vad_events": "true",
        "smart_format": "true",
        "punctuate": "true",
    }
    assert bytes(conn.audio) == silence(200) + speech(1000) + silence(1200)  # untouched, in order
    assert conn.received == [{"type": "CloseStream"}]


async def test_stt_cough_gives_speech_started_only(dg: DeepgramStandIn) -> None:
    dg.expect_utterances(["this transcript is not used by a cough"])
    stream = await DeepgramSpeechToText(KEY, dg.url).open()
    await send(stream, speech(120) + silence(1500))
    await stream.close()
    seen = [e async for e in stream.events()]
    assert [e.kind for e in seen] == ["speech_started"]


async def test_stt_empty_transcript_utterance_gives_no_words(dg: DeepgramStandIn) -> None:
    dg.expect_utterances([Utterance(""), "yes"])
    stream = await DeepgramSpeechToText(KEY, dg.url).open()
    events = stream.events()
    await send(stream, speech(500) + silence(400) + speech(500) + silence(400))
    seen = await collect_until(events, "final")
    assert [(e.kind, e.text) for e in seen if e.kind != "interim"] == [
        ("speech_started", ""),
        ("speech_started", ""),
        ("final", "yes"),
    ]
    await stream.close()


async def test_stt_reconnects_after_drop_and_keeps_transcribing(dg: DeepgramStandIn) -> None:
    dg.expect_utterances(["my pin is one two three four", "read my todos"])
    stream = await DeepgramSpeechToText(KEY, dg.url).open()
    events = stream.events()
    await send(stream, speech(800) + silence(400))
    first = await collect_until(events, "final")
    assert first[-1].text == "my pin is one two three four"

    await dg.drop()  # 1011 mid-stream
    await wait_for(lambda: len(dg.active("listen")) == 1 and stream.reconnects == 1)
    await send(stream, speech(800) + silence(400))
    second = await collect_until(events, "final")
    assert second[-1].text == "read my todos" and second[-1].speech_final
    assert second[0].kind == "speech_started"  # nothing odd from the drop
    # Times keep counting across sockets.
    assert second[-1].at > first[-1].at + 1.0
    assert stream.reconnects == 1 and len(dg.listen_connections) == 2
    assert dg.listen_connections[0].close_code == 1011

    await dg.drop(abort=True)  # a dead TCP connection, no close frame
    await wait_for(lambda: stream.reconnects == 2)
    await stream.close()


async def test_stt_audio_during_reconnect_is_replayed(dg: DeepgramStandIn) -> None:
    dg.expect_utterances(["hello again"])
    stream = await DeepgramSpeechToText(KEY, dg.url).open()
    events = stream.events()
    dg.reject_next(503)  # the first reconnect attempt fails, the second works
    await dg.drop()
    await send(stream, speech(600) + silence(400))  # arrives while the socket is down
    seen = await collect_until(events, "final")
    assert seen[-1].text == "hello again"
    assert stream.reconnects == 1 and dg.rejected == [("/v1/listen", 503)]
    await stream.close()


async def test_stt_keepalive_while_no_audio_flows() -> None:
    async with DeepgramStandIn(idle_timeout=0.3) as dg:
        stt = DeepgramSpeechToText(KEY, dg.url, keepalive_interval=0.1)
        stream = await stt.open()
        await asyncio.sleep(0.5)  # well past the idle timeout, no audio
        assert stream.reconnects == 0 and len(dg.listen_connections) == 1
        assert {"type": "KeepAlive"} in dg.listen_connections[0].received
        await stream.close()


async def test_stt_idle_timeout_without_keepalive_reconnects() -> None:
    async with DeepgramStandIn(idle_timeout=0.2) as dg:
        stream = await DeepgramSpeechToText(KEY, dg.url, keepalive_interval=60).open()
        await wait_for(lambda: stream.reconnects >= 1)
        assert dg.listen_connections[0].close_code == 1011  # NET-0001
        await stream.close()


async def test_stt_bad_key_fails_open(dg: DeepgramStandIn) -> None:
    with pytest.raises(ApiError) as failure:
        await DeepgramSpeechToText("wrong", dg.url).open()
    assert failure.value.status_code == 401


async def test_stt_close_is_idempotent_and_ends_events(dg: DeepgramStandIn) -> None:
    stream = await DeepgramSpeechToText(KEY, dg.url).open()
    await stream.close()
    await stream.close()
    assert [e async for e in stream.events()] == []
    await stream.send_audio(silence(20))  # ignored after close
    assert dg.listen_connections[0].close_code == 1000
    assert dg.listen_connections[0].types_sent[-1] == "Metadata"


async def test_stt_gives_up_after_repeated_failures(dg: DeepgramStandIn) -> None:
    stream = await DeepgramSpeechToText(
        KEY, dg.url, max_reconnect_attempts=2, reconnect_backoff=0.01
    ).open()
    dg.reject_next(401, count=10)
    await dg.drop()
    assert [e async for e in stream.events()] == []  # ends instead of spinning forever
    assert stream.error is not None
    await stream.close()


async def test_stt_close_while_reconnecting(dg: DeepgramStandIn) -> None:
    stream = await DeepgramSpeechToText(KEY, dg.url, reconnect_backoff=5.0).open()
    dg.reject_next(503, count=5)
    await dg.drop()
    await wait_for(lambda: len(dg.rejected) >= 1)  # now sleeping before the next attempt
    async with asyncio.timeout(1):
        await stream.close()  # cancels the wait, raises nothing
    assert [e async for e in stream.events()] == []


# Text to speech -----------------------------------------------------------------------------


async def drain(output: AsyncIterator[object], until: type) -> tuple[int, object]:
    """Bytes of audio before the first `until` marker, and the marker."""
    size = 0
    async with asyncio.timeout(3):
        async for item in output:
            if isinstance(item, bytes):
                size += len(item)
            elif isinstance(item, until):
                return size, item
    raise AssertionError(f"output ended before {until.__name__}")


async def test_tts_speak_flush_gives_audio_then_flushed(dg: DeepgramStandIn) -> None:
    tts = await DeepgramTextToSpeech(KEY, dg.url, model="aura-2-thalia-en").open()
    output = tts.output()
    await tts.speak("Hello there. ")
    await tts.speak("You have two todos.")
    await tts.flush()
    size, marker = await drain(output, Flushed)
    assert marker == Flushed(0)
    assert size == int(len("Hello there. You have two todos.") * 60 * 8)  # 60 ms per character
    conn = dg.speak_connections[0]
    assert conn.query == {"model": "aura-2-thalia-en", "encoding": "mulaw", "sample_rate": "8000"}
    assert conn.received[:3] == [
        {"type": "Speak", "text": "Hello there. "},
        {"type": "Speak", "text": "You have two todos."},
        {"type": "Flush"},
    ]
    await tts.close()
    await tts.close()
    assert conn.received[-1] == {"type": "Close"}


async def test_tts_clear_drops_audio_and_gives_cleared(dg: DeepgramStandIn) -> None:
    dg.tts_ttfb = 0.05
    dg.tts_chunk_interval = 0.01
    tts = await DeepgramTextToSpeech(KEY, dg.url).open()
    output = tts.output()
    await tts.speak("A long answer that the caller will interrupt half way through. " * 3)
    await tts.flush()
    await asyncio.sleep(0.1)  # some audio is on its way
    await tts.clear()
    _, marker = await drain(output, Cleared)
    assert isinstance(marker, Cleared)
    # After the clear: a new reply comes through whole, with its own Flushed.
    await tts.speak("Okay.")
    await tts.flush()
    size, flushed = await drain(output, Flushed)
    assert isinstance(flushed, Flushed) and size == int(len("Okay.") * 60 * 8)
    await tts.close()


async def test_tts_socket_error_mid_reply_then_reopens(dg: DeepgramStandIn) -> None:
    tts = await DeepgramTextToSpeech(KEY, dg.url).open()
    output = tts.output()
    dg.fail_next_reply("close")
    await tts.speak("This reply dies half way.")
    await tts.flush()
    size, marker = await drain(output, Flushed)  # answered locally: the caller never hangs
    assert isinstance(marker, Flushed) and 0 < size < len("This reply dies half way.") * 480
    assert tts.errors == 1

    await tts.speak("Next reply.")  # opens a new socket
    await tts.flush()
    size, _ = await drain(output, Flushed)
    assert size == len("Next reply.") * 480
    assert tts.connects == 2 and len(dg.speak_connections) == 2
    await tts.close()


async def test_tts_flush_rate_limit_warning(dg: DeepgramStandIn) -> None:
    dg.flush_limit = 2
    tts = await DeepgramTextToSpeech(KEY, dg.url).open()
    output = tts.output()
    for _ in range(2):
        await tts.speak("Hi.")
        await tts.flush()
        await drain(output, Flushed)
    await tts.speak("Hi.")
    await tts.flush()
    await wait_for(lambda: tts.warnings)
    assert "rate limit" in tts.warnings[0]
    await tts.close()
