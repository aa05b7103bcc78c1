"""The browser caller page: `/` and its static files under `/web/`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from quart import Blueprint, Response, current_app

from voice_app.config import Settings

STATIC = Path(__file__).parent / "static"

web = Blueprint("web", __name__, static_folder="static", static_url_path="/web")


def content_security_policy(settings: Settings) -> str:
    """Our scripts, styles and sockets come from this origin (and its ws:// form, spelled out
    for browsers whose 'self' does not cover WebSockets); the Voice SDK talks to Twilio over
    HTTPS/WSS and fetches its ring tones from Twilio."""
    ws = urlsplit(settings.public_ws_base_url)
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {ws.scheme}://{ws.netloc} https://*.twilio.com wss://*.twilio.com",
            "media-src 'self' blob: https://*.twilio.com",
            "worker-src 'self' blob:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


@web.get("/")
async def index() -> Response:
    response = await web.send_static_file("index.html")
    response.headers["Content-Security-Policy"] = content_security_policy(
        current_app.config["SETTINGS"]
    )
    response.headers["Cache-Control"] = "no-cache"
    return response


@web.after_request
async def security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Permissions-Policy", "microphone=(self), camera=()")
    return response
