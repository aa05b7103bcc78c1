"""The agent console: its page at `/console/` and its API under `/api/console`.

Agents sign in with e-mail and password (argon2, through the cross-tenant `auth_agent()` lookup)
and get a session of kind "agent" in an HTTP-only, SameSite=Strict cookie `va_console`. State-
changing requests echo the session's CSRF token in `X-CSRF-Token`; sign-in, which has no session
yet, needs `X-Requested-With` and a same-origin Origin instead (as the caller page does).

A caller card is visible only to a signed-in agent of the call's tenant and only while its
context token lives; anything else is a 404, so a token from another tenant reveals nothing.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit
from uuid import UUID

from quart import (
    Blueprint,
    Response,
    current_app,
    has_websocket_context,
    jsonify,
    redirect,
    request,
    send_from_directory,
    websocket,
)

from voice_app.auth.browser_session import (
    api_error,
    json_object,
    origin_allowed,
    sign_in_throttled,
    too_many_attempts,
)
from voice_app.auth.secrets import verify_secret
from voice_app.config import Settings
from voice_app.console.card import caller_card
from voice_app.db import console as console_db
from voice_app.services import Services, current_services
from voice_app.state import keys
from voice_app.state.store import Session

log = logging.getLogger(__name__)

COOKIE = "va_console"
CSRF_HEADER = "X-CSRF-Token"
STATIC = Path(__file__).parent / "static"  # built by agent_console/build.sh (gitignored)
WRONG_LOGIN = "That e-mail and password do not match."
NO_CONTEXT = "No such call (it may have ended or expired)."

console_api = Blueprint("console_api", __name__, url_prefix="/api/console")
console_page = Blueprint("console_page", __name__)


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(payload)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def _lock_key(email: str) -> str:
    # Sign-in failures share the PIN lockout counters, in a namespace no account number can take.
    return "agent:" + email.strip().lower()


async def current_agent() -> Session | None:
    cookies = websocket.cookies if has_websocket_context() else request.cookies
    return await current_services().state.get_session(cookies.get(COOKIE), kind="agent")


def _csrf_ok(session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return (
        bool(sent)
        and hmac.compare_digest(sent, session.csrf)
        and origin_allowed(request.headers, _settings(), required=False)
    )


async def _profile(services: Services, session: Session) -> dict[str, Any] | None:
    tenant_id, agent_id = UUID(session.tenant_id), UUID(session.subject_id)
    async with services.db.tenant(tenant_id) as conn:
        agent = await console_db.get_agent(conn, tenant_id, agent_id)
    if agent is None:
        return None
    settings = services.settings
    pbx_host = settings.pbx_sip_domain.rsplit(":", 1)[0]
    return {
        "agent": {
            "id": str(agent["id"]),
            "name": agent["display_name"],
            "email": agent["email"],
            "extension": agent["extension"],
        },
        "tenant": {"id": session.tenant_id, "name": agent["tenant_name"]},
        "csrf": session.csrf,
        # Defaults for the softphone form; the SIP password is never sent by the server.
        "sip": {
            "domain": pbx_host,
            "extension": agent["extension"] or settings.agent_extension,
            "wss_url": f"wss://{pbx_host}:7443",  # FusionPBX's WSS port
        },
    }


def _set_cookie(response: Response, session: Session, settings: Settings) -> None:
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=settings.session_ttl_seconds,
        path="/",
        secure=settings.public_base_url.startswith("https://"),
        httponly=True,
        samesite="Strict",
    )


@console_api.post("/login")
async def login() -> Response:
    settings = _settings()
    if not request.headers.get("X-Requested-With") or not origin_allowed(
        request.headers, settings, required=False
    ):
        return api_error(403, "Sign in from the agent console.")
    body = await json_object()
    if body is None:
        return api_error(400, "Send JSON with email and password.")
    email, password = str(body.get("email", ""))[:254], str(body.get("password", ""))[:1024]
    if throttled := await sign_in_throttled(settings):
        return throttled
    services = current_services()
    if locked_for := await services.state.is_locked(_lock_key(email)):
        return too_many_attempts(locked_for, "Too many attempts. Try again later.")
    async with services.db.anonymous() as conn:
        found = await console_db.agent_for_login(conn, email)
    # verify_secret checks a dummy hash when the e-mail is unknown: same time, same answer.
    if not verify_secret(found.password_hash if found else None, password) or found is None:
        await services.state.record_pin_failure(_lock_key(email))
        return api_error(401, WRONG_LOGIN)
    await services.state.clear_pin_failures(_lock_key(email))
    await services.state.end_session(request.cookies.get(COOKIE, ""))  # no session fixation
    session = await services.state.create_session(
        kind="agent",
        tenant_id=str(found.tenant_id),
        subject_id=str(found.agent_id),
        ttl_seconds=settings.session_ttl_seconds,
    )
    profile = await _profile(services, session)
    if profile is None:
        await services.state.end_session(session.token)
        return api_error(401, WRONG_LOGIN)
    response = _json(profile)
    _set_cookie(response, session, settings)
    return response


@console_api.post("/logout")
async def logout() -> Response:
    session = await current_agent()
    if session is not None:
        if not _csrf_ok(session):
            return api_error(403, "This request did not come from the agent console.")
        await current_services().state.end_session(session.token)
    response = Response(status=204)
    response.delete_cookie(
        COOKIE,
        path="/",
        secure=_settings().public_base_url.startswith("https://"),
        httponly=True,
        samesite="Strict",
    )
    return response


@console_api.get("/me")
async def me() -> Response:
    session = await current_agent()
    profile = await _profile(current_services(), session) if session else None
    if profile is None:
        return api_error(401, "Please sign in.")
    return _json(profile)


@console_api.get("/context/<token>")
async def context(token: str) -> Response:
    session = await current_agent()
    if session is None:
        return api_error(401, "Please sign in.")
    services = current_services()
    data = await services.state.get_token(keys.console_context(token)) if len(token) < 100 else None
    if data is None or data.get("tenant_id") != session.tenant_id:
        return api_error(404, NO_CONTEXT)
    tenant_id, user_id = UUID(session.tenant_id), UUID(str(data.get("user_id")))
    async with services.db.tenant(tenant_id) as conn:
        caller = await console_db.caller_facts(conn, tenant_id, user_id)
        messages = await console_db.conversation(conn, tenant_id, str(data.get("call_sid")))
        todos = await console_db.open_todos(conn, tenant_id, user_id)
    card = caller_card(token=token, context=data, caller=caller, messages=messages, todos=todos)
    return _json(card)


@console_api.websocket("/events")
async def events() -> Response | None:
    """Caller cards for the agent's tenant, pushed the moment a transfer starts (Redis pub/sub,
    so it works whichever process starts the transfer)."""
    session = await current_agent()
    if session is None or not origin_allowed(websocket.headers, _settings(), required=True):
        return Response("forbidden", status=403)
    await websocket.accept()
    await websocket.send_json({"type": "hello", "tenant": session.tenant_id})
    subscription = cast(
        AsyncGenerator[dict[str, Any], None],
        current_services().state.subscribe(keys.console_channel(session.tenant_id)),
    )
    state = current_services().state
    async with aclosing(subscription) as messages:  # unsubscribes when the console goes away
        async for message in messages:
            if await state.get_session(session.token, kind="agent") is None:
                await websocket.close(4401, "signed out")  # the session ended elsewhere
                break
            await websocket.send_json(message)
    return None


# The page ------------------------------------------------------------------------------------


def content_security_policy(settings: Settings) -> str:
    """Our own scripts and styles only; sockets to this origin and to the PBX the agent sets
    (any wss:, plus ws: when the app itself is served over plain http, as in development)."""
    own = urlsplit(settings.public_ws_base_url)
    sockets = "wss:" + (" ws:" if own.scheme == "ws" else "")
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {own.scheme}://{own.netloc} {sockets}",
            "media-src 'self' blob:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


@console_page.get("/console")
async def console_redirect() -> Response:
    return redirect("/console/", 308)  # type: ignore[return-value]


@console_page.get("/console/")
@console_page.get("/console/<path:name>")
async def console_static(name: str = "index.html") -> Response:
    if not (STATIC / "index.html").is_file():
        return Response(
            "The agent console is not built: run agent_console/build.sh", 503, mimetype="text/plain"
        )
    response = await send_from_directory(STATIC, name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if name.endswith(".html"):
        response.headers["Content-Security-Policy"] = content_security_policy(_settings())
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Permissions-Policy"] = "microphone=(self), camera=()"
    return response
