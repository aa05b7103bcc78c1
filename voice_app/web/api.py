"""The caller page's JSON API and its transcript WebSocket.

Sign-in shares the PIN policy and lockout with the phone; everything after it needs the session
cookie, and every POST after it the session's CSRF token.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from quart import Blueprint, Response, current_app, jsonify, request, websocket

from voice_app.auth.browser_session import (
    COOKIE,
    api_error,
    clear_session_cookie,
    csrf_ok,
    csrf_protected,
    current_browser_session,
    json_object,
    origin_allowed,
    set_session_cookie,
    sign_in_throttled,
    signed_in,
    too_many_attempts,
)
from voice_app.auth.identity import client_identity
from voice_app.auth.pin_signin import PinResult, clean_account_number, sign_in_with_pin
from voice_app.auth.voice_token import (
    TOKEN_TTL_SECONDS,
    VoiceTokenUnavailable,
    missing_voice_settings,
    voice_access_token,
)
from voice_app.config import Settings
from voice_app.db import calls, users
from voice_app.services import Services, current_services
from voice_app.state import keys
from voice_app.state.store import Session
from voice_app.twiml.binding import bind_call
from voice_app.twiml.builders import EdgeUrls

log = logging.getLogger(__name__)

api = Blueprint("web_api", __name__, url_prefix="/api")

WRONG_PIN = "That account number and PIN do not match."


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


async def _profile(services: Services, session: Session) -> dict[str, Any] | None:
    """What the page shows and needs, or None if the user no longer exists."""
    tenant_id, user_id = UUID(session.tenant_id), UUID(session.subject_id)
    async with services.db.tenant(tenant_id) as conn:
        user = await users.get_user(conn, tenant_id, user_id)
        tenant = await users.tenant_name(conn, tenant_id)
    if user is None:
        return None
    return {
        "user": user.public(),
        "tenant": {"id": str(tenant_id), "name": tenant or ""},
        "csrf": session.csrf,
        "features": {
            "twilio": not missing_voice_settings(services.settings),
            "local_mode": services.settings.local_mode,
        },
    }


@api.post("/auth/pin")
async def sign_in() -> Response:
    settings = _settings()
    # No session yet, so no CSRF token: a custom header (forces a CORS preflight we never
    # grant) and a same-origin Origin stand in for it.
    if not request.headers.get("X-Requested-With") or not origin_allowed(
        request.headers, settings, required=False
    ):
        return api_error(403, "Sign in from the caller page.")
    body = await json_object()
    if body is None:
        return api_error(400, "Send JSON with account_number and pin.")
    if throttled := await sign_in_throttled(settings):
        return throttled
    services = current_services()
    attempt = await sign_in_with_pin(
        services.db,
        services.state,
        clean_account_number(str(body.get("account_number", ""))),
        str(body.get("pin", "")),
        channel="browser",
        context={"ip": request.remote_addr or ""},
    )
    if attempt.result is PinResult.LOCKED:
        minutes = max(1, -(-attempt.retry_after_seconds // 60))
        return too_many_attempts(
            attempt.retry_after_seconds,
            f"Too many attempts. For your security, try again in about {minutes} minutes.",
        )
    if attempt.result is not PinResult.OK or attempt.account is None:
        return api_error(401, WRONG_PIN)

    # A fresh session on every sign-in: a token planted before sign-in is worth nothing after.
    await services.state.end_session(request.cookies.get(COOKIE, ""))
    session = await services.state.create_session(
        kind="browser",
        tenant_id=str(attempt.account.tenant_id),
        subject_id=str(attempt.account.user_id),
        ttl_seconds=settings.session_ttl_seconds,
    )
    profile = await _profile(services, session)
    if profile is None:  # deleted between the lookup and now
        await services.state.end_session(session.token)
        return api_error(401, WRONG_PIN)
    response = _json(profile)
    set_session_cookie(response, session, settings)
    return response


@api.post("/auth/logout")
async def logout() -> Response:
    session = await current_browser_session()
    if session is not None:
        if not csrf_ok(session):
            return api_error(403, "This request did not come from the caller page.")
        await current_services().state.end_session(session.token)
    response = Response(status=204)
    clear_session_cookie(response, _settings())
    return response


@api.get("/me")
@signed_in
async def me(session: Session) -> Response:
    profile = await _profile(current_services(), session)
    if profile is None:
        await current_services().state.end_session(session.token)
        return api_error(401, "Please sign in.")
    return _json(profile)


@api.get("/voice/token")
@signed_in
async def voice_token(session: Session) -> Response:
    identity = client_identity(UUID(session.tenant_id), UUID(session.subject_id))
    try:
        token = voice_access_token(_settings(), identity)
    except VoiceTokenUnavailable as missing:
        return api_error(503, str(missing))
    return _json({"token": token, "identity": identity, "expires_in": TOKEN_TTL_SECONDS})


@api.get("/admin/security-events")
@signed_in
async def security_events(session: Session) -> Response:
    services = current_services()
    tenant_id = UUID(session.tenant_id)
    limit = min(max(request.args.get("limit", 50, type=int) or 50, 1), 200)
    async with services.db.tenant(tenant_id) as conn:
        user = await users.get_user(conn, tenant_id, UUID(session.subject_id))
        if user is None or user.role != "admin":
            return api_error(403, "Only a tenant admin can see security events.")
        events = await calls.list_security_events(conn, tenant_id, limit=limit)
    return _json(
        {
            "events": [
                {
                    "kind": e["kind"],
                    "user_id": str(e["user_id"]) if e["user_id"] else None,
                    "detail": _json_object(e["detail"]),
                    "created_at": e["created_at"].isoformat(),
                }
                for e in events
            ]
        }
    )


def _json_object(value: Any) -> Any:
    # add_security_event json.dumps()es into a pool whose jsonb codec encodes again, so rows
    # can hold a JSON string of the object; accept both until that is fixed at the source.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@api.post("/local/call")
@signed_in
@csrf_protected
async def local_call(session: Session) -> Response:
    """Start a local-mode call: the page streams its microphone to /streams/local itself."""
    services = current_services()
    settings = services.settings
    if not settings.local_mode:
        return api_error(404, "Local mode is off on this server (set LOCAL_MODE=true).")
    tenant_id, user_id = UUID(session.tenant_id), UUID(session.subject_id)
    call_sid = "LC" + secrets.token_hex(16)
    async with services.db.anonymous() as conn:
        await calls.record_call_event(
            conn, call_sid=call_sid, status="in-progress", sequence=0, at=datetime.now(UTC),
            from_number=f"client:{client_identity(tenant_id, user_id)}", channel="local",
        )
    call = await bind_call(
        services, call_sid=call_sid, tenant_id=tenant_id, user_id=user_id, channel="local"
    )
    urls = EdgeUrls(settings.public_base_url, settings.public_ws_base_url)
    return _json(
        {"call_sid": call_sid, "session_token": call.token, "stream_url": urls.local_stream}
    )


@api.websocket("/calls/transcript")
async def transcript() -> Response | None:
    """Live transcript lines of one of the signed-in user's calls, from Redis pub/sub, so it
    works whichever process holds the call."""
    services = current_services()
    session = await current_browser_session()
    call_sid = websocket.args.get("call_sid", "")
    if session is None or not origin_allowed(websocket.headers, _settings(), required=True):
        return Response("forbidden", status=403)
    state = await services.state.get_call_state(call_sid) if call_sid else {}
    if state.get("tenant_id") != session.tenant_id or state.get("user_id") != session.subject_id:
        return Response("forbidden", status=403)
    await websocket.accept()
    subscription = cast(
        AsyncGenerator[dict[str, Any], None],
        services.state.subscribe(keys.transcript_channel(call_sid)),
    )
    async with aclosing(subscription) as lines:  # unsubscribes when the page goes away
        async for line in lines:
            speaker = "assistant" if line.get("speaker") == "assistant" else "caller"
            text, final = str(line.get("text", "")), bool(line.get("final"))
            await websocket.send_json({"speaker": speaker, "text": text, "final": final})
    return None
