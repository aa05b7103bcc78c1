"""The benchmarks' providers: the Deepgram and Anthropic stand-ins of tests/standins, instrumented.

Runs as a process of its own, so the app's CPU figures are the app's alone:

    python -m bench.standins --config '{"ttft": 0.3, "lines": ["what is on my todo list"]}'
    # prints one line: READY {"deepgram": URL, "anthropic": URL, "control": URL}

Every moment that matters for attributing a turn's latency is stamped with time.monotonic(), which
on Linux is the system-wide CLOCK_MONOTONIC, the same clock as the simulator's loop.time() in the
driver process; `GET <control>/timings` hands the stamps over.

Tags tie it together. Listen socket k numbers its utterances u = 1, 2, ...; the transcript of
utterance u is the script's line u followed by the word "k<k>u<u>". The app passes it on to Claude
(and logs it as the caller's message, with the call SID); the scripted reply repeats the tag in
its first sentence, so the TTS Speak names the turn too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import gc
import json
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web
from websockets.asyncio.server import ServerConnection

from tests.standins import HOST
from tests.standins.anthropic import (
    AnthropicStandIn,
    ScriptedReply,
    Text,
    ToolUse,
    json_tokens,
    word_tokens,
)
from tests.standins.deepgram import DeepgramStandIn, Utterance

TAG = re.compile(r"\bk(\d+)u(\d+)\b")
SENTENCE_END = (".", "!", "?")  # what makes the TTS stand-in start speaking a buffered text


def tag_of(text: str) -> str | None:
    match = TAG.search(text)
    return match.group(0) if match else None


@dataclass
class Config:
    stt_latency: float = 0.05  # s from the audio that decides to the message (all STT messages)
    endpointing_ms: int = 300  # silence that ends an utterance (speech_final)
    tts_ttfb: float = 0.15  # s from a complete sentence (or Flush) to its first audio
    ms_per_char: float = 60.0  # TTS audio length per character of text
    ttft: float = 0.3  # s from a Messages request to its first content token
    tokens_per_second: float = 80.0
    lines: list[str] = field(default_factory=lambda: ["what is on my todo list"])


@dataclass
class LlmCall:
    """One Messages request, as the stand-in served it."""

    tag: str | None
    kind: str  # "tool" (the reply is a tool_use: the app needs all of it) or "text"
    received_at: float
    first_token_at: float | None = None
    needed_at: float | None = None  # the token that lets the app's chunker cut the 1st sentence
    stop_at: float | None = None  # message_stop sent
    aborted: bool = False


@dataclass
class SpeakJob:
    """The first synthesis on a speak socket after a tagged Speak (or the socket's greeting)."""

    conn: int
    tag: str | None  # None: the first job on the socket, the greeting
    first_speak_at: float
    queued_at: float | None = None  # the Speak that ended the sentence (or the Flush) arrived
    first_audio_at: float | None = None
    audio_bytes: int = 0  # the whole reply's audio, up to its Flushed


@dataclass
class Timings:
    stt_finals: dict[str, float] = field(default_factory=dict)  # tag → speech_final sent
    llm: list[LlmCall] = field(default_factory=list)
    tts: list[SpeakJob] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "stt_finals": self.stt_finals,
            "llm": [asdict(c) for c in self.llm],
            "tts": [asdict(j) for j in self.tts if j.first_audio_at is not None],
        }


# --- Deepgram ----------------------------------------------------------------------------------


@dataclass
class _Listen:
    conn: int
    utterances: int = 0


@dataclass
class _Speak:
    conn: int
    jobs: int = 0
    pending: SpeakJob | None = None  # waiting for its first audio
    playing: SpeakJob | None = None  # its audio is being sent, until the reply's Flushed


# The socket a handler task serves: the stand-in's recogniser asks for the next transcript from
# inside that task, without saying which socket it is for.
_listen_socket: contextvars.ContextVar[_Listen] = contextvars.ContextVar("listen_socket")


def _wrap_send(ws: ServerConnection, seen: Callable[[Any, float], None]) -> None:
    original = ws.send

    async def send(message: Any, *args: Any, **kwargs: Any) -> None:
        seen(message, time.monotonic())
        await original(message, *args, **kwargs)

    ws.send = send  # type: ignore[method-assign]


def _wrap_recv(ws: ServerConnection, seen: Callable[[Any, float], None]) -> None:
    original = ws.recv

    async def recv(*args: Any, **kwargs: Any) -> Any:
        message = await original(*args, **kwargs)
        seen(message, time.monotonic())
        return message

    ws.recv = recv  # type: ignore[method-assign]


