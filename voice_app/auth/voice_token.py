"""Twilio Voice SDK access tokens for a signed-in caller page."""

from __future__ import annotations

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from voice_app.config import Settings

TOKEN_TTL_SECONDS = 600


class VoiceTokenUnavailable(RuntimeError):
    """Twilio keys are not configured; the message names the missing settings."""


def missing_voice_settings(settings: Settings) -> list[str]:
    needed = {
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
        "TWILIO_API_KEY_SID": settings.twilio_api_key_sid,
        "TWILIO_API_KEY_SECRET": settings.twilio_api_key_secret,
        "TWILIO_TWIML_APP_SID": settings.twilio_twiml_app_sid,
    }
    return [name for name, value in needed.items() if not value]


def voice_access_token(settings: Settings, identity: str, ttl: int = TOKEN_TTL_SECONDS) -> str:
    """A short-lived JWT, signed with the API key (never the auth token), that may only place
    calls through our TwiML App, as `identity`. Incoming calls are not granted."""
    missing = missing_voice_settings(settings)
    if missing:
        raise VoiceTokenUnavailable(f"Twilio calling is not configured: set {', '.join(missing)}")
    token = AccessToken(
        settings.twilio_account_sid,
        settings.twilio_api_key_sid,
        settings.twilio_api_key_secret,
        identity=identity,
        ttl=ttl,
    )
    token.add_grant(VoiceGrant(outgoing_application_sid=settings.twilio_twiml_app_sid))
    jwt: str = token.to_jwt()
    return jwt
