"""The Media Streams endpoints: `/streams/twilio` (Twilio-signed) and `/streams/local` (the
browser page's microphone in development, authenticated by the signed-in session).

Both speak the same message format and end in the same place: `run_call`, which checks the
stream's session token against its `callSid`, opens the providers and runs a `CallSession`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID

from quart import Blueprint, Response, websocket

from voice_app.agent.base import CallContext
from voice_app.agent.factory import build_assistant
from voice_app.auth.browser_session import origin_allowed
from voice_app.auth.twilio_signature import websocket_signature_ok
from voice_app.db import calls, users
from voice_app.logs import call_sid_var
from voice_app.observability.metrics import current_metrics
from voice_app.observability.telemetry import CallTelemetry
from voice_app.services import Services, current_services
from voice_app.state.store import Session
from voice_app.streams import codec
from voice_app.streams.admission import call_admission
from voice_app.streams.hooks import LiveCallHooks
from voice_app.streams.session import CallSession, EngineConfig
from voice_app.streams.turns import TurnConfig
from voice_app.tools.session import open_tools_session
from voice_app.twiml.builders import reconnect_count

log = logging.getLogger(__name__)
bp = Blueprint("streams", __name__)

BROWSER_COOKIE = "va_session"
START_TIMEOUT_S = 10.0  # Twilio sends `start` right after `connected`
CHANNELS = ("pstn", "browser", "local", "simulator")


@bp.websocket("/streams/twilio")
async def twilio_stream() -> Response | None:
    services = current_services()
    # Checked before accept(): a failed check is a plain HTTP 403 on the handshake.
    if not websocket_signature_ok(websocket, services.settings):
        log.warning("403 for an unsigned Media Streams handshake")
        return Response("forbidden", status=403)
    if services.extras.get("draining"):
        return Response("shutting down", status=503)
    await websocket.accept()
    await run_call(services, _frames())
    return None


@bp.websocket("/streams/local")
async def local_stream() -> Response | None:
    services = current_services()
    if not services.settings.local_mode:
        return Response("local mode is off (set LOCAL_MODE=true)", status=404)
    if not origin_allowed(websocket.headers, services.settings, required=True):
        return Response("forbidden", status=403)  # cross-site WebSocket hijacking
    cookie = websocket.cookies.get(BROWSER_COOKIE)
    browser = await services.state.get_session(cookie, kind="browser")
    if browser is None:
        return Response("sign in first", status=401)
    await websocket.accept()
    await run_call(services, _frames(), browser=browser)
    return None


async def _frames() -> AsyncIterator[str | bytes]:
    while True:
        yield await websocket.receive()


async def _send(text: str) -> None:
    await websocket.send(text)


async def run_call(
    services: Services, frames: AsyncIterator[str | bytes], *, browser: Session | None = None
) -> None:
    """Wait for `start`, authenticate the stream, then run the call until it ends."""
    start = await _await_start(frames)
    if start is None:
        await websocket.close(1008, "expected a start message")
        return
    call_sid_var.set(start.call_sid)
    session = await _stream_session(services, start, browser)
    if session is None:
        log.warning("stream refused: unknown session token or call SID mismatch")
        await websocket.close(1008, "unknown session")
        return
    admission = call_admission(services)
    if not admission.try_take(keeps_place=admission.full and await _reconnecting(services, start)):
        log.warning("stream refused: this process carries MAX_LIVE_CALLS=%d calls", admission.limit)
        current_metrics().calls_refused.labels("busy").inc()
        # <Connect action> reads this and plays the busy line instead of reconnecting.
        await services.state.set_call_state(start.call_sid, phase="busy")
        await websocket.close(1013, "busy")  # 1013: try again later
        return
    try:
        await _run_admitted(services, frames, start, session, browser)
    finally:
        admission.release()


async def _reconnecting(services: Services, start: codec.Start) -> bool:
    """Is this call already under way (its stream dropped and came back)?"""
    state = await services.state.get_call_state(start.call_sid)
    return reconnect_count(state) > 0


async def _run_admitted(
    services: Services,
    frames: AsyncIterator[str | bytes],
    start: codec.Start,
    session: Session,
    browser: Session | None,
) -> None:
    context = await _call_context(services, session)
    stt, tts = services.extras["speech"]
    telemetry = CallTelemetry(start.call_sid, context.tenant_id, context.channel, context.user_id)
    async with open_tools_session(services, context) as tools:
        call = CallSession(
            context=context,
            stream_sid=start.stream_sid,
            send=_send,
            stt=stt,
            tts=tts,
            assistant=build_assistant(services, context, tools),
            hooks=LiveCallHooks(services, context),
            config=engine_config(services),
            telemetry=telemetry,
        )
        live_calls: set[CallSession] = services.extras.setdefault("live_calls", set())
        live_calls.add(call)
        try:
            with telemetry:
                await call.run(frames, start)
        finally:
            live_calls.discard(call)
            if browser is not None:  # no Twilio status callbacks for a local call
                await _record_local_end(services, call)
    # Closing the socket is what lets Twilio go on to <Connect action> (goodbye or transfer).
    await websocket.close(1000)


async def _record_local_end(services: Services, call: CallSession) -> None:
    sid = call.context.call_sid
    async with services.db.anonymous() as conn:
        await calls.record_call_event(
            conn,
            call_sid=sid,
            status="completed",
            sequence=1_000_000,
            at=datetime.now(UTC),
            channel="local",
        )
    await services.state.set_call_state(sid, stream="ended")


async def _await_start(frames: AsyncIterator[str | bytes]) -> codec.Start | None:
    """Skip `connected`; anything else before `start` is a broken peer."""

    async def first_start() -> codec.Start | None:
        async for frame in frames:
            try:
                message = codec.parse(frame)
            except codec.CodecError as error:
                log.warning("dropped a malformed frame before start: %s", error)
                continue
            if isinstance(message, codec.Start):
                return message
            if not isinstance(message, codec.Connected):
                return None
        return None

    try:
        return await asyncio.wait_for(first_start(), START_TIMEOUT_S)
    except TimeoutError:
        return None


async def _stream_session(
    services: Services, start: codec.Start, browser: Session | None
) -> Session | None:
    token = start.custom_parameters.get("session", "")
    session = await services.state.get_session(token, kind="call")
    if session is None or session.call_sid != start.call_sid:
        return None
    if browser is not None and (
        browser.tenant_id != session.tenant_id or browser.subject_id != session.subject_id
    ):
        return None  # a local stream may only carry the signed-in user's own call
    return session


async def _call_context(services: Services, session: Session) -> CallContext:
    tenant_id, user_id = UUID(session.tenant_id), UUID(session.subject_id)
    async with services.db.tenant(tenant_id) as conn:
        user = await users.get_user(conn, tenant_id, user_id)
    channel = session.channel if session.channel in CHANNELS else "pstn"
    return CallContext(
        tenant_id=session.tenant_id,
        user_id=session.subject_id,
        call_sid=session.call_sid,
        display_name=user.display_name if user else "",
        timezone=user.timezone if user else "UTC",
        channel=channel,  # type: ignore[arg-type]
        caller_number=(user.phone_e164 or "") if user else "",
    )


def engine_config(services: Services) -> EngineConfig:
    settings = services.settings
    return EngineConfig(
        turn=TurnConfig(
            idle_reprompt_s=settings.idle_reprompt_seconds,
            max_call_s=float(settings.max_call_seconds),
        )
    )
