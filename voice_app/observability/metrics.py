"""Prometheus metrics for calls, turns, providers and PIN sign-in, served at `GET /metrics`.

The metrics live in a registry of their own (not prometheus_client's global one), so tests can
build a fresh `Metrics()` and nothing a library registers globally leaks into the scrape.

One registry per process, so scrape per process: run one Hypercorn worker per process
(WEB_CONCURRENCY=1, the default) and scale out with processes, each its own scrape target, as the
design scales anyway. Several workers behind one socket would answer a scrape from a random
worker; prometheus multiprocess mode could merge them, but it needs a directory wiped at every
start, leaves a dead worker's files behind (Hypercorn has no child-exit hook to clean them), and
turns every gauge into a merge policy: more moving parts than running one worker per process.
"""

from __future__ import annotations

import hmac
import re

import sentry_sdk
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from quart import Blueprint, Response, current_app, request

from voice_app.config import Settings
from voice_app.logs import call_sid_var

# Caller's last word → first assistant audio: the budget is ~0.5-1.5 s, so resolve that range.
TURN_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
AGENT_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0)
TTFB_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)

# Provider labels the engine uses; anything else is still counted, under its own name.
PROVIDERS = (
    "deepgram_stt",
    "deepgram_tts",
    "anthropic",
    "offline_stt",
    "offline_tts",
    "offline_agent",
)


class Metrics:
    """Every metric of one process, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_calls = Gauge("voice_active_calls", "Calls in progress", registry=r)
        self.calls = Counter("voice_calls", "Calls ended, by outcome", ["outcome"], registry=r)
        self.calls_refused = Counter(
            "voice_calls_refused", "Calls turned away, by reason", ["reason"], registry=r
        )
        self.turns = Counter("voice_turns", "Caller turns, by outcome", ["outcome"], registry=r)
        self.turn_latency = Histogram(
            "voice_turn_latency_seconds",
            "Caller's last word to the first assistant audio sent",
            buckets=TURN_LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_processing = Histogram(
            "voice_agent_processing_seconds",
            "A turn reaching the assistant to its reply stream ending (completed turns)",
            buckets=AGENT_BUCKETS,
            registry=r,
        )
        self.provider_ttfb = Histogram(
            "voice_provider_ttfb_seconds",
            "Request to first byte (token, audio, final transcript) per provider",
            ["provider"],
            buckets=TTFB_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter("voice_barge_ins", "Caller spoke over the assistant", registry=r)
        self.transfers = Counter(
            "voice_transfers", "Hand-offs to a person, by outcome", ["outcome"], registry=r
        )
        self.provider_errors = Counter(
            "voice_provider_errors", "Provider failures", ["provider"], registry=r
        )
        self.provider_reconnects = Counter(
            "voice_provider_reconnects", "Provider stream reconnects", ["provider"], registry=r
        )
        self.pin_failures = Counter(
            "voice_pin_failures", "Wrong PINs entered", ["channel"], registry=r
        )
        self.pin_lockouts = Counter(
            "voice_pin_lockouts", "Accounts locked after PIN failures", ["channel"], registry=r
        )
        self.calls_refused.labels("busy")
        for provider in PROVIDERS:  # show zeroes before the first event, so rates exist
            self.provider_errors.labels(provider)
            self.provider_reconnects.labels(provider)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


METRICS = Metrics()  # this process's metrics; `app.extensions["metrics"]` may replace it in tests


def current_metrics() -> Metrics:
    metrics: Metrics = current_app.extensions.get("metrics", METRICS)
    return metrics


blueprint = Blueprint("observability", __name__)


@blueprint.get("/metrics")
async def metrics_endpoint() -> Response:
    settings: Settings = current_app.config["SETTINGS"]
    token = settings.metrics_token
    if token is None and settings.environment == "production":
        return Response("not found", status=404)  # no token configured: not served at all
    if token is not None:
        offered = request.headers.get("Authorization", "")
        if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            return Response(
                "metrics need a bearer token",
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    return Response(current_metrics().render(), content_type=CONTENT_TYPE_LATEST)


_CALL_SID = re.compile(r"[A-Za-z0-9]{1,64}")


@blueprint.before_app_request
async def bind_call_sid() -> None:
    """Twilio webhooks name their call in `CallSid`: bind it so their log lines and Sentry
    events carry it, like every line of the call's stream does."""
    if "X-Twilio-Signature" not in request.headers:
        return  # only Twilio's requests; their body is form data the view parses anyway
    sid = request.args.get("CallSid")
    if sid is None and request.mimetype == "application/x-www-form-urlencoded":
        sid = (await request.form).get("CallSid")
    if sid and _CALL_SID.fullmatch(sid):
        call_sid_var.set(sid)
        sentry_sdk.set_tag("call_sid", sid)
