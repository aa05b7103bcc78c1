"""Observability: Sentry (scrubbed), Prometheus metrics, and the per-call telemetry API.

The call engine uses `CallTelemetry` (see `telemetry`); the app calls `start_observability` from
`before_serving` and registers `blueprint` (GET /metrics).
"""

from __future__ import annotations

import logging

from voice_app.config import Settings
from voice_app.logs import adopt_server_loggers, configure_logging, logging_configured
from voice_app.observability.metrics import METRICS, Metrics, blueprint
from voice_app.observability.sentry import init_sentry, instrument_event_loop, scrub_event
from voice_app.observability.telemetry import (
    CallTelemetry,
    Turn,
    active_turn,
    pin_failure,
    pin_lockout,
)

__all__ = [
    "METRICS",
    "CallTelemetry",
    "Metrics",
    "Turn",
    "active_turn",
    "blueprint",
    "init_sentry",
    "pin_failure",
    "pin_lockout",
    "scrub_event",
    "start_observability",
]


def start_observability(settings: Settings) -> None:
    """Per serving process, inside its event loop: logs, then Sentry.

    `voice-app serve` configures logging itself; under a bare `hypercorn voice_app.app:…`
    (the Procfile) nothing has, so do it here, or production would log plain, unredacted text.
    A process whose root logger already has handlers (a test runner) is left alone.
    """
    if not logging.getLogger().handlers:
        configure_logging(settings.log_format)
    elif logging_configured():
        adopt_server_loggers()  # Hypercorn made its own handlers after we configured
    if init_sentry(settings):
        instrument_event_loop()
