"""One Media Stream, played from Twilio's side in real time.

Two tasks share the socket: the ticker sends a 20 ms inbound frame on a drift-free schedule
(frame n at t0 + n × 20 ms) and lets the playback model catch up; the reader applies the app's
media, marks and clears to that model. Both echo marks the moment the model releases them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from voice_app.simulator.caller import Caller
from voice_app.simulator.media import Playback
from voice_app.simulator.twiml_flow import SIGNATURE_HEADER, StreamTarget, rebase, sign
from voice_app.simulator.wire import SILENCE_B64, Wire
from voice_app.streams.audio import FRAME_MS
from voice_app.streams.codec import Clear, CodecError, OutboundMark, OutboundMedia, parse_outbound

log = logging.getLogger(__name__)

FRAME_S = FRAME_MS / 1000
MAX_ERRORS_KEPT = 20
StreamEnd = Literal["closed_by_app", "caller_hangup", "timeout", "error"]


@dataclass
class StreamContext:
    """What a stream needs from its call, and what it reports back to it."""

    connect_base: str
    auth_token: str
    call_sid: str
    account_sid: str
    caller: Caller
    note: Callable[[str, str], None]  # (kind, text) → the call's timeline
    hangup_at: float | None  # loop time the caller hangs up (--hangup-after), if any
    deadline: float  # loop time the call gives up (--max-duration)
    record: bool = False
    playback: Playback | None = None  # created when the first stream starts; spans reconnects
    protocol_errors: list[str] = field(default_factory=list)
    protocol_error_count: int = 0
    max_frame_lag_s: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamResult:
    end: StreamEnd
    detail: str = ""


async def run_stream(target: StreamTarget, ctx: StreamContext, stream_sid: str) -> StreamResult:
    # Twilio signs the URL exactly as given in <Stream url>, with no params.
    headers = {SIGNATURE_HEADER: sign(ctx.auth_token, target.url, {})}
    try:
        ws = await connect(
            rebase(target.url, ctx.connect_base),
            additional_headers=headers,
            user_agent_header="Twilio.TmeWs/1.0",
            compression=None,
            ping_interval=None,
            open_timeout=10,
            max_size=2**20,
        )
    except InvalidStatus as error:
        status = error.response.status_code
        return StreamResult("error", f"stream handshake rejected: HTTP {status}")
    except (OSError, TimeoutError, WebSocketException) as error:
        return StreamResult("error", f"stream connect failed: {error!r}")
    async with ws:
        return await _Stream(ws, ctx, Wire(stream_sid, ctx.call_sid, ctx.account_sid)).run(target)


class _Stream:
    def __init__(self, ws: ClientConnection, ctx: StreamContext, wire: Wire) -> None:
        self.ws, self.ctx, self.wire = ws, ctx, wire
        self.loop = asyncio.get_running_loop()
        self.playback: Playback

    async def run(self, target: StreamTarget) -> StreamResult:
        ctx = self.ctx
        await self.ws.send(self.wire.connected())
        await self.ws.send(self.wire.start(target.parameters))
        t0 = self.loop.time()
        if ctx.playback is None:
            ctx.playback = Playback(t0, record=ctx.record)
        self.playback = ctx.playback
        ctx.caller.begin(t0, self.playback)
        ctx.note("stream", f"stream {self.wire.stream_sid} started")

        reader = asyncio.create_task(self._read())
        ticker = asyncio.create_task(self._tick(t0))
        try:
            done, _ = await asyncio.wait({reader, ticker}, return_when=asyncio.FIRST_COMPLETED)
            if ticker in done:
                result = ticker.result()
                if result.end != "closed_by_app":
                    await self._hang_up()
            else:
                result = reader.result()
        finally:
            for task in (reader, ticker):
                task.cancel()
            await asyncio.gather(reader, ticker, return_exceptions=True)
        now = self.loop.time()
        self.playback.advance(now)
        self.playback.discard()  # whatever was still queued is never heard
        return result

    async def _hang_up(self) -> None:
        try:
            await self.ws.send(self.wire.stop())
            await self.ws.close()
        except ConnectionClosed:
            pass

    async def _tick(self, t0: float) -> StreamResult:
        ctx, ws, wire, playback = self.ctx, self.ws, self.wire, self.playback
        n = 0
        try:
            while True:
                delay = t0 + n * FRAME_S - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif -delay > ctx.max_frame_lag_s:
                    ctx.max_frame_lag_s = -delay  # the simulator itself is falling behind
                n += 1
                now = self.loop.time()
                for name in playback.advance(now):
                    await ws.send(wire.mark(name))
                if ctx.hangup_at is not None and now >= ctx.hangup_at:
                    return StreamResult("caller_hangup", "--hangup-after reached")
                if now >= ctx.deadline:
                    return StreamResult("timeout", "--max-duration reached")
                tick = ctx.caller.tick(now, playback)
                if tick.finished:
                    return StreamResult("caller_hangup", "script done")
                if tick.digit:
                    await ws.send(wire.dtmf(tick.digit))
                await ws.send(wire.media_b64(tick.payload_b64 or SILENCE_B64))
        except ConnectionClosed:
            return StreamResult("closed_by_app")

    async def _read(self) -> StreamResult:
        ctx, ws, wire, playback = self.ctx, self.ws, self.wire, self.playback
        try:
            async for frame in ws:
                now = self.loop.time()
                if isinstance(frame, bytes):
                    self._error("binary frame (Twilio ignores these: warning 31950)")
                    continue
                try:
                    msg = parse_outbound(frame)
                except CodecError as error:
                    self._error(f"{error} (Twilio error 31924)")
                    continue
                if msg.stream_sid != wire.stream_sid:
                    self._error(f"message for stream {msg.stream_sid!r:.40}, not this one")
                    continue
                if isinstance(msg, OutboundMedia):
                    echoes = playback.push_audio(msg.payload, now)
                elif isinstance(msg, OutboundMark):
                    echoes = playback.push_mark(msg.name, now)
                else:
                    assert isinstance(msg, Clear)
                    echoes = playback.clear(now)
                    ctx.note("clear", f"app cleared playback ({len(echoes)} marks echoed)")
                for name in echoes:
                    await ws.send(wire.mark(name))
        except ConnectionClosed:
            pass
        return StreamResult("closed_by_app")

    def _error(self, text: str) -> None:
        self.ctx.protocol_error_count += 1
        if len(self.ctx.protocol_errors) < MAX_ERRORS_KEPT:  # the first few tell the story
            self.ctx.protocol_errors.append(text)
            log.warning("stream %s: %s", self.wire.stream_sid, text)
