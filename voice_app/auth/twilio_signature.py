"""Twilio request signatures: a decorator for webhooks and a check for the Media Streams handshake.

The URL we validate is always rebuilt from PUBLIC_BASE_URL, never from Host or X-Forwarded-*
headers: a client controls those, and a signature over a URL of its choosing proves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from quart import Response, current_app, request
from quart.wrappers import Websocket
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from voice_app.config import Settings

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def signature_valid(
    settings: Settings,
    url: str,
    params: Mapping[str, Any],
    signature: str,
    signature_settings: str = "",
) -> bool:
    """True only when a configured auth token signed exactly this URL and these params."""
    if not settings.twilio_auth_token:
        log.warning("rejecting a Twilio request: TWILIO_AUTH_TOKEN is not set")
        return False
    if not signature:
        return False
    validator = RequestValidator(settings.twilio_auth_token)
    algorithm = get_signature_algorithm(signature_settings)
    return bool(validator.validate(url, params, signature, algorithm=algorithm))


def public_request_url(settings: Settings, path: str, query_string: bytes = b"") -> str:
    """The URL Twilio requested, as configured: PUBLIC_BASE_URL + path + query."""
    query = query_string.decode("latin-1")
    return f"{settings.public_base_url}{path}" + (f"?{query}" if query else "")


def twilio_signed(
    view: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R | Response]]:
    """Answer 403 to any webhook not signed by Twilio, before the view touches any state."""

    @wraps(view)
    async def checked(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        settings: Settings = current_app.config["SETTINGS"]
        url = public_request_url(settings, request.path, request.query_string)
        form = await request.form
        ok = signature_valid(
            settings,
            url,
            form,
            request.headers.get(SIGNATURE_HEADER, ""),
            request.headers.get(SIGNATURE_SETTINGS_HEADER, ""),
        )
        if not ok:
            log.warning("403 for an unsigned or mis-signed Twilio request to %s", request.path)
            return Response("forbidden", status=403, mimetype="text/plain")
        if any("\x00" in value for value in form.values()):
            # Twilio never sends NUL, and PostgreSQL refuses it in text: a clear 400 instead.
            return Response("bad request: NUL in a field", status=400, mimetype="text/plain")
        return await view(*args, **kwargs)

    return checked


def websocket_signature_ok(websocket: Websocket, settings: Settings) -> bool:
    """Check a Media Streams handshake. Twilio signs the wss:// URL it dialled, with no params
    (it strips query strings from <Stream url>), so only the path is taken from the request.
    Call before `websocket.accept()` and return a 403 when it fails."""
    url = f"{settings.public_ws_base_url}{websocket.path}"
    return signature_valid(
        settings,
        url,
        {},
        websocket.headers.get(SIGNATURE_HEADER, ""),
        websocket.headers.get(SIGNATURE_SETTINGS_HEADER, ""),
    )
