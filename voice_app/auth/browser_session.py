"""The caller page's session: an opaque token in an HTTP-only cookie, state in Redis.

CSRF: SameSite=Lax keeps the cookie off cross-site POSTs and WebSocket handshakes in modern
browsers; on top of that every state-changing request must echo the session's CSRF token in
`X-CSRF-Token` (sign-in, which has no session yet, needs `X-Requested-With` instead: a header a
cross-site form cannot send without a CORS preflight we never grant), and a browser's Origin, when
present, must be PUBLIC_BASE_URL's origin.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

from quart import Response, current_app, has_websocket_context, jsonify, request, websocket
from werkzeug.datastructures import Headers

from voice_app.config import Settings
from voice_app.services import current_services
from voice_app.state.store import Session

log = logging.getLogger(__name__)

COOKIE = "va_session"
CSRF_HEADER = "X-CSRF-Token"
P = ParamSpec("P")
R = TypeVar("R")
SIGN_IN_WINDOW_SECONDS = 600


def _settings() -> Settings:
    settings: Settings = current_app.config["SETTINGS"]
    return settings


def public_origin(settings: Settings) -> str:
    parts = urlsplit(settings.public_base_url)
    return f"{parts.scheme}://{parts.netloc}"


def origin_allowed(headers: Headers, settings: Settings, *, required: bool) -> bool:
    """Browsers send Origin on POSTs and WebSocket handshakes; a foreign one is refused."""
    origin = headers.get("Origin")
    if origin is None:
        return not required
    return hmac.compare_digest(origin.rstrip("/"), public_origin(settings))


def api_error(status: int, message: str, **extra: Any) -> Response:
    response = jsonify(error=message, **extra)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def too_many_attempts(retry_after_seconds: int, message: str) -> Response:
    """429 with the wait both in the body (for the page) and in Retry-After (for clients)."""
    response = api_error(429, message, retry_after=retry_after_seconds)
    response.headers["Retry-After"] = str(retry_after_seconds)
    return response


async def sign_in_throttled(settings: Settings) -> Response | None:
    """The 429 to answer when this client address has tried to sign in too often, else None."""
    client = request.remote_addr or "unknown"
    wait = await current_services().state.count_sign_in(
        client, settings.sign_in_attempts_per_ip, SIGN_IN_WINDOW_SECONDS
    )
    if not wait:
        return None
    log.warning("sign-in attempts from one address over the limit; refused for %d s", wait)
    return too_many_attempts(wait, "Too many sign-in attempts from your network. Try later.")


async def current_browser_session() -> Session | None:
    """The signed-in caller of this request or WebSocket handshake, if any."""
    cookies = websocket.cookies if has_websocket_context() else request.cookies
    return await current_services().state.get_session(cookies.get(COOKIE), kind="browser")


def set_session_cookie(response: Response, session: Session, settings: Settings) -> None:
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=settings.session_ttl_seconds,
        path="/",
        secure=settings.public_base_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )


def clear_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        COOKIE,
        path="/",
        secure=settings.public_base_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )


def csrf_ok(session: Session) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    return bool(sent) and hmac.compare_digest(sent, session.csrf) and origin_allowed(
        request.headers, _settings(), required=False
    )


def signed_in(
    view: Callable[Concatenate[Session, P], Awaitable[R]],
) -> Callable[P, Awaitable[R | Response]]:
    """401 without a browser session; otherwise call the view with the session first."""

    @wraps(view)
    async def checked(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        session = await current_browser_session()
        if session is None:
            return api_error(401, "Please sign in.")
        return await view(session, *args, **kwargs)

    return checked


def csrf_protected(
    view: Callable[Concatenate[Session, P], Awaitable[R]],
) -> Callable[Concatenate[Session, P], Awaitable[R | Response]]:
    """Use under @signed_in on every state-changing request from the page."""

    @wraps(view)
    async def checked(session: Session, *args: P.args, **kwargs: P.kwargs) -> R | Response:
        if not csrf_ok(session):
            return api_error(403, "This request did not come from the caller page.")
        return await view(session, *args, **kwargs)

    return checked


async def json_object() -> dict[str, Any] | None:
    """The request's JSON object, or None for anything else: not UTF-8, nested past the
    parser's limits, a NUL anywhere (PostgreSQL refuses it), or not an object at all."""
    try:
        body = await request.get_json(silent=True)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or _has_nul(body):
        return None
    return body


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False
