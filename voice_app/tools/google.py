"""Google OAuth2 (web flow) and the few Calendar API v3 calls the tools need, over httpx.

Base URLs come from settings, so tests point the same code at a local stand-in. Tokens are kept
encrypted with Fernet; an access token about to expire (or refused with 401) is refreshed once
and the new one saved through the `save` callback.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from cryptography.fernet import Fernet, InvalidToken

from voice_app.config import ConfigError, Settings

log = logging.getLogger(__name__)

SCOPES = ("openid", "email", "https://www.googleapis.com/auth/calendar.events")
EXPIRY_MARGIN_SECONDS = 60


class CalendarAuthError(Exception):
    """The link no longer works (revoked or unreadable tokens): the user must link again."""


class CalendarUnavailable(Exception):
    """Google could not be reached or answered with an error."""


def token_cipher(settings: Settings) -> Fernet:
    """TOKEN_ENCRYPTION_KEY when set (required in production); otherwise a key derived from the
    secret key, so development restarts can still read what they stored."""
    if settings.token_encryption_key:
        try:
            return Fernet(settings.token_encryption_key.encode())
        except ValueError:
            raise ConfigError(
                "TOKEN_ENCRYPTION_KEY",
                "expected a Fernet key (32 url-safe base64 bytes); make one with "
                "`python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`",
            ) from None
    digest = hashlib.sha256(b"voice-app/calendar-tokens:" + settings.effective_secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(digest.digest()))


@dataclass(frozen=True, slots=True)
class GoogleTokens:
    access_token: str
    refresh_token: str | None
    expires_at: float  # unix seconds

    def expiring(self, now: float | None = None) -> bool:
        return (now or time.time()) >= self.expires_at - EXPIRY_MARGIN_SECONDS

    def encrypt(self, cipher: Fernet) -> bytes:
        return cipher.encrypt(json.dumps(asdict(self)).encode())

    @classmethod
    def decrypt(cls, cipher: Fernet, data: bytes) -> GoogleTokens:
        try:
            return cls(**json.loads(cipher.decrypt(bytes(data))))
        except (InvalidToken, ValueError, TypeError) as error:
            raise CalendarAuthError("stored calendar tokens cannot be read") from error

    @classmethod
    def from_response(
        cls, body: dict[str, Any], previous: GoogleTokens | None = None
    ) -> GoogleTokens:
        # A refresh answer usually omits the refresh token: keep the one we had.
        kept = previous.refresh_token if previous else None
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=body.get("refresh_token") or kept,
            expires_at=time.time() + float(body.get("expires_in", 3600)),
        )


# OAuth2 web flow ---------------------------------------------------------------------------


def redirect_uri(settings: Settings) -> str:
    return f"{settings.public_base_url}/oauth/google/callback"


def consent_url(settings: Settings, *, state: str) -> str:
    params = {
        "client_id": settings.google_client_id or "",
        "redirect_uri": redirect_uri(settings),
        "response_type": "code",
        "scope": " ".join(SCOPES),
        "access_type": "offline",  # we need a refresh token: calls happen when nobody is online
        "prompt": "consent",
        "include_granted_scopes": "true",
        "state": state,
    }
    return f"{settings.google_oauth_base_url}/o/oauth2/v2/auth?{urlencode(params)}"


@dataclass(frozen=True, slots=True)
class LinkedAccount:
    tokens: GoogleTokens
    email: str | None
    scopes: str


async def exchange_code(http: httpx.AsyncClient, settings: Settings, code: str) -> LinkedAccount:
    body = await _token_request(
        http,
        settings,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri(settings),
        },
    )
    return LinkedAccount(
        GoogleTokens.from_response(body),
        _email_from_id_token(body.get("id_token")),
        str(body.get("scope", " ".join(SCOPES))),
    )


async def refresh_tokens(
    http: httpx.AsyncClient, settings: Settings, tokens: GoogleTokens
) -> GoogleTokens:
    if not tokens.refresh_token:
        raise CalendarAuthError("no refresh token")
    body = await _token_request(
        http,
        settings,
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
        },
    )
    return GoogleTokens.from_response(body, tokens)


async def _token_request(
    http: httpx.AsyncClient, settings: Settings, form: dict[str, str]
) -> dict[str, Any]:
    form = {
        **form,
        "client_id": settings.google_client_id or "",
        "client_secret": settings.google_client_secret or "",
    }
    try:
        response = await http.post(settings.google_token_url, data=form)
    except httpx.HTTPError as error:
        raise CalendarUnavailable(f"token endpoint unreachable: {type(error).__name__}") from error
    if response.status_code in (400, 401):  # invalid_grant and friends: the grant is dead
        raise CalendarAuthError(f"token endpoint refused: {_error_code(response)}")
    if response.status_code >= 300:
        raise CalendarUnavailable(f"token endpoint answered {response.status_code}")
    body: dict[str, Any] = response.json()
    return body


def _error_code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.status_code))
    except ValueError:
        return str(response.status_code)


def _email_from_id_token(id_token: str | None) -> str | None:
    # Received straight from the token endpoint over TLS, so its signature need not be checked
    # (OpenID Connect Core 3.1.3.7); we only read the e-mail to show which account is linked.
    if not id_token or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    email = claims.get("email")
    return email if isinstance(email, str) else None


# Calendar API v3 ---------------------------------------------------------------------------


def rfc3339(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


class GoogleCalendar:
    """One user's calendar. Create per tool call; cheap."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        settings: Settings,
        calendar_id: str,
        tokens: GoogleTokens,
        save: Callable[[GoogleTokens], Awaitable[None]],
    ) -> None:
        self.http = http
        self.settings = settings
        self.tokens = tokens
        self.save = save
        self.base = f"{settings.google_calendar_base_url}/calendars/{quote(calendar_id, safe='')}"

    async def list_events(
        self, start: datetime, end: datetime, *, limit: int = 50
    ) -> list[dict[str, Any]]:
        response = await self._request(
            "GET",
            "/events",
            params={
                "timeMin": rfc3339(start),
                "timeMax": rfc3339(end),
                "singleEvents": "true",  # expand recurring events into instances
                "orderBy": "startTime",
                "maxResults": str(limit),
            },
        )
        items: list[dict[str, Any]] = self._json(response).get("items", [])
        return [e for e in items if e.get("status") != "cancelled"]

    async def get_event(self, event_id: str) -> dict[str, Any] | None:
        response = await self._request("GET", f"/events/{quote(event_id, safe='')}")
        return None if _gone(response) else self._json(response)

    async def insert_event(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json(await self._request("POST", "/events", json=body))

    async def patch_event(self, event_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        response = await self._request("PATCH", f"/events/{quote(event_id, safe='')}", json=body)
        return None if _gone(response) else self._json(response)

    async def delete_event(self, event_id: str) -> bool:
        response = await self._request("DELETE", f"/events/{quote(event_id, safe='')}")
        if _gone(response):
            return False
        self._json(response)
        return True

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.tokens.expiring():
            await self._refresh()
        for attempt in range(2):
            try:
                response = await self.http.request(
                    method,
                    self.base + path,
                    headers={"Authorization": f"Bearer {self.tokens.access_token}"},
                    **kwargs,
                )
            except httpx.HTTPError as error:
                raise CalendarUnavailable(f"unreachable: {type(error).__name__}") from error
            if response.status_code == 401 and attempt == 0:  # revoked early or clock skew
                await self._refresh()
                continue
            return response
        raise CalendarAuthError("calendar refused a fresh access token")

    async def _refresh(self) -> None:
        self.tokens = await refresh_tokens(self.http, self.settings, self.tokens)
        await self.save(self.tokens)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 300:
            log.warning("google calendar answered %s", response.status_code)
            raise CalendarUnavailable(f"calendar answered {response.status_code}")
        if response.status_code == 204 or not response.content:
            return {}
        body: dict[str, Any] = response.json()
        return body


def _gone(response: httpx.Response) -> bool:
    return response.status_code in (404, 410)
