"""The one observability API the call engine calls: each call feeds Sentry and Prometheus at once.

    with CallTelemetry(call_sid, tenant_id, channel, user_id) as telemetry:
        ...
        # per caller turn, in the task that runs the assistant:
        with telemetry.turn() as turn:
            turn.stt("deepgram_stt", latency_s=0.18)   # caller's last word → final transcript
            with turn.model_step("anthropic") as step:   # one LLM call
                step.first_byte()                        # its first token
            with turn.tool("add_todo"):                  # one tool call
                ...
            turn.tts("deepgram_tts")                     # when the reply's first sentence goes out
        # from the task that sends audio, at the first frame of an answer:
        telemetry.first_audio()
        telemetry.end("completed")

Sentry: one transaction per call (op "call", "voice.call") and one per turn (op "turn",
"voice.turn") in the same trace. Turns are transactions rather than spans of the call because a
call can last an hour: one giant transaction would hit the SDK's span cap, arrive only at hang-up
(or never, if the process dies), and hide turn latency inside it; a turn transaction arrives when
the turn ends and gives turn-duration percentiles directly. Spans made by integrations (Anthropic
over HTTP, LangGraph, MCP, Redis) while a turn or step is current nest under it.

Everything is cheap when Sentry is off: the client is checked once per call, and then only the
Prometheus metrics are fed. Agent and tool code that has no telemetry object at hand can use
`active_turn()`, which is a do-nothing turn outside a call.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections import deque
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import sentry_sdk
from sentry_sdk.tracing import Span, Transaction

from voice_app.observability.metrics import METRICS, Metrics
from voice_app.observability.sentry import sentry_active

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

_ExcType = type[BaseException] | None

_active_turn: contextvars.ContextVar[Turn | None] = contextvars.ContextVar(
    "active_turn", default=None
)


def opaque_user_id(user_id: str) -> str:
    """What Sentry may know of a user: a stable id that is not the id."""
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]


def error_kind(error_type: type[BaseException]) -> str:
    return f"{error_type.__module__}.{error_type.__qualname__}"


def _wall(monotonic_at: float) -> datetime:
    """A monotonic instant as the wall-clock time Sentry wants."""
    return datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic_at)


def _make_current(span: Span) -> tuple[Any, Span | None]:
    """Make `span` the parent of spans started in this task; returns how to undo it."""
    scope = sentry_sdk.get_current_scope()
    previous = scope.span
    scope.span = span
    return scope, previous


class Step:
    """One timed piece of a turn (model step, tool, speech synthesis): a span plus, for
    providers, the time-to-first-byte histogram. Use as a context manager, or call `finish()`."""

    def __init__(
        self, turn: Turn, op: str, name: str, provider: str | None, data: dict[str, Any]
    ) -> None:
        self._turn = turn
        self.provider = provider
        self.started = time.monotonic()
        self.ttfb_s: float | None = None
        self._done = False
        self._restore: tuple[Any, Span | None] | None = None
        self._span: Span | None = None
        if turn._tx is not None:
            self._span = turn._tx.start_child(op=op, name=name)
            for key, value in data.items():
                self._span.set_data(key, value)

    def first_byte(self) -> None:
        """The provider's first token/audio byte arrived (recorded once)."""
        if self.ttfb_s is not None or self._done:
            return
        self.ttfb_s = time.monotonic() - self.started
        if self.provider and self._turn._metrics is not None:
            self._turn._metrics.provider_ttfb.labels(self.provider).observe(self.ttfb_s)
        if self._span is not None:
            self._span.set_data("ttfb_ms", round(self.ttfb_s * 1000))

    def finish(self, status: str = "ok") -> None:
        if self._done:
            return
        self._done = True
        if self._span is not None:
            self._span.set_status(status)
            self._span.finish()

    def __enter__(self) -> Step:
        if self._span is not None:
            self._restore = _make_current(self._span)
        return self

    def __exit__(
        self, exc_type: _ExcType, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._restore is not None:
            scope, previous = self._restore
            scope.span = previous
        if exc is None:
            self.finish()
        elif isinstance(exc, asyncio.CancelledError):
            self.finish("cancelled")
        else:
            self.finish("internal_error")


class Turn:
    """One caller turn: from the caller's words reaching the assistant until its reply is out.

    As a context manager around the assistant's work. The Sentry transaction stays open past the
    block while the reply's first audio is still on its way (`first_audio()`), so short replies
    keep their speech-synthesis span; the next turn, the call's end or `finish()` close it."""

    def __init__(self, call: CallTelemetry | None, index: int = 0) -> None:
        self._call = call
        self._metrics = call.metrics if call is not None else None
        self.index = index
        self.started = time.monotonic()
        self._heard_at = self.started  # the caller's last word; moved back by stt()
        self._tx: Transaction | None = None
        self._steps: list[Step] = []
        self._tts: Step | None = None
        self._agent_done_at: float | None = None
        self._audio_at: float | None = None
        self._restore: tuple[Any, Span | None] | None = None
        self._token: contextvars.Token[Turn | None] | None = None
        self.outcome: str | None = None  # set when the turn has finished
        if call is not None and call._tx is not None:
            parent = call._tx
            self._tx = Transaction(
                op="turn",
                name="voice.turn",
                source="custom",
                trace_id=parent.trace_id,
                parent_span_id=parent.span_id,
                parent_sampled=parent.sampled,  # a sampled call keeps all of its turns
                baggage=parent.get_baggage(),
            )
            sentry_sdk.start_transaction(self._tx)
            for key, value in call.tags.items():
                self._tx.set_tag(key, value)
            self._tx.set_data("turn.index", index)

    # Steps ---------------------------------------------------------------------------------

    def _step(self, op: str, name: str, provider: str | None, data: dict[str, Any]) -> Step:
        step = Step(self, op, name, provider, data)
        if self._call is not None:  # the do-nothing turn keeps nothing
            self._steps.append(step)
        return step

    def stt(self, provider: str, latency_s: float) -> None:
        """The final transcript arrived `latency_s` after the caller stopped speaking."""
        now = time.monotonic()
        self._heard_at = min(self._heard_at, now - latency_s)
        if self._metrics is not None:
            self._metrics.provider_ttfb.labels(provider).observe(latency_s)
        if self._tx is not None:
            latency_ms = round(latency_s * 1000)
            span = self._tx.start_child(
                op="stt", name=f"stt {provider}", start_timestamp=_wall(now - latency_s)
            )
            span.set_data("provider", provider)
            span.set_data("stt_latency_ms", latency_ms)
            span.finish(end_timestamp=_wall(now))
            self._tx.set_data("stt_latency_ms", latency_ms)

    def model_step(self, provider: str, model: str | None = None) -> Step:
        """One LLM call; `first_byte()` at its first token."""
        data = {"provider": provider, "model": model} if model else {"provider": provider}
        return self._step("model", f"model {provider}", provider, data)

    def tool(self, name: str) -> Step:
        return self._step("tool", f"tool {name}", None, {"tool": name})

    def tts(self, provider: str) -> Step:
        """Speech synthesis of the reply, started when its first sentence is sent. Its first byte
        is `first_byte()` if the engine sees it, else the reply's `first_audio()`."""
        self._tts = self._step("tts", f"tts {provider}", provider, {"provider": provider})
        return self._tts

    # Milestones ----------------------------------------------------------------------------

    def first_audio(self) -> None:
        """The first audio of the reply went to the caller: the turn latency (recorded once)."""
        if self._audio_at is not None or self.outcome in ("cancelled", "failed"):
            return
        self._audio_at = now = time.monotonic()
        latency = now - self._heard_at
        if self._metrics is not None:
            self._metrics.turn_latency.observe(latency)
        if self._tts is not None:
            self._tts.first_byte()
            self._tts.finish()
        if self._tx is not None and self.outcome is None:
            self._tx.set_data("turn_latency_ms", round(latency * 1000))
        if self._agent_done_at is not None:
            self.finish()

    def finish(self, outcome: str | None = None) -> None:
        """End the turn now (idempotent): "completed", "cancelled" (barge-in) or "failed"."""
        if self.outcome is not None:
            return
        self.outcome = outcome or "completed"
        if self._metrics is not None:
            self._metrics.turns.labels(self.outcome).inc()
        status = {"completed": "ok", "cancelled": "cancelled"}.get(self.outcome, "internal_error")
        for step in self._steps:
            step.finish(status)
        if self._tx is not None:
            self._tx.set_status(status)
            # Closed late without any audio: the turn really ended when the assistant did.
            end = self._agent_done_at if self._audio_at is None else None
            self._tx.finish(end_timestamp=_wall(end) if end is not None else None)

    # Context manager: the assistant's part of the turn ---------------------------------------

    def __enter__(self) -> Turn:
        if self._tx is not None:
            self._restore = _make_current(self._tx)
        self._token = _active_turn.set(self)
        return self

    def __exit__(
        self, exc_type: _ExcType, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            _active_turn.reset(self._token)
        if self._restore is not None:
            scope, previous = self._restore
            scope.span = previous
        self._agent_done_at = now = time.monotonic()
        if self.outcome is not None:
            return  # already closed by the next turn (a barge-in) or the call's end
        if exc is None:
            if self._metrics is not None:
                self._metrics.agent_processing.observe(now - self.started)
            if self._tx is not None:
                self._tx.set_data("agent_processing_ms", round((now - self.started) * 1000))
            waiting_for_audio = self._tts is not None and self._audio_at is None
            if not waiting_for_audio:
                self.finish("completed")
        elif isinstance(exc, asyncio.CancelledError):
            self.finish("cancelled")
        else:
            if self._call is not None and isinstance(exc, Exception):
                self._call.capture(exc)
            self.finish("failed")


_NO_TURN = Turn(None)


def active_turn() -> Turn:
    """The turn being handled in this task, or a do-nothing turn: for agent and tool code."""
    return _active_turn.get() or _NO_TURN


class CallTelemetry:
    """Sentry transaction, tags, breadcrumbs and errors of one call, plus its metrics."""

    def __init__(
        self,
        call_sid: str,
        tenant_id: str,
        channel: str,
        user_id: str = "",
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or METRICS
        self.tags = {"call_sid": call_sid, "tenant": tenant_id, "channel": channel}
        self._user_id = opaque_user_id(user_id) if user_id else ""
        self._sentry = sentry_active()  # checked once per call, not per event
        self._stack: ExitStack | None = None
        self._tx: Transaction | None = None
        self._turn: Turn | None = None
        self._turns = 0
        self._outcome: str | None = None
        self._reported: set[str] = set()
        # Kept here, not on a Sentry scope: each asyncio task gets its own scope, and a
        # reconnect noted in one task should still show on an error raised in another.
        self._crumbs: deque[dict[str, Any]] = deque(maxlen=50)

    # The call ------------------------------------------------------------------------------

    def __enter__(self) -> CallTelemetry:
        self.metrics.active_calls.inc()
        if self._sentry:
            self._stack = ExitStack()
            scope = self._stack.enter_context(sentry_sdk.isolation_scope())
            for key, value in self.tags.items():
                scope.set_tag(key, value)
            if self._user_id:
                scope.set_user({"id": self._user_id})
            scope.add_event_processor(self._process_event)
            tx = sentry_sdk.start_transaction(op="call", name="voice.call", source="custom")
            self._tx = tx if isinstance(tx, Transaction) else None
            for key, value in self.tags.items():
                tx.set_tag(key, value)
            self._stack.enter_context(tx)
        return self

    def __exit__(
        self, exc_type: _ExcType, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, Exception):
            outcome = "failed"
            self.capture(exc)
        else:
            outcome = self._outcome or ("abandoned" if exc is not None else "completed")
        self._close_turn()
        self.metrics.active_calls.dec()
        self.metrics.calls.labels(outcome).inc()
        if self._stack is not None:
            if self._tx is not None:
                self._tx.set_tag("outcome", outcome)
                self._tx.set_data("turns", self._turns)
            self._stack.__exit__(exc_type, exc, tb)

    def end(self, outcome: str) -> None:
        """How the call ended: completed, transferred, abandoned, failed, max_length."""
        self._outcome = outcome

    def turn(self) -> Turn:
        """A new caller turn; closes the previous one if it is still open (barge-in)."""
        self._close_turn()
        self._turns += 1
        self._turn = Turn(self, self._turns)
        return self._turn

    def _close_turn(self) -> None:
        """The last turn, if still open: cut short if the assistant was still at it, else
        complete (it was waiting for audio that never came)."""
        if self._turn is not None:
            self._turn.finish("cancelled" if self._turn._agent_done_at is None else None)

    @property
    def current_turn(self) -> Turn | None:
        return self._turn

    def first_audio(self) -> None:
        """The first frame of an answer went out (for the current turn's latency)."""
        if self._turn is not None:
            self._turn.first_audio()

    # Events --------------------------------------------------------------------------------

    def barge_in(self) -> None:
        self.metrics.barge_ins.inc()
        self.breadcrumb("turn", "caller barged in")

    def transfer(self, outcome: str) -> None:
        """A hand-off to a person: requested, connected, failed, no_agent…"""
        self.metrics.transfers.labels(outcome).inc()
        self.breadcrumb("transfer", f"transfer {outcome}")

    def reconnect(self, provider: str, reason: str = "") -> None:
        self.metrics.provider_reconnects.labels(provider).inc()
        self.breadcrumb("provider", f"{provider} reconnected", reason=reason)

    def provider_error(self, provider: str, error: BaseException) -> str | None:
        """A provider failed: counted every time, reported to Sentry once per kind."""
        self.metrics.provider_errors.labels(provider).inc()
        return self.capture(error, kind=f"{provider}:{error_kind(type(error))}")

    def breadcrumb(self, category: str, message: str, level: str = "info", **data: Any) -> None:
        """Context for a later error: timeouts, reconnects, fallbacks. Never what was said."""
        if self._sentry:
            crumb: dict[str, Any] = {
                "type": "default",
                "category": category,
                "message": message,
                "level": level,
            }
            if data:
                crumb["data"] = data
            crumb["timestamp"] = datetime.now(UTC)
            self._crumbs.append(crumb)

    def capture(self, error: BaseException, kind: str | None = None) -> str | None:
        """Report an error once per (call, kind): a retry loop does not send a storm.

        The kind defaults to the exception type. Returns the Sentry event id, or None if the
        kind was reported already (or Sentry is off)."""
        if not self._sentry:
            return None
        kind = kind or error_kind(type(error))
        if kind in self._reported:
            return None  # fast path; _process_event is the rule
        return sentry_sdk.capture_exception(error, tags={"error.kind": kind})

    def _process_event(self, event: Event, hint: Hint) -> Event | None:
        """On the call's scope (and the task scopes forked from it): once per kind, with the
        call's breadcrumbs. Catches errors from logging and integrations as well as capture()."""
        if event.get("type") == "transaction":
            return event
        tags = event.setdefault("tags", {})
        kind = tags.get("error.kind") or _kind_of_event(event, hint)
        if kind in self._reported:
            return None
        self._reported.add(kind)
        tags["error.kind"] = kind
        if self._crumbs:
            crumbs = event.get("breadcrumbs")
            values = list(crumbs.get("values", [])) if isinstance(crumbs, dict) else []
            values.extend(dict(c) for c in self._crumbs)
            values.sort(key=_crumb_time)
            event["breadcrumbs"] = {"values": values}
        return event


def _kind_of_event(event: Event, hint: Hint) -> str:
    exc_info = hint.get("exc_info") if hint else None
    if exc_info and exc_info[0] is not None:
        return error_kind(exc_info[0])
    values = (event.get("exception") or {}).get("values") or []
    if values:
        last = values[-1]
        return f"{last.get('module') or ''}.{last.get('type') or ''}"
    entry = event.get("logentry") or {}
    return "message:" + str(entry.get("message") or event.get("message") or "")[:200]


def _crumb_time(crumb: dict[str, Any]) -> float:
    stamp = crumb.get("timestamp")
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    return float(stamp) if isinstance(stamp, int | float) else 0.0


def pin_failure(channel: str, metrics: Metrics | None = None) -> None:
    """A wrong PIN (PSTN gather or browser sign-in)."""
    (metrics or METRICS).pin_failures.labels(channel).inc()


def pin_lockout(channel: str, metrics: Metrics | None = None) -> None:
    """An account locked after too many wrong PINs."""
    (metrics or METRICS).pin_lockouts.labels(channel).inc()
