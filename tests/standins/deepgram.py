"""A Deepgram stand-in: `/v1/listen` (live STT) and `/v1/speak` (Aura TTS) over WebSockets.

How does a fake know what was said? It doesn't: the test says it. The stand-in finds utterances by
audio energy (μ-law → PCM RMS, in 10 ms windows, on *audio* time, so audio may be sent faster than
real time) and, for each, uses the next transcript the test queued:

    async with DeepgramStandIn() as dg:
        dg.expect_utterances(["what is on my todo list", Utterance("")])   # "" = a cough
        ...  # SpeechStarted at onset, interim Results while voiced, a final with speech_final
             # after `endpointing` ms of silence, UtteranceEnd after `utterance_end_ms`.

Bursts shorter than `min_utterance_ms` only produce SpeechStarted and consume no transcript. When
the queue is empty, `fallback_transcript` is used. Endpointing and utterance_end_ms come from the
client's query unless overridden on the stand-in.

TTS: Speak text is buffered until it ends a sentence (then spoken at once, as Deepgram does) or a
Flush comes; each produces `ms_per_char` of deterministic μ-law tone per character (after
`tts_ttfb` seconds, in `tts_chunk_bytes` chunks); a Flush is answered with Flushed{sequence_id}.

Faults: `drop()` (1011 mid-stream, or abort=True for a dead TCP), `reject_next(status)`,
`stall()`/`resume()`, `fail_next_reply("error"|"close"|"stall")`; `idle_timeout` (NET-0001).
REST `POST /v1/speak` is served on a second port, `rest_url` (websockets serves only GET).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tests.standins import HOST, StandIn

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # py ≥ 3.13: provided by audioop-lts

SAMPLE_RATE = 8000
WINDOW = 80  # bytes of μ-law = 10 ms
NET_0001 = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)


@dataclass
class Utterance:
    """What the caller 'said' in the next detected utterance. "" means noise (no words)."""

    text: str
    confidence: float = 0.98


@dataclass
class Connection:
    """One WebSocket session as the stand-in saw it."""

    kind: str  # "listen" | "speak"
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    audio: bytearray = field(default_factory=bytearray)  # listen: audio received
    received: list[dict[str, Any]] = field(default_factory=list)  # text frames from the client
    sent: list[dict[str, Any]] = field(default_factory=list)  # JSON frames to the client
    audio_sent: int = 0  # speak: bytes of audio sent
    close_code: int | None = None
    ws: ServerConnection | None = field(default=None, repr=False)

    @property
    def types_sent(self) -> list[str]:
        return [m.get("type", "") for m in self.sent]


def tone(n_bytes: int, freq: int = 400, amplitude: int = 6000) -> bytes:
    """Deterministic μ-law sine: the stand-in's 'voice' and the tests' 'speech'."""
    period = SAMPLE_RATE // freq
    pcm = b"".join(
        int(amplitude * math.sin(2 * math.pi * i / period)).to_bytes(2, "little", signed=True)
        for i in range(period)
    )
    cycle = audioop.lin2ulaw(pcm, 2)
    return (cycle * (n_bytes // period + 1))[:n_bytes]


def rms(mulaw: bytes) -> int:
    return int(audioop.rms(audioop.ulaw2lin(mulaw, 2), 2))


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "false").lower() == "true"


class _Recognizer:
    """One listen session's recognition state: audio in, Deepgram messages out (no I/O)."""

    def __init__(self, standin: DeepgramStandIn, query: dict[str, str]) -> None:
        self.standin = standin
        self.request_id = str(uuid.uuid4())
        self.vad_events = _flag(query, "vad_events")
        self.interim = _flag(query, "interim_results")
        raw_endpointing = query.get("endpointing", "10")
        self.speech_final_enabled = raw_endpointing.lower() != "false"
        ep = standin.endpointing_ms
        if ep is None:
            ep = int(raw_endpointing) if self.speech_final_enabled else 300
        self.endpointing = ep / 1000
        ue = standin.utterance_end_ms
        if ue is None and self.interim and "utterance_end_ms" in query:
            ue = int(query["utterance_end_ms"])
        self.utterance_end = ue / 1000 if ue else None
        self.model = query.get("model", "nova-3")

        self.carry = b""
        self.samples = 0  # audio analysed, in samples (exact, unlike summed floats)
        self.t = 0.0  # the same in seconds
        self.onset: float | None = None  # start of the current burst
        self.last_voice = 0.0  # end of the last voiced window
        self.current: Utterance | None = None  # set once the burst is long enough
        self.next_interim = 0.0
        self.segment_start = 0.0
        self.pending_ue: float | None = None  # last_word_end awaiting UtteranceEnd

    # Audio ----------------------------------------------------------------------------------

    def feed(self, audio: bytes) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        data = self.carry + audio
        whole = len(data) - len(data) % WINDOW
        self.carry = data[whole:]
        for i in range(0, whole, WINDOW):
            self._window(data[i : i + WINDOW], out)
        return out

    def _window(self, window: bytes, out: list[dict[str, Any]]) -> None:
        start = self.t
        self.samples += WINDOW
        self.t = self.samples / SAMPLE_RATE
        s = self.standin
        if rms(window) >= s.speech_rms:
            if self.onset is None:
                self.onset = start
                self.pending_ue = None  # speech resumed inside the gap: no UtteranceEnd yet
                if self.vad_events:
                    out.append({"type": "SpeechStarted", "channel": [0, 1], "timestamp": start})
            self.last_voice = self.t
            if self.current is None and self.t - self.onset >= s.min_utterance_ms / 1000:
                self.current = s.next_utterance()
                self.next_interim = self.onset + s.interim_every_ms / 1000
            if (
                self.current is not None
                and self.current.text
                and self.interim
                and self.t >= self.next_interim
            ):
                self.next_interim += s.interim_every_ms / 1000
                out.append(self._interim())
            return
        if self.onset is not None and self.t - self.last_voice >= self.endpointing:
            if self.current is not None:
                out.append(self._final(speech_final=self.speech_final_enabled))
            self.onset, self.current = None, None
        if (
            self.pending_ue is not None
            and self.utterance_end is not None
            and self.t - self.pending_ue >= self.utterance_end
        ):
            out.append(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.pending_ue}
            )
            self.pending_ue = None

    # Control messages -----------------------------------------------------------------------

    def finalize(self, *, closing: bool = False) -> list[dict[str, Any]]:
        """Finalize (or CloseStream): flush what is pending into a final result."""
        if self.onset is not None and self.current is not None:
            out = [self._final(speech_final=False, from_finalize=not closing)]
        elif closing:
            out = []
        else:
            out = [self._results("", [], is_final=True, speech_final=False, from_finalize=True)]
        self.onset, self.current = None, None
        return out

    def metadata(self, audio_bytes: int) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": hashlib.sha256(self.request_id.encode()).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "duration": audio_bytes / SAMPLE_RATE,
            "channels": 1,
            "models": [self.standin.model_uuid],
            "model_info": {self.standin.model_uuid: {"name": "2-general-nova", "arch": "nova-3"}},
        }

    # Results --------------------------------------------------------------------------------

    def _interim(self) -> dict[str, Any]:
        assert self.current is not None and self.onset is not None
        words = self.current.text.split()
        n = min(
            len(words), max(1, math.ceil((self.t - self.onset) * self.standin.words_per_second))
        )
        return self._results(" ".join(words[:n]), self._timed(words[:n]), is_final=False)

    def _final(self, *, speech_final: bool, from_finalize: bool = False) -> dict[str, Any]:
        assert self.current is not None
        words = self.current.text.split()
        result = self._results(
            self.current.text,
            self._timed(words),
            is_final=True,
            speech_final=speech_final and bool(words),
            from_finalize=from_finalize,
        )
        if words:
            self.pending_ue = self.last_voice
        self.segment_start = self.t
        return result

    def _timed(self, words: list[str]) -> list[dict[str, Any]]:
        """Spread the words evenly over the voiced span."""
        assert self.onset is not None and self.current is not None
        span = max(self.last_voice - self.onset, 0.01) / max(len(words), 1)
        conf = self.current.confidence
        return [
            {
                "word": w.strip(".,?!").lower(),
                "start": round(self.onset + i * span, 3),
                "end": round(self.onset + (i + 1) * span, 3),
                "confidence": conf,
                "punctuated_word": w,
            }
            for i, w in enumerate(words)
        ]

    def _results(
        self,
        transcript: str,
        words: list[dict[str, Any]],
        *,
        is_final: bool,
        speech_final: bool = False,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        conf = self.current.confidence if self.current and transcript else 0.0
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(self.t - self.segment_start, 3),
            "start": round(self.segment_start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [{"transcript": transcript, "confidence": conf, "words": words}]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "2-general-nova", "version": "2024-01-01", "arch": "nova-3"},
                "model_uuid": self.standin.model_uuid,
            },
        }


