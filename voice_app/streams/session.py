"""One call's engine: caller audio in, the assistant's voice out, the TurnTaker deciding between.

A `CallSession` runs as one task group:

    Twilio frames ──▶ reader ──▶ transcriber ──▶ transcripts ──▶ TurnTaker ──▶ commands
                                                                   ▲   │
                      ticker (timers) ─────────────────────────────┘   ▼
    Twilio ◀── sender (paced, marks) ◀── synthesizer ◀── agent turn (streamed sentences)

Everything that decides is in `TurnTaker` (pure); this module only carries out its commands and
feeds it what happened. When the peer vanishes Quart cancels the handler: cleanup is in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from voice_app.agent.base import Assistant, CallContext, Hangup, Retract, TextDelta, Transfer
from voice_app.agent.chunker import SentenceChunker, speakable
from voice_app.observability.telemetry import CallTelemetry, Turn
from voice_app.speech.base import (
    Cleared,
    Flushed,
    SpeechToText,
    SynthesizerStream,
    TextToSpeech,
    TranscriberStream,
)
from voice_app.streams import codec, turns
from voice_app.streams.audio import PlaybackClock
from voice_app.streams.heard import HeardText
from voice_app.streams.pin_change import PinChangeFlow
from voice_app.streams.pin_change import Say as PinSay
from voice_app.streams.pin_change import Submit as PinSubmit

log = logging.getLogger(__name__)

Outcome = Literal["completed", "transferred", "abandoned", "failed", "max_length"]

LINES = {
    "reprompt": "Are you still there? You can ask me about your todos, your team or your calendar.",
    "goodbye": "Thanks for calling. Goodbye!",
    "silent_goodbye": "I haven't heard anything, so I'll hang up now. Goodbye!",
    "max_length": "We've reached the time limit for this call. Goodbye!",
    "transfer": "Let me connect you to a person. One moment, please.",
    "trouble": "Sorry, something went wrong on my side. Could you say that again?",
    "lost_voice": "Sorry, I lost my voice for a moment. Could you say that again?",
    "restart": "I'm sorry, I have to end this call now for maintenance. Please call back in a "
    "minute. Goodbye!",
}


class CallHooks(Protocol):
    """What a call needs from the world outside it (Redis, PostgreSQL, Twilio REST)."""

    async def transcript(self, speaker: Literal["caller", "assistant"], text: str) -> None: ...

    async def line(self, text: str) -> None:
        """Record a line the engine said on its own (reprompt, goodbye, transfer)."""

    async def transfer(self, reason: str) -> str | None:
        """Hand the live call to a person. None when Twilio takes the call away; otherwise
        the line to say as the call stays with the assistant."""

    async def transfer_cancelled(self) -> None: ...

    async def earlier_conversation(self) -> tuple[str | None, list[tuple[str, str]]]:
        """For a stream replacing an earlier one of this call: an opening line and history."""

    async def hangup(self, reason: str) -> None:
        """Mark the call as ending on purpose (the stream end is then expected)."""

    async def finished(self, outcome: Outcome) -> None: ...

    async def pin_change_requested(self) -> bool:
        """True once after the assistant asked for a keypad PIN change (the flag is cleared)."""

    async def change_pin(self, current: str, new: str) -> str:
        """Change the caller's PIN; returns the line to say."""


@dataclass
class EngineConfig:
    turn: turns.TurnConfig = field(default_factory=turns.TurnConfig)
    # Audio queued at Twilio beyond what the caller has heard, never more. It is what still plays
    # after a barge-in: the caller's first word takes ~70 ms to be detected, so 80 ms here keeps
    # the assistant's voice stopping within ~150 ms, and leaves 40 ms (one chunk) of slack
    # for a busy event loop before the caller would hear a gap.
    max_lead_ms: float = 80.0
    chunk_ms: int = 40  # outbound media message size
    mark_every_ms: int = 200  # how finely we know what the caller heard
    tick_s: float = 0.1
    tts_stall_s: float = 4.0  # a flushed reply with no audio for this long: the TTS is stuck
    start_timeout_s: float = 10.0


