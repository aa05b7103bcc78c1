"""Linking a Google Calendar from the web page: the OAuth2 web flow as a Quart blueprint.

GET /oauth/google/start     signed-in browser (the `va_session` cookie) → Google's consent page
GET /oauth/google/callback  Google → exchange the code → tokens stored encrypted → back to "/"

The `state` parameter is an HMAC-signed, ten-minute note of who started the flow, and the
callback only accepts it from that same signed-in browser, so a code cannot be planted into
someone else's account. Outcomes land on "/?calendar=linked|denied|failed".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from uuid import UUID

from quart import Blueprint, Response, redirect, request
from werkzeug.wrappers.response import Response as WerkzeugResponse

from voice_app.auth.browser_session import current_browser_session
from voice_app.auth.secrets import new_token
from voice_app.db import calendar as calendar_db
from voice_app.services import current_services
from voice_app.tools.google import (
    CalendarAuthError,
    CalendarUnavailable,
    consent_url,
    exchange_code,
    token_cipher,
)
from voice_app.tools.session import tool_services

log = logging.getLogger(__name__)

blueprint = Blueprint("calendar_oauth", __name__)

STATE_TTL_SECONDS = 600


def sign_state(secret: str, tenant_id: str, user_id: str, *, now: float | None = None) -> str:
    payload = f"{tenant_id}:{user_id}:{int(now or time.time())}:{new_token(9)}"
    text = f"{payload}:{_mac(secret, payload)}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def read_state(secret: str, state: str, *, now: float | None = None) -> tuple[str, str] | None:
    """(tenant_id, user_id) from a state we signed in the last ten minutes, else None."""
    try:
        text = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4)).decode()
        tenant_id, user_id, issued, nonce, mac = text.split(":")
        age = (now or time.time()) - int(issued)
    except ValueError:  # also covers bad base64 and bad UTF-8
        return None
    payload = f"{tenant_id}:{user_id}:{issued}:{nonce}"
    if not hmac.compare_digest(mac, _mac(secret, payload)) or not -60 <= age <= STATE_TTL_SECONDS:
        return None
    return tenant_id, user_id


def _mac(secret: str, payload: str) -> str:
    key = hashlib.sha256(b"voice-app/oauth-state:" + secret.encode()).digest()
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


@blueprint.get("/oauth/google/start")
async def start() -> Response | WerkzeugResponse | tuple[str, int]:
    services = current_services()
    settings = services.settings
    if not settings.google_client_id:
        return "Calendar linking is not set up on this server.", 503
    session = await current_browser_session()
    if session is None:
        return "Please sign in first, then link your calendar.", 401
    state = sign_state(settings.effective_secret_key, session.tenant_id, session.subject_id)
    return redirect(consent_url(settings, state=state))


@blueprint.get("/oauth/google/callback")
async def callback() -> Response | WerkzeugResponse | tuple[str, int]:
    services = current_services()
    settings = services.settings
    session = await current_browser_session()
    if session is None:
        return "Please sign in first, then link your calendar again.", 401
    who = read_state(settings.effective_secret_key, request.args.get("state", ""))
    if who != (session.tenant_id, session.subject_id):
        return "This link has expired or was started by someone else. Please start again.", 400
    if request.args.get("error") or not request.args.get("code"):
        return redirect("/?calendar=denied")
    http = tool_services(services).http
    try:
        linked = await exchange_code(http, settings, request.args["code"])
    except (CalendarAuthError, CalendarUnavailable) as error:
        log.warning("google code exchange failed: %s", error)
        return redirect("/?calendar=failed")
    if not linked.tokens.refresh_token:
        log.warning("google sent no refresh token; calendar tools will stop after an hour")
    tenant_id, user_id = UUID(session.tenant_id), UUID(session.subject_id)
    async with services.db.tenant(tenant_id) as conn:
        await calendar_db.save_account(
            conn,
            tenant_id,
            user_id,
            account_email=linked.email,
            scopes=linked.scopes,
            token_ciphertext=linked.tokens.encrypt(token_cipher(settings)),
        )
    return redirect("/?calendar=linked")
