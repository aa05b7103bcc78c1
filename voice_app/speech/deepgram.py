"""Deepgram adapters: live nova-3 recognition and Aura-2 synthesis over the official SDK (7.x).

Both speak μ-law 8 kHz mono end to end, so Twilio's audio is forwarded untouched and Aura's output
goes straight back to Twilio. The SDK does no reconnecting and runs callbacks inline in its receive
loop, so these classes hand every message to an asyncio.Queue and reopen dropped sockets themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.events import EventType
from deepgram.listen.v1.socket_client import AsyncV1SocketClient as ListenSocket
from deepgram.listen.v1.types import (
    ListenV1Error,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from deepgram.speak.v1.socket_client import AsyncV1SocketClient as SpeakSocket
from deepgram.speak.v1.types import SpeakV1Cleared, SpeakV1Flushed, SpeakV1Text, SpeakV1Warning

from voice_app.speech.base import Cleared, Flushed, SpeechOutput, TranscriptEvent

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000  # μ-law bytes per second, one byte per sample


def deepgram_environment(base_url: str) -> DeepgramClientEnvironment:
    """SDK endpoints from one DEEPGRAM_URL: REST on http(s), sockets on the matching ws(s)."""
    parts = urlsplit(base_url.rstrip("/"))
    secure = parts.scheme in ("https", "wss")
    rest = f"{'https' if secure else 'http'}://{parts.netloc}{parts.path}"
    ws = f"{'wss' if secure else 'ws'}://{parts.netloc}{parts.path}"
    if rest == "https://api.deepgram.com":
        return DeepgramClientEnvironment.PRODUCTION
    return DeepgramClientEnvironment(base=rest, production=ws, agent=ws, agent_rest=rest)


def _client(api_key: str, base_url: str) -> AsyncDeepgramClient:
    return AsyncDeepgramClient(api_key=api_key, environment=deepgram_environment(base_url))


async def _finish(task: asyncio.Task[None] | None, grace: float) -> None:
    """Wait for a task to end by itself, cancelling it after `grace` seconds; never raises."""
    if task is None:
        return
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        task.cancel()
        await asyncio.wait({task})


# Speech to text -----------------------------------------------------------------------------


class DeepgramSpeechToText:
    """`SpeechToText` backed by Deepgram live streaming (`/v1/listen`)."""

    name = "deepgram"

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.deepgram.com",
        *,
        model: str = "nova-3",
        language: str = "en-US",
        endpointing_ms: int = 300,
        utterance_end_ms: int = 1000,
        keepalive_interval: float = 4.0,
        connect_timeout: float = 5.0,
        max_reconnect_attempts: int = 5,
        reconnect_backoff: float = 0.2,
    ) -> None:
        self._client = _client(api_key, base_url)
        self.options: dict[str, Any] = {
            "model": model,
            "language": language,
            "encoding": "mulaw",
            "sample_rate": SAMPLE_RATE,
            "channels": 1,
            "interim_results": True,
            "endpointing": endpointing_ms,
            "utterance_end_ms": utterance_end_ms,
            "vad_events": True,
            "smart_format": True,
            "punctuate": True,
        }
        self.keepalive_interval = keepalive_interval
        self.connect_timeout = connect_timeout
        self.max_reconnect_attempts = max_reconnect_attempts
        self.reconnect_backoff = reconnect_backoff

    async def open(self) -> DeepgramTranscriberStream:
        """Connect now; raises (e.g. deepgram ApiError 401) if the first attempt fails."""
        stream = DeepgramTranscriberStream(self)
        await stream.start()
        return stream


class DeepgramTranscriberStream:
    """One call's recognition. Survives dropped sockets by reconnecting; `reconnects` counts them.

    Timestamps (`at`) keep counting across reconnects: each new socket starts at zero, so the audio
    already sent on earlier sockets is added back.
    """

    BACKLOG_FRAMES = 100  # ~2 s of 20 ms frames kept while reconnecting, replayed in order

    def __init__(self, stt: DeepgramSpeechToText) -> None:
        self._stt = stt
        self._events: asyncio.Queue[TranscriptEvent | None] = asyncio.Queue()
        self._socket: ListenSocket | None = None
        self._backlog: deque[bytes] = deque(maxlen=self.BACKLOG_FRAMES)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._offset = 0  # audio bytes (= samples) sent on earlier sockets
        self._sent = 0  # audio bytes sent on the current socket
        self._last_activity = 0.0
        self.reconnects = 0
        self.keepalives = 0
        self.error: BaseException | None = None  # why the stream gave up, if it did

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = asyncio.create_task(self._run(), name="deepgram-stt")
        await self._first

    # TranscriberStream ----------------------------------------------------------------------

    async def send_audio(self, mulaw: bytes) -> None:
        if self._closing or not mulaw:
            return
        socket = self._socket
        if socket is None:
            self._backlog.append(mulaw)  # reconnecting: replayed as soon as the socket is back
            return
        try:
            await socket.send_media(mulaw)
        except Exception:
            self._backlog.append(mulaw)  # the socket just died; the run loop will reconnect
            return
        self._sent += len(mulaw)
        self._last_activity = asyncio.get_running_loop().time()

    async def events(self) -> AsyncIterator[TranscriptEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if not self._closing:
            self._closing = True
            socket = self._socket
            if socket is None and self._task is not None:
                self._task.cancel()  # between sockets: nothing to finish
            elif socket is not None:
                with contextlib.suppress(Exception):
                    await socket.send_close_stream()  # last results, Metadata, then it closes
        await _finish(self._task, self._stt.connect_timeout)

    # Connection loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        try:
            while not self._closing:
                started = loop.time()
                try:
                    await self._session()
                except Exception as exc:
                    if self._first is not None and not self._first.done():
                        self._first.set_exception(exc)
                        return
                    problem: object = exc
                else:
                    if self._closing:
                        return
                    problem = "socket closed mid-call"
                # A socket that lived a while resets the count; quick deaths back off and give up.
                failures = 1 if loop.time() - started > 2.0 else failures + 1
                if failures > self._stt.max_reconnect_attempts:
                    log.error("deepgram stt: giving up after %d attempts: %s", failures, problem)
                    self.error = problem if isinstance(problem, BaseException) else None
                    return
                log.warning("deepgram stt: %s; reconnecting (attempt %d)", problem, failures)
                if failures > 1:
                    await asyncio.sleep(self._stt.reconnect_backoff * (failures - 1))
        finally:
            self._socket = None
            self._events.put_nowait(None)  # ends events()

    async def _session(self) -> None:
        """One socket's life: connect, replay backlog, listen until it closes."""
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self._stt.connect_timeout):
                socket = await stack.enter_async_context(
                    self._stt._client.listen.v1.connect(**self._stt.options)
                )
            socket.on(EventType.MESSAGE, self._on_message)
            socket.on(EventType.ERROR, lambda exc: log.info("deepgram stt socket: %r", exc))
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
            else:
                self.reconnects += 1
            while self._backlog:
                await socket.send_media(chunk := self._backlog.popleft())
                self._sent += len(chunk)
            self._socket = socket  # no await since the backlog emptied: order is kept
            self._last_activity = asyncio.get_running_loop().time()
            keepalive = asyncio.create_task(self._keepalive(socket))
            try:
                await socket.start_listening()  # returns when the socket closes, for any reason
            finally:
                keepalive.cancel()
                self._socket = None
                self._offset += self._sent
                self._sent = 0

    async def _keepalive(self, socket: ListenSocket) -> None:
        """KeepAlive whenever no audio has flowed for a while (Deepgram closes after 10 s)."""
        loop = asyncio.get_running_loop()
        interval = self._stt.keepalive_interval
        with contextlib.suppress(Exception):
            while True:
                idle = loop.time() - self._last_activity
                if idle < interval:
                    await asyncio.sleep(interval - idle)
                    continue
                await socket.send_keep_alive()
                self.keepalives += 1
                self._last_activity = loop.time()

    def _on_message(self, message: Any) -> None:
        """Runs inside the SDK's receive loop: translate and queue, never block."""
        event: TranscriptEvent | None = None
        offset = self._offset / SAMPLE_RATE
        if isinstance(message, ListenV1Results):
            alt = message.channel.alternatives[0]
            text = alt.transcript.strip()
            at = round(offset + message.start + message.duration, 3)
            if message.is_final:
                # An empty final still matters when it carries speech_final (ends the turn).
                if text or message.speech_final:
                    event = TranscriptEvent(
                        "final", text, bool(message.speech_final), alt.confidence, at
                    )
            elif text:
                event = TranscriptEvent("interim", text, False, alt.confidence, at)
        elif isinstance(message, ListenV1SpeechStarted):
            event = TranscriptEvent("speech_started", at=round(offset + message.timestamp, 3))
        elif isinstance(message, ListenV1UtteranceEnd):
            event = TranscriptEvent("utterance_end", at=round(offset + message.last_word_end, 3))
        elif isinstance(message, ListenV1Error):
            log.warning("deepgram stt error: %s %s", message.variant, message.description)
        if event is not None:
            self._events.put_nowait(event)