class DeepgramStandIn(StandIn):
    name = "deepgram"

    def __init__(
        self,
        *,
        port: int = 0,
        api_key: str | None = None,  # None: any key is accepted
        latency: float = 0.0,  # seconds from audio arrival to the messages it causes
        endpointing_ms: int | None = None,  # None: the client's `endpointing`
        utterance_end_ms: int | None = None,  # None: the client's `utterance_end_ms`
        min_utterance_ms: int = 250,
        interim_every_ms: int = 250,
        words_per_second: float = 3.0,
        speech_rms: int = 500,
        idle_timeout: float = 10.0,
        fallback_transcript: str = "hello",
        ms_per_char: float = 60.0,
        tts_ttfb: float = 0.0,
        tts_chunk_bytes: int = 1600,
        tts_chunk_interval: float = 0.0,
        flush_limit: int = 20,
        flush_window: float = 60.0,
        rest: bool = True,
        strict_format: bool = True,  # refuse anything but encoding=mulaw, sample_rate=8000
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.latency = latency
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.min_utterance_ms = min_utterance_ms
        self.interim_every_ms = interim_every_ms
        self.words_per_second = words_per_second
        self.speech_rms = speech_rms
        self.idle_timeout = idle_timeout
        self.fallback_transcript = fallback_transcript
        self.ms_per_char = ms_per_char
        self.tts_ttfb = tts_ttfb
        self.tts_chunk_bytes = tts_chunk_bytes
        self.tts_chunk_interval = tts_chunk_interval
        self.flush_limit = flush_limit
        self.flush_window = flush_window
        self.model_uuid = str(uuid.uuid4())
        self.connections: list[Connection] = []
        self.rejected: list[tuple[str, int]] = []  # (path, status) of refused handshakes
        self.rest_requests: list[dict[str, Any]] = []
        self.rest_port = 0
        self._rest = rest
        self.strict_format = strict_format
        self._utterances: deque[Utterance] = deque()
        self._rejections: deque[int] = deque()
        self._reply_faults: deque[str] = deque()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._server: Server | None = None
        self._runner: web.AppRunner | None = None

    # Test API -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The DEEPGRAM_URL form (http://…); the SDK's websocket base is `ws_url`."""
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    def ready_line(self) -> str:
        return f"READY {self.url} rest={self.rest_url}"

    def expect_utterances(self, items: Iterable[str | Utterance]) -> None:
        """Queue transcripts for the next detected utterances, in order (shared by all sockets)."""
        self._utterances.extend(i if isinstance(i, Utterance) else Utterance(i) for i in items)

    def next_utterance(self) -> Utterance:
        return (
            self._utterances.popleft() if self._utterances else Utterance(self.fallback_transcript)
        )

    @property
    def listen_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.kind == "listen"]

    @property
    def speak_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.kind == "speak"]

    def active(self, kind: str | None = None) -> list[Connection]:
        return [
            c
            for c in self.connections
            if c.close_code is None and c.ws is not None and (kind is None or c.kind == kind)
        ]

    # Faults ---------------------------------------------------------------------------------

    async def drop(self, kind: str = "listen", *, code: int = 1011, abort: bool = False) -> None:
        """Close open sockets of `kind` mid-stream: a 1011 close frame, or a dead TCP connection."""
        for conn in self.active(kind):
            assert conn.ws is not None
            if abort:
                conn.ws.transport.abort()
            else:
                await conn.ws.close(code, "injected fault")

    def reject_next(self, status: int = 401, count: int = 1) -> None:
        """Refuse the next `count` WebSocket handshakes with an HTTP status."""
        self._rejections.extend([status] * count)

    def stall(self) -> None:
        """Keep sockets open but send nothing until `resume()` (queued messages then flow)."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    def fail_next_reply(self, kind: str = "error") -> None:
        """TTS: the next Flush fails. "error": half the audio, an Error, close 1011;
        "close": half the audio, then the TCP connection dies; "stall": no audio, no Flushed."""
        assert kind in {"error", "close", "stall"}
        self._reply_faults.append(kind)

    # Server ---------------------------------------------------------------------------------

    async def start(self) -> Self:
        self._stopping.clear()
        self._server = await serve(
            self._handle, HOST, self.requested_port, process_request=self._check_handshake
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self._rest:
            app = web.Application()
            app.router.add_post("/v1/speak", self._rest_speak)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await self._runner.setup()
            await web.TCPSite(self._runner, HOST, 0).start()
            self.rest_port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        self._resumed.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _auth_ok(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, key = authorization.partition(" ")
        if scheme not in ("Token", "Bearer") or not key:
            return False
        return self.api_key is None or key == self.api_key

    def _check_handshake(self, ws: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        query = _query(request.path)
        if self._rejections:
            status = self._rejections.popleft()
            self.rejected.append((path, status))
            return ws.respond(status, "injected rejection\n")
        if path not in ("/v1/listen", "/v1/speak"):
            return ws.respond(404, "not found\n")
        if not self._auth_ok(request.headers.get("Authorization")):
            self.rejected.append((path, 401))
            return ws.respond(401, '{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}')
        if "encoding" in query and "sample_rate" not in query:
            self.rejected.append((path, 400))
            return ws.respond(400, '{"err_code":"Bad Request","err_msg":"sample_rate required"}')
        if self.strict_format and (
            query.get("encoding", "mulaw") != "mulaw"
            or query.get("sample_rate", "8000") != "8000"
            or query.get("channels", "1") != "1"
        ):
            # Not a Deepgram rule: this stand-in only hears and speaks μ-law 8 kHz mono.
            self.rejected.append((path, 400))
            return ws.respond(400, '{"err_code":"Bad Request","err_msg":"stand-in: mulaw/8000/1"}')
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path.split("?", 1)[0]
        conn = Connection(
            kind="listen" if path == "/v1/listen" else "speak",
            path=path,
            query=_query(ws.request.path),
            headers=_headers(ws.request.headers),
            ws=ws,
        )
        self.connections.append(conn)
        try:
            if conn.kind == "listen":
                await self._listen(conn, ws)
            else:
                await self._speak(conn, ws)
        except ConnectionClosed:
            pass
        finally:
            conn.close_code = ws.close_code if ws.close_code is not None else 1006

    # /v1/listen -----------------------------------------------------------------------------

    async def _listen(self, conn: Connection, ws: ServerConnection) -> None:
        rec = _Recognizer(self, conn.query)
        outbox: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        last_activity = loop.time()

        def post(messages: list[dict[str, Any]]) -> None:
            due = loop.time() + self.latency
            for m in messages:
                outbox.put_nowait((due, m))

        async def sender() -> None:
            with contextlib.suppress(ConnectionClosed):
                while (item := await outbox.get()) is not None:
                    due, message = item
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    await self._resumed.wait()
                    conn.sent.append(message)
                    await ws.send(json.dumps(message))

        async def watchdog() -> None:
            while True:
                left = last_activity + self.idle_timeout - loop.time()
                if left <= 0:
                    await ws.close(1011, NET_0001[:120])
                    return
                await asyncio.sleep(left)

        send_task = asyncio.create_task(sender())
        idle_task = asyncio.create_task(watchdog())
        try:
            async for frame in ws:
                last_activity = loop.time()
                if isinstance(frame, bytes):
                    conn.audio += frame
                    post(rec.feed(frame))
                    continue
                message = json.loads(frame)
                conn.received.append(message)
                kind = message.get("type")
                if kind == "Finalize":
                    post(rec.finalize())
                elif kind == "CloseStream":
                    post([*rec.finalize(closing=True), rec.metadata(len(conn.audio))])
                    outbox.put_nowait(None)
                    await send_task
                    await ws.close(1000)
                    return
        finally:
            idle_task.cancel()
            send_task.cancel()

    # /v1/speak ------------------------------------------------------------------------------

    async def _speak(self, conn: Connection, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        pending: list[str] = []
        # (sequence or None, text, generation): None is a sentence spoken as soon as it is
        # complete, as Deepgram does; a number is a Flush, answered with Flushed.
        jobs: asyncio.Queue[tuple[int | None, str, int]] = asyncio.Queue()
        flushes: deque[float] = deque()
        state = {"sequence": 0, "generation": 0}

        async def send_json(message: dict[str, Any]) -> None:
            conn.sent.append(message)
            await ws.send(json.dumps(message))

        async def worker() -> None:
            with contextlib.suppress(ConnectionClosed):
                await work_loop()

        async def work_loop() -> None:
            while True:
                seq, text, generation = await jobs.get()
                if state.get("stalled") == generation:
                    if seq is not None:
                        state["stalled"] = None  # the stalled reply ends at its Flush
                    continue
                fault = self._reply_faults.popleft() if self._reply_faults else None
                if fault == "stall":
                    if seq is None:  # mid-reply: the rest of the reply stays silent too
                        state["stalled"] = generation
                    continue
                await asyncio.sleep(self.tts_ttfb)
                await self._resumed.wait()
                audio = tone(int(len(text) * self.ms_per_char * SAMPLE_RATE / 1000))
                if fault:
                    audio = audio[: len(audio) // 2]
                for i in range(0, len(audio), self.tts_chunk_bytes):
                    if generation != state["generation"]:
                        break  # cleared
                    await ws.send(audio[i : i + self.tts_chunk_bytes])
                    conn.audio_sent += len(audio[i : i + self.tts_chunk_bytes])
                    if self.tts_chunk_interval:
                        await asyncio.sleep(self.tts_chunk_interval)
                if fault == "error":
                    await send_json(
                        {"type": "Error", "err_code": "INTERNAL", "err_msg": "injected fault"}
                    )
                    await ws.close(1011, "injected fault")
                    return
                if fault == "close":
                    ws.transport.abort()
                    return
                if seq is not None and generation == state["generation"]:
                    await send_json({"type": "Flushed", "sequence_id": seq})

        await send_json(
            {
                "type": "Metadata",
                "request_id": str(uuid.uuid4()),
                "model_name": conn.query.get("model", "aura-2-thalia-en"),
                "model_version": "2025-04-07.0",
                "model_uuid": self.model_uuid,
            }
        )
        work = asyncio.create_task(worker())
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    continue
                message = json.loads(frame)
                conn.received.append(message)
                kind = message.get("type")
                if kind == "Speak":
                    pending.append(str(message.get("text", "")))
                    if pending[-1].rstrip().endswith((".", "!", "?")):
                        jobs.put_nowait((None, "".join(pending), state["generation"]))
                        pending.clear()
                elif kind == "Flush":
                    now = loop.time()
                    while flushes and now - flushes[0] > self.flush_window:
                        flushes.popleft()
                    if len(flushes) >= self.flush_limit:
                        await send_json(
                            {
                                "type": "Warning",
                                "description": "Flush rate limit exceeded: "
                                f"{self.flush_limit} per {self.flush_window:g} s.",
                                "code": "FLUSH_RATE_LIMIT",
                            }
                        )
                        continue
                    flushes.append(now)
                    jobs.put_nowait((state["sequence"], "".join(pending), state["generation"]))
                    state["sequence"] += 1
                    pending.clear()
                elif kind == "Clear":
                    pending.clear()
                    state["generation"] += 1
                    while not jobs.empty():
                        jobs.get_nowait()
                    await send_json({"type": "Cleared", "sequence_id": state["sequence"]})
                    state["sequence"] += 1
                elif kind == "Close":
                    await ws.close(1000)
                    return
        finally:
            work.cancel()

    # REST /v1/speak -------------------------------------------------------------------------

    async def _rest_speak(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.rest_requests.append({"query": dict(request.query), "json": body})
        if not self._auth_ok(request.headers.get("Authorization")):
            return web.json_response({"err_code": "INVALID_AUTH"}, status=401)
        if self._rejections:
            return web.json_response({"err_msg": "injected"}, status=self._rejections.popleft())
        await asyncio.sleep(self.tts_ttfb)
        text = str(body.get("text", ""))
        audio = tone(int(len(text) * self.ms_per_char * SAMPLE_RATE / 1000))
        if request.query.get("container", "none") == "wav":
            audio = _wav_header(len(audio)) + audio
        return web.Response(
            body=audio,
            content_type="audio/basic",
            headers={"dg-request-id": str(uuid.uuid4()), "dg-char-count": str(len(text))},
        )

    # Command line ---------------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api-key", default=None)
        parser.add_argument("--latency", type=float, default=0.0)
        parser.add_argument("--endpointing-ms", type=int, default=None)
        parser.add_argument("--utterance-end-ms", type=int, default=None)
        parser.add_argument("--idle-timeout", type=float, default=10.0)
        parser.add_argument("--fallback-transcript", default="hello")
        parser.add_argument("--ms-per-char", type=float, default=60.0)
        parser.add_argument("--tts-ttfb", type=float, default=0.0)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> DeepgramStandIn:
        return cls(
            port=args.port,
            api_key=args.api_key,
            latency=args.latency,
            endpointing_ms=args.endpointing_ms,
            utterance_end_ms=args.utterance_end_ms,
            idle_timeout=args.idle_timeout,
            fallback_transcript=args.fallback_transcript,
            ms_per_char=args.ms_per_char,
            tts_ttfb=args.tts_ttfb,
        )


def _query(path: str) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    return dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))


def _headers(headers: Headers) -> dict[str, str]:
    return {k: v for k, v in headers.raw_items()}


def _wav_header(n: int) -> bytes:
    import struct

    fmt = struct.pack("<HHIIHH", 7, 1, SAMPLE_RATE, SAMPLE_RATE, 1, 8)  # 7 = μ-law
    return (
        b"RIFF"
        + struct.pack("<I", 36 + n)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", n))
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        DeepgramStandIn.main()
