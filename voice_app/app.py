"""The Quart application factory: `create_app()` wires settings, services and blueprints."""

from __future__ import annotations

import logging

from hypercorn.middleware import ProxyFixMiddleware
from quart import Quart, Response, jsonify

from voice_app.agent.factory import anthropic_client
from voice_app.agent.graph import turn_graph
from voice_app.config import Settings
from voice_app.console.routes import console_api, console_page
from voice_app.observability import blueprint as observability
from voice_app.observability import start_observability
from voice_app.services import Services, current_services
from voice_app.streams.admission import call_admission
from voice_app.streams.routes import bp as streams
from voice_app.tools.calendar_oauth import blueprint as calendar_oauth
from voice_app.tools.session import tools_server
from voice_app.transfer.routes import transfer_webhooks
from voice_app.twiml.routes import twiml
from voice_app.web.api import api as web_api
from voice_app.web.routes import web

log = logging.getLogger(__name__)


def _warm_up(services: Services) -> None:
    """Build what every call shares now, not during the first caller's greeting."""
    tools_server(services)  # ~150 ms: every tool's schema and argument validator
    turn_graph()
    if services.settings.anthropic_api_key:
        anthropic_client(services)


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    app = Quart(__name__, static_folder=None)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024  # webhooks and API bodies are small
    app.secret_key = settings.effective_secret_key
    if settings.trusted_proxy_hops:
        # Behind proxies the client address (sign-in limits, logs) is the one the trusted hops
        # put in X-Forwarded-For. Twilio signatures never use it: they use PUBLIC_BASE_URL.
        app.asgi_app = ProxyFixMiddleware(  # type: ignore[method-assign]
            app.asgi_app, mode="legacy", trusted_hops=settings.trusted_proxy_hops
        )

    @app.before_serving
    async def start_services() -> None:
        start_observability(settings)  # logs and Sentry first, inside the serving loop
        services = app.extensions["services"] = await Services.start(settings)
        for job, engine in settings.engines().items():
            log.info("engine %s: %s", job, engine)
        _warm_up(services)

    @app.after_serving
    async def stop_services() -> None:
        services: Services | None = app.extensions.pop("services", None)
        if services is not None:
            await services.close()

    app.register_blueprint(twiml)
    app.register_blueprint(streams)
    app.register_blueprint(calendar_oauth)
    app.register_blueprint(web_api)
    app.register_blueprint(web)
    app.register_blueprint(transfer_webhooks)
    app.register_blueprint(console_api)
    app.register_blueprint(console_page)
    app.register_blueprint(observability)

    @app.get("/healthz")
    async def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    async def readyz() -> tuple[Response, int]:
        services = current_services()
        checks: dict[str, str] = {}
        for name, probe in (("database", services.db.ping), ("redis", services.state.ping)):
            try:
                checks[name] = "ok" if await probe() else "failing"
            except Exception as error:  # readiness reports, it does not raise
                checks[name] = f"failing: {type(error).__name__}"
        if services.extras.get("draining"):
            checks["process"] = "draining"  # shutting down: send new calls elsewhere
        elif call_admission(services).full:
            checks["process"] = "full"  # at MAX_LIVE_CALLS: send new calls elsewhere
        ready = all(v == "ok" for v in checks.values())
        return jsonify(
            status="ready" if ready else "not ready", checks=checks
        ), 200 if ready else 503

    return app