class _Speech:
    """The outbound queue between synthesizer and Twilio, with pacing and marks."""

    def __init__(self) -> None:
        self.items: deque[bytes | Flushed] = deque()
        self.ready = asyncio.Event()
        self.resume = asyncio.Event()
        self.resume.set()
        self.dropping = False  # after a clear, until the synthesizer confirms with Cleared

    def push(self, item: bytes | Flushed) -> None:
        self.items.append(item)
        self.ready.set()

    def drop(self) -> None:
        self.items.clear()
        self.dropping = True


_FINISHING: set[asyncio.Task[None]] = set()  # end-of-call cleanups, kept until they are done


async def calls_finishing(timeout_s: float) -> None:
    """At shutdown: wait (bounded) for the cleanups of calls that just ended."""
    if _FINISHING:
        await asyncio.wait(set(_FINISHING), timeout=timeout_s)


class CallSession:
    def __init__(
        self,
        *,
        context: CallContext,
        stream_sid: str,
        send: Callable[[str], Awaitable[None]],
        stt: SpeechToText,
        tts: TextToSpeech,
        assistant: Assistant,
        hooks: CallHooks,
        config: EngineConfig | None = None,
        telemetry: CallTelemetry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.stream_sid = stream_sid
        self._send = send
        self._stt_source = stt
        self._tts_source = tts
        self.assistant = assistant
        self.hooks = hooks
        self.config = config or EngineConfig()
        self.clock = clock
        self.telemetry = telemetry or CallTelemetry(
            context.call_sid, context.tenant_id, context.channel, context.user_id
        )
        self.turns = turns.TurnTaker(self.config.turn)
        self.validator = codec.StreamValidator()
        self.playback = PlaybackClock()
        self.heard = HeardText()
        self.speech = _Speech()
        self.stt: TranscriberStream | None = None
        self.tts: SynthesizerStream | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._done = asyncio.Event()
        self._mark_seq = 0
        self._reply_open = False  # the current reply still expects a Flushed
        self._awaiting_first_audio = False  # an answer whose first audio is not out yet
        self._pin_flow: PinChangeFlow | None = None  # keys go here, never to the agent
        self._pin_prompt_due = False  # start the flow once the assistant's reply has played
        self._flushed_at: float | None = None  # the open reply's Flush went out then
        self._tts_output_at = 0.0  # the synthesizer last sent anything
        self._trouble_due = False  # say LINES["lost_voice"] once listening again
        self._seen_faults = {"stt": 0, "tts": 0}
        self.outcome: Outcome = "abandoned"
        self.stats = {"frames_in": 0, "frames_dropped": 0, "media_out": 0, "barge_ins": 0}

    # --- running ---------------------------------------------------------------------------

    async def run(self, frames: AsyncIterator[str | bytes], start: codec.Start) -> Outcome:
        """Run the call from Twilio's `start` until it ends; returns the outcome."""
        self.validator.check(start)
        try:
            # Both providers open at `start`, side by side, never lazily at the first word.
            self.stt, self.tts = await asyncio.gather(
                self._stt_source.open(), self._tts_source.open()
            )
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self._greet())
                reader = tg.create_task(self._read_twilio(frames))
                background = [
                    tg.create_task(self._read_transcripts()),
                    tg.create_task(self._read_speech()),
                    tg.create_task(self._send_speech()),
                    tg.create_task(self._tick()),
                ]
                await self._done.wait()
                reader.cancel()
                for task in background:
                    task.cancel()
                self._cancel_agent()
        except* Exception:
            log.exception("call engine failed")
            self.outcome = "failed"
        finally:
            await self._cleanup()
        return self.outcome

    def end(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.telemetry.end(outcome)
        self._done.set()

    async def request_goodbye(self, patience_s: float = 8.0) -> None:
        """The server is going away: let the current reply finish, say goodbye, hang up."""
        deadline = self.clock() + patience_s
        while self.turns.phase is not turns.Phase.LISTENING and self.clock() < deadline:
            if self.turns.phase in (turns.Phase.ENDING, turns.Phase.ENDED):
                return  # already on its way out
            await asyncio.sleep(0.1)
        if self.turns.phase is turns.Phase.LISTENING:
            await self._execute(turns.SayGoodbyeAndHangup("server restart"))
        else:  # a reply that will not end: make it the last one
            await self._handle(turns.AgentEndsCall("hangup", "server restart"))

    async def _cleanup(self) -> None:
        """Close the providers, flush the call log, record the end: all of it, even when the
        handler is cancelled again meanwhile (the peer vanished and the server cancels twice).
        The steps run in a task of their own, which a second cancel does not reach."""
        self._cancel_agent()
        finishing = asyncio.create_task(self._finish(), name="call-cleanup")
        _FINISHING.add(finishing)
        finishing.add_done_callback(_FINISHING.discard)
        await asyncio.shield(finishing)

    async def _finish(self) -> None:
        for stream in (self.stt, self.tts):
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.close()
        with contextlib.suppress(Exception):
            await self.assistant.aclose()  # its log first: the call record sums it up
        with contextlib.suppress(Exception):
            await self.hooks.finished(self.outcome)
        # Logged here, not after run() returns: a caller who hangs up first gets the handler
        # cancelled, and this task is the part that always runs to the end.
        log.info("call ended: %s (%s)", self.outcome, self.stats)

    # --- inbound ---------------------------------------------------------------------------

    async def _read_twilio(self, frames: AsyncIterator[str | bytes]) -> None:
        async for frame in frames:
            try:
                message = codec.parse(frame)
            except codec.CodecError as error:
                self.stats["frames_dropped"] += 1
                log.warning("dropped a malformed frame: %s", error)
                continue
            verdict = self.validator.check(message)
            if not verdict.ok:
                self.stats["frames_dropped"] += 1
                log.warning("dropped a frame: %s", verdict.reason)
                continue
            match message:
                case codec.Media(payload=payload):
                    self.stats["frames_in"] += 1
                    assert self.stt is not None
                    await self.stt.send_audio(payload)
                case codec.Dtmf(digit=digit):
                    await self._handle(turns.DtmfPressed(digit))
                case codec.Mark(name=name):
                    await self._handle(turns.MarkEchoed(name))
                case codec.Stop():
                    break
        self.end("completed" if self.outcome == "abandoned" else self.outcome)

    async def _read_transcripts(self) -> None:
        assert self.stt is not None
        async for event in self.stt.events():
            await self._handle(event)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            await self._watch_providers()
            await self._handle(turns.Tick())

    async def _watch_providers(self) -> None:
        """Report provider faults the adapters recovered from (once per call and kind), and
        replace a synthesizer that took a reply and went silent."""
        for kind, attribute, provider in (
            ("stt", "reconnects", "deepgram_stt"),
            ("tts", "errors", "deepgram_tts"),
        ):
            count = int(getattr(self.stt if kind == "stt" else self.tts, attribute, 0) or 0)
            if count > self._seen_faults[kind]:
                self._seen_faults[kind] = count
                self.telemetry.reconnect(provider, f"{attribute} {count}")
                self.telemetry.provider_error(provider, ConnectionError(f"{provider} dropped"))
        flushed = self._flushed_at
        if (
            flushed is not None
            and self._reply_open
            and self.clock() - max(flushed, self._tts_output_at) > self.config.tts_stall_s
        ):
            await self._replace_stalled_tts()

    async def _replace_stalled_tts(self) -> None:
        log.warning("text-to-speech stalled; reopening it")
        self.telemetry.provider_error(self._tts_source.name, TimeoutError("synthesis stalled"))
        self._flushed_at = None
        stalled, self.tts = self.tts, await self._tts_source.open()
        self.speech.push(Flushed())  # close the reply the stalled stream owed us
        self._trouble_due = True
        if stalled is not None:
            with contextlib.suppress(Exception):
                await stalled.close()

    # --- the turn-taker's commands ---------------------------------------------------------

    async def _handle(self, event: turns.Event) -> None:
        for command in self.turns.handle(event, self.clock()):
            await self._execute(command)
        if self._trouble_due and self.turns.phase is turns.Phase.LISTENING:
            self._trouble_due = False
            await self._say("reprompt", LINES["lost_voice"])
        if self._pin_prompt_due and self.turns.phase is turns.Phase.LISTENING:
            self._pin_prompt_due = False
            assert self._pin_flow is not None
            await self._say("reprompt", self._pin_flow.start().text)

    async def _execute(self, command: turns.Command) -> None:
        match command:
            case turns.StartTurn(text):
                if self._pin_flow is not None:  # a PIN said aloud: refused, never recorded
                    self._spawn(self._pin_step(self._pin_flow.speech()))
                else:
                    self._start_agent(text)
            case turns.UserDigits(text):
                if self._pin_flow is not None:
                    self._spawn(self._pin_step(self._pin_flow.keys(text)))
                else:
                    self._start_agent(text)
            case turns.CancelReply():
                self._cancel_agent()
            case turns.ClearPlayback():
                await self._clear_playback()
            case turns.PauseOutbound():
                self.speech.resume.clear()
            case turns.ResumeOutbound():
                self.speech.resume.set()
            case turns.RecordHeard(text):
                self.stats["barge_ins"] += 1
                self.telemetry.barge_in()
                self._spawn(self.assistant.record_heard(text))
            case turns.Reprompt():
                await self._say("reprompt", LINES["reprompt"])
            case turns.SayGoodbyeAndHangup(reason):
                line = {
                    "caller silent": "silent_goodbye",
                    "max call length": "max_length",
                    "server restart": "restart",
                }
                await self._say("goodbye", LINES[line.get(reason, "goodbye")])
            case turns.RequestAgent():
                await self._say("transfer", LINES["transfer"])
            case turns.Hangup(reason):
                await self.hooks.hangup(reason)
                self.end("max_length" if reason == "max call length" else "completed")
            case turns.CancelTransfer():
                self._spawn(self.hooks.transfer_cancelled())
            case turns.Transfer(reason):
                self.telemetry.breadcrumb("transfer", "transfer to a person", reason=reason)
                instead = await self.hooks.transfer(reason)
                if instead is None:
                    self.telemetry.transfer("dialing")
                    self.end("transferred")
                else:  # a callback instead: the call goes on with the assistant
                    self.telemetry.transfer("callback")
                    self.turns = turns.TurnTaker(self.config.turn)
                    await self._handle(turns.CallStarted())
                    await self._say("reprompt", instead)

    async def _clear_playback(self) -> None:
        await self._send(codec.clear_message(self.stream_sid))
        self.playback.clear(self.clock())
        self.speech.drop()
        self._reply_open = False
        if self.tts is not None:
            await self.tts.clear()

    # --- the assistant ---------------------------------------------------------------------

    async def _greet(self) -> None:
        await self._handle(turns.CallStarted())
        opening, earlier = await self.hooks.earlier_conversation()
        if opening is None:
            await self._say("greeting", await self.assistant.greeting())
            return
        restore = getattr(self.assistant, "restore", None)
        if restore is not None:
            restore(earlier)
        await self._say("greeting", opening)
        self._spawn(self.hooks.line(opening))

    def _start_agent(self, text: str) -> None:
        self._cancel_agent()
        self._spawn(self.hooks.transcript("caller", text))
        self._agent_task = self._spawn(self._agent_turn(text))

    def _cancel_agent(self) -> None:
        if self._agent_task is not None and not self._agent_task.done():
            self._agent_task.cancel()
        self._agent_task = None

    async def _agent_turn(self, text: str) -> None:
        with self.telemetry.turn() as turn:
            await self._agent_reply(text, turn)

    async def _agent_reply(self, text: str, turn: Turn) -> None:
        chunker = SentenceChunker()
        said: list[str] = []
        started = False

        async def speak(piece: str) -> None:
            nonlocal started
            piece = speakable(piece)
            if not piece:
                return
            if not started:
                started = True
                turn.tts(self._tts_source.name)
                await self._begin_reply("answer")
            said.append(piece)
            await self._speak(piece)

        ending: turns.AgentEndsCall | None = None
        try:
            async for event in self.assistant.respond(text):
                if isinstance(event, TextDelta):
                    for piece in chunker.feed(event.text):
                        await speak(piece)
                elif isinstance(event, Transfer):
                    ending = turns.AgentEndsCall("transfer", event.reason)
                elif isinstance(event, Hangup):
                    ending = turns.AgentEndsCall("hangup", event.reason)
                elif isinstance(event, Retract):
                    chunker = SentenceChunker()  # the unspoken fragment is void
            await speak(chunker.flush())
        except asyncio.CancelledError:
            turn.finish("cancelled")
            raise
        except Exception as error:
            log.exception("the assistant failed on a turn")
            self.telemetry.capture(error)
            await speak(LINES["trouble"])
        if said:
            self._spawn(self.hooks.transcript("assistant", " ".join(said)))
            await self._finish_reply()
        else:
            await self._handle(turns.ReplyFinished())
        if ending is None and await self._pin_change_requested():
            self._pin_flow, self._pin_prompt_due = PinChangeFlow(), True
        if ending is not None:
            await self._handle(ending)

    async def _pin_change_requested(self) -> bool:
        try:
            return await self.hooks.pin_change_requested()
        except Exception as error:  # Redis away: no PIN change now, and the reply still ends
            self.telemetry.provider_error("redis", error)
            return False

    async def _pin_step(self, action: PinSay | PinSubmit | object) -> None:
        # Keys ended a caller turn (the turn-taker is thinking): the prompt is its answer.
        if isinstance(action, PinSay):
            await self._say("answer", action.text)
            return
        self._pin_flow = None
        if isinstance(action, PinSubmit):
            line = await self.hooks.change_pin(action.current, action.new)
        else:
            line = getattr(action, "text", "")
        await self._say("answer", line)

    async def _say(self, kind: turns.ReplyKind, text: str) -> None:
        """A line of the shell's own (greeting, reprompt, goodbye, transfer)."""
        await self._begin_reply(kind)
        await self._speak(text)
        self._spawn(self.hooks.transcript("assistant", text))
        if kind != "greeting":  # the assistant records its own greeting
            self._spawn(self.hooks.line(text))
        await self._finish_reply()

    async def _begin_reply(self, kind: turns.ReplyKind) -> None:
        self._awaiting_first_audio = kind == "answer"
        self.heard.start_reply()
        self.speech.resume.set()
        self._reply_open = True
        await self._handle(turns.ReplyStarted(kind))

    async def _speak(self, text: str) -> None:
        assert self.tts is not None
        self.heard.add_text(text)
        await self.tts.speak(text)

    async def _finish_reply(self) -> None:
        assert self.tts is not None
        self._flushed_at = self.clock()
        await self.tts.flush()  # one flush per reply; its Flushed closes the reply's audio

    # --- outbound audio --------------------------------------------------------------------

    async def _read_speech(self) -> None:
        while True:
            stream = self.tts
            assert stream is not None
            async for item in stream.output():
                if stream is not self.tts:
                    break  # replaced after a stall: its late output is void
                self._tts_output_at = self.clock()
                if isinstance(item, Cleared):
                    self.speech.dropping = False
                elif self.speech.dropping:
                    continue  # audio of a reply the caller interrupted
                elif isinstance(item, bytes | Flushed):
                    if isinstance(item, Flushed):
                        self._flushed_at = None  # the synthesizer delivered: not stalled
                    self.speech.push(item)
            if stream is self.tts:
                return  # closed at the end of the call

    async def _send_speech(self) -> None:
        chunk_ms = self.config.chunk_ms
        chunk_bytes = chunk_ms * 8
        mark_bytes = self.config.mark_every_ms * 8
        unmarked = 0
        speech = self.speech
        while True:
            if not speech.items:
                speech.ready.clear()
                await speech.ready.wait()
                continue
            await speech.resume.wait()
            wait = self.playback.wait_s(self.clock(), self.config.max_lead_ms, chunk_ms)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if not speech.items:
                continue  # cleared while we waited
            item = speech.items[0]
            if isinstance(item, Flushed):
                speech.items.popleft()
                if self._reply_open:
                    self._reply_open = False
                    self._flushed_at = None
                    await self._mark(self.heard.take_rest())
                    unmarked = 0
                    await self._handle(turns.ReplyFinished())
                continue
            piece, rest = item[:chunk_bytes], item[chunk_bytes:]
            if rest:
                speech.items[0] = rest
            else:
                speech.items.popleft()
            await self._send(codec.media_message(self.stream_sid, piece))
            self.stats["media_out"] += 1
            if self._awaiting_first_audio:
                self._awaiting_first_audio = False
                self.telemetry.first_audio()
            self.playback.sent(len(piece), self.clock())
            self.heard.add_audio(len(piece))
            unmarked += len(piece)
            if unmarked >= mark_bytes:
                unmarked = 0
                await self._mark(self.heard.take())

    async def _mark(self, text: str) -> None:
        self._mark_seq += 1
        name = f"m{self._mark_seq}"
        await self._send(codec.mark_message(self.stream_sid, name))
        self.playback.marked(name, self.clock())
        await self._handle(turns.AudioSent(name, text))

    # --- helpers ---------------------------------------------------------------------------

    def _spawn(self, awaitable: Awaitable[None]) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await awaitable
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("call task failed")

        assert self._tasks is not None
        return self._tasks.create_task(guarded())