# Text to speech -----------------------------------------------------------------------------


class DeepgramTextToSpeech:
    """`TextToSpeech` backed by the Aura-2 streaming socket (`/v1/speak`)."""

    name = "deepgram"

    def __init__(
        self,
        api_key: str,
        base_url: str = "https://api.deepgram.com",
        *,
        model: str = "aura-2-thalia-en",
        connect_timeout: float = 5.0,
    ) -> None:
        self._client = _client(api_key, base_url)
        self.options: dict[str, Any] = {
            "model": model,
            "encoding": "mulaw",
            "sample_rate": SAMPLE_RATE,
        }
        self.connect_timeout = connect_timeout

    async def open(self) -> DeepgramSynthesizerStream:
        stream = DeepgramSynthesizerStream(self)
        await stream.connect()
        return stream


class DeepgramSynthesizerStream:
    """One call's synthesis socket. If the socket dies, the next speak() opens a new one.

    A dead socket never leaves the consumer waiting: each flush or clear still unanswered is
    answered locally (Flushed / Cleared), and the audio it would have produced is simply missing.
    Audio that arrives between clear() and the server's Cleared is dropped.
    """

    def __init__(self, tts: DeepgramTextToSpeech) -> None:
        self._tts = tts
        self._out: asyncio.Queue[SpeechOutput | None] = asyncio.Queue()
        self._socket: SpeakSocket | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._pending_flushes = 0  # flushes the server has not answered yet
        self._stale_flushes = 0  # of those, how many were sent before the latest clear()
        self._pending_clears = 0
        self._flushes_sent = 0
        self.connects = 0
        self.errors = 0
        self.warnings: list[str] = []

    async def connect(self) -> None:
        async with self._lock:
            if self._socket is not None:
                return
            stack = contextlib.AsyncExitStack()
            try:
                async with asyncio.timeout(self._tts.connect_timeout):
                    socket: SpeakSocket = await stack.enter_async_context(
                        self._tts._client.speak.v1.connect(**self._tts.options)
                    )
            except BaseException:
                await stack.aclose()
                raise
            socket.on(EventType.MESSAGE, self._on_message)
            self._socket = socket
            self.connects += 1
            self._reader = asyncio.create_task(self._listen(socket, stack), name="deepgram-tts")

    # SynthesizerStream ----------------------------------------------------------------------

    async def speak(self, text: str) -> None:
        if self._closing or not text.strip():
            return
        for attempt in (1, 2):
            if self._socket is None:
                await self.connect()
            socket = self._socket
            assert socket is not None
            try:
                await socket.send_text(SpeakV1Text(type="Speak", text=text))
                return
            except Exception:
                if attempt == 2:
                    raise
                self._forget(socket)  # died under us: reopen once and resend

    async def flush(self) -> None:
        socket = self._socket
        if socket is None:
            self._out.put_nowait(Flushed(self._flushes_sent))  # nothing queued can be spoken
            self._flushes_sent += 1
            return
        self._pending_flushes += 1
        self._flushes_sent += 1
        try:
            await socket.send_flush()
        except Exception:
            self._forget(socket)

    async def clear(self) -> None:
        socket = self._socket
        if socket is None:
            self._out.put_nowait(Cleared())
            return
        self._pending_clears += 1
        self._stale_flushes = self._pending_flushes
        try:
            await socket.send_clear()
        except Exception:
            self._forget(socket)

    async def output(self) -> AsyncIterator[SpeechOutput]:
        while (item := await self._out.get()) is not None:
            yield item

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        socket, reader = self._socket, self._reader
        if socket is not None:
            with contextlib.suppress(Exception):
                await socket.send_close()
        await _finish(reader, self._tts.connect_timeout)
        self._out.put_nowait(None)

    # Internals ------------------------------------------------------------------------------

    async def _listen(self, socket: SpeakSocket, stack: contextlib.AsyncExitStack) -> None:
        try:
            await socket.start_listening()
        finally:
            with contextlib.suppress(Exception):
                await stack.aclose()
            self._forget(socket)

    def _forget(self, socket: SpeakSocket) -> None:
        """The socket is gone (its reader closes it): answer what it owed, reopen on next speak."""
        if self._socket is not socket:
            return
        self._socket = None
        live = self._pending_flushes - self._stale_flushes
        if not self._closing:  # any loss we did not ask for is a provider fault to report
            self.errors += 1
            log.warning("deepgram tts: socket lost (%d replies owed; answered locally)", live)
        for _ in range(self._pending_clears):
            self._out.put_nowait(Cleared())
        for _ in range(live):
            self._out.put_nowait(Flushed())
        self._pending_flushes = self._stale_flushes = self._pending_clears = 0

    def _on_message(self, message: Any) -> None:
        """Runs inside the SDK's receive loop: queue, never block.

        Dispatch on `type`, not on the class: SDK 7.17 parses a Cleared message as
        `SpeakV1Flushed(type="Cleared")` (both models accept either type literal).
        """
        kind = getattr(message, "type", None)
        if isinstance(message, bytes):
            if self._pending_clears == 0:  # audio before the server's Cleared is stale
                self._out.put_nowait(message)
        elif kind == "Flushed" and isinstance(message, SpeakV1Flushed | SpeakV1Cleared):
            self._pending_flushes = max(0, self._pending_flushes - 1)
            if self._stale_flushes > 0:
                self._stale_flushes -= 1  # a reply the caller already cleared
            else:
                self._out.put_nowait(Flushed(message.sequence_id))
        elif kind == "Cleared" and isinstance(message, SpeakV1Flushed | SpeakV1Cleared):
            self._pending_clears = max(0, self._pending_clears - 1)
            if self._pending_clears == 0:
                # The server dropped the cleared replies: their Flushed will never come.
                self._pending_flushes -= self._stale_flushes
                self._stale_flushes = 0
            self._out.put_nowait(Cleared(message.sequence_id))
        elif isinstance(message, SpeakV1Warning):
            self.warnings.append(message.description)
            log.warning("deepgram tts warning %s: %s", message.code, message.description)
