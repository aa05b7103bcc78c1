"""The Quart application factory: `create_app()` wires settings, services and blueprints."""

from __future__ import annotations

import logging

from quart import Quart, Response, jsonify

from voice_app.config import Settings
from voice_app.services import Services, current_services

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    app = Quart(__name__, static_folder=None)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024  # webhooks and API bodies are small
    app.secret_key = settings.effective_secret_key

    @app.before_serving
    async def start_services() -> None:
        app.extensions["services"] = await Services.start(settings)
        for job, engine in settings.engines().items():
            log.info("engine %s: %s", job, engine)

    @app.after_serving
    async def stop_services() -> None:
        services: Services | None = app.extensions.pop("services", None)
        if services is not None:
            await services.close()

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
        ready = all(v == "ok" for v in checks.values())
        return jsonify(
            status="ready" if ready else "not ready", checks=checks
        ), 200 if ready else 503

    return app