class BenchDeepgram(DeepgramStandIn):
    def __init__(self, config: Config, timings: Timings) -> None:
        super().__init__(
            latency=config.stt_latency,
            endpointing_ms=config.endpointing_ms,
            tts_ttfb=config.tts_ttfb,
            ms_per_char=config.ms_per_char,
            idle_timeout=30.0,
            flush_limit=10_000,  # a benchmark's long calls flush more than 20 times a minute
            rest=False,
        )
        self.lines = config.lines
        self.timings = timings
        self._sockets = 0

    def next_utterance(self) -> Utterance:
        socket = _listen_socket.get(None)
        if socket is None:
            return super().next_utterance()
        socket.utterances += 1
        line = self.lines[(socket.utterances - 1) % len(self.lines)]
        return Utterance(f"{line} k{socket.conn}u{socket.utterances}")

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self._sockets += 1
        if ws.request.path.startswith("/v1/listen"):
            listen = _Listen(self._sockets)
            _listen_socket.set(listen)
            _wrap_send(ws, self._listen_sent)
        else:
            speak = _Speak(self._sockets)
            _wrap_recv(ws, lambda message, at: self._speak_received(speak, message, at))
            _wrap_send(ws, lambda message, at: self._speak_sent(speak, message, at))
        try:
            await super()._handle(ws)
        finally:
            # The stand-in keeps every socket's audio; a long run must not.
            self.connections[:] = [c for c in self.connections if c.ws is not ws]

    def _listen_sent(self, message: Any, at: float) -> None:
        if isinstance(message, str) and '"speech_final": true' in message:
            transcript = json.loads(message)["channel"]["alternatives"][0]["transcript"]
            if tag := tag_of(transcript):
                self.timings.stt_finals[tag] = at

    def _speak_received(self, speak: _Speak, message: Any, at: float) -> None:
        if not isinstance(message, str):
            return
        data = json.loads(message)
        kind, text = data.get("type"), str(data.get("text", ""))
        if kind == "Speak":
            tag = tag_of(text)
            if speak.pending is None and (tag or speak.jobs == 0):
                speak.pending = SpeakJob(speak.conn, tag, first_speak_at=at)
                self.timings.tts.append(speak.pending)
            job = speak.pending
            if job is not None and job.queued_at is None and text.rstrip().endswith(SENTENCE_END):
                job.queued_at = at
        elif kind == "Flush" and speak.pending is not None and speak.pending.queued_at is None:
            speak.pending.queued_at = at
        elif kind == "Clear":
            speak.pending = speak.playing = None  # the stand-in drops the reply's audio

    def _speak_sent(self, speak: _Speak, message: Any, at: float) -> None:
        if isinstance(message, str):
            if '"Flushed"' in message:
                speak.playing = None  # the reply's audio is complete
            return
        job = speak.pending
        if job is not None and job.queued_at is not None:
            job.first_audio_at = at
            speak.pending, speak.playing = None, job
            speak.jobs += 1
        if speak.playing is not None:
            speak.playing.audio_bytes += len(message)


# --- Anthropic ---------------------------------------------------------------------------------

_llm_call: contextvars.ContextVar[LlmCall] = contextvars.ContextVar("llm_call")

REPLIES = {  # keyword in the caller's line → the answer's text; "{tag}" ends its first sentence
    "todo": "You have three open todos {tag}. The first one is to call the bank about the card.",
    "team": "Your team is the launch team {tag}. There are three people on it and you are one "
    "of them.",
    "calendar": "There is nothing on your calendar today {tag}. Is there anything else I can "
    "help with?",
    "thank": "You are welcome {tag}. Have a lovely day!",
}
DEFAULT_REPLY = "Sure {tag}. What would you like to do next?"


def _last_caller_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            return " ".join(texts)
    return ""


def scripted_reply(body: dict[str, Any]) -> ScriptedReply:
    """todo_list first when the caller asks about todos, then words; words at once otherwise."""
    messages = body.get("messages", [])
    text = _last_caller_text(messages)
    tag = tag_of(text) or ""
    last = messages[-1].get("content") if messages else ""
    answered_tool = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
    if "todo" in text and not answered_tool:
        return ScriptedReply([ToolUse("todo_list", {"status": "open"})])
    reply = next((r for key, r in REPLIES.items() if key in text.lower()), DEFAULT_REPLY)
    return ScriptedReply([Text(reply.format(tag=tag))])


class BenchAnthropic(AnthropicStandIn):
    def __init__(self, config: Config, timings: Timings) -> None:
        super().__init__(ttft=config.ttft, tokens_per_second=config.tokens_per_second)
        self.timings = timings
        self.responder = scripted_reply

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        _llm_call.set(LlmCall(None, "text", received_at=time.monotonic()))
        try:
            return await super()._messages(request)
        finally:
            self.requests.clear()  # nobody reads the request log here; a soak must not keep it
            self.messages.clear()

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: ScriptedReply,
        usage: dict[str, Any],
        fault: str | None,
    ) -> web.StreamResponse:
        """The stand-in's stream (without faults), stamping when each token left."""
        call = _llm_call.get()
        call.tag = tag_of(_last_caller_text(body.get("messages", [])))
        call.kind = "tool" if reply.effective_stop_reason == "tool_use" else "text"
        self.timings.llm.append(call)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": f"req_{uuid.uuid4().hex[:24]}",
            }
        )
        await response.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())

        try:
            await self._stream_reply(body, reply, usage, call, event)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            call.aborted = True  # the app cancelled the turn (a barge-in) and hung up on us
            raise
        return response

    async def _stream_reply(
        self,
        body: dict[str, Any],
        reply: ScriptedReply,
        usage: dict[str, Any],
        call: LlmCall,
        event: Callable[[str, dict[str, Any]], Awaitable[None]],
    ) -> None:
        gap = 1 / self.tokens_per_second if self.tokens_per_second else 0.0
        start = self._message(body, reply, usage, complete=False)
        await event("message_start", {"type": "message_start", "message": start})
        await event("ping", {"type": "ping"})
        await asyncio.sleep(self.ttft)
        sent: list[tuple[str, float]] = []  # (text of the token, when it left)
        for index, block in enumerate(reply.blocks):
            if isinstance(block, Text):
                opening: dict[str, Any] = {"type": "text", "text": ""}
                kind, name, tokens = "text_delta", "text", word_tokens(block.text)
            else:
                opening = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
                kind, name, tokens = "input_json_delta", "partial_json", json_tokens(block.input)
                tokens = ["", *tokens]
            await event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
            for i, token in enumerate(tokens):
                if i and gap:
                    await asyncio.sleep(gap)
                delta = {"type": kind, name: token}
                await event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
                sent.append((token if kind == "text_delta" else "", time.monotonic()))
            await event("content_block_stop", {"type": "content_block_stop", "index": index})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.effective_stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(sent)},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        call.stop_at = time.monotonic()
        call.first_token_at = sent[0][1] if sent else call.stop_at
        call.needed_at = _sentence_cut_at(sent, call.stop_at)


def _sentence_cut_at(sent: list[tuple[str, float]], stop_at: float) -> float:
    """When the app could first cut a sentence: the chunker needs the token after the full stop
    (it starts with the space and the next word); a reply of one sentence waits for the end."""
    for i, (token, _) in enumerate(sent):
        if token.rstrip().endswith(SENTENCE_END):
            return sent[i + 1][1] if i + 1 < len(sent) else stop_at
    return stop_at


# --- The process -------------------------------------------------------------------------------


async def serve(config: Config) -> None:
    gc.collect()
    gc.freeze()  # no full collector passes over the start-up heap: they would delay messages
    timings = Timings()
    deepgram = BenchDeepgram(config, timings)
    anthropic = BenchAnthropic(config, timings)

    async def get_timings(_: web.Request) -> web.Response:
        return web.json_response(timings.to_json())

    async def reset(_: web.Request) -> web.Response:
        timings.stt_finals.clear()
        timings.llm.clear()
        timings.tts.clear()
        return web.json_response({"ok": True})

    control = web.Application()
    control.router.add_get("/timings", get_timings)
    control.router.add_post("/reset", reset)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0).start()
    control_url = f"http://{HOST}:{runner.addresses[0][1]}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with deepgram, anthropic:
        urls = {"deepgram": deepgram.url, "anthropic": anthropic.url, "control": control_url}
        print("READY " + json.dumps(urls), flush=True)
        await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standins")
    parser.add_argument("--config", default="{}", help="JSON with the fields of Config")
    args = parser.parse_args()
    config = Config(**json.loads(args.config))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))


if __name__ == "__main__":
    main()
