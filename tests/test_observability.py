"""Observability: the Sentry scrubber, per-call telemetry against the local Sentry stand-in, the
/metrics endpoint, and structured, redacted logs.

sentry_sdk is process-global: every test that starts a client goes through the `sentry` fixture,
which closes the client and puts the event loop's task factory back afterwards.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sentry_sdk
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from quart import Quart

from tests.standins.sentry import SentryStandIn, decode_body
from voice_app.app import create_app
from voice_app.config import Settings
from voice_app.logs import JsonFormatter, call_sid_var, configure_logging, redact
from voice_app.observability import (
    CallTelemetry,
    Metrics,
    active_turn,
    blueprint,
    init_sentry,
    instrument_event_loop,
    pin_failure,
    pin_lockout,
)
from voice_app.observability.sentry import (
    FILTERED,
    classify_key,
    scrub_breadcrumb,
    scrub_event,
    sentry_active,
)

PIN = "49217365"  # 8 digits: a 4-digit PIN can turn up inside a random hex trace id
TOKEN = "stream-tok-Zq81xv"
CONTEXT_TOKEN = "ctx-tok-Hh27pp"
SAID = "add oat milk to my shopping list"
REPLY = "I added oat milk to your shopping list"


# The scrubber, on event dicts shaped like the SDK's ----------------------------------------


def webhook_error_event() -> dict[str, Any]:
    """An error raised in a Twilio PIN webhook, as Quart/ASGI integrations shape it."""
    return {
        "event_id": "0" * 32,
        "level": "error",
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": f"bad pin={PIN} for call",
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "gather_pin",
                                "context_line": "    digits = form['Digits']",
                                "vars": {"digits": PIN, "token": TOKEN},
                            }
                        ]
                    },
                }
            ]
        },
        "request": {
            "url": f"https://voice.example.test/twiml/pin?Digits={PIN}&attempt=1",
            "query_string": f"Digits={PIN}&attempt=1",
            "method": "POST",
            "headers": {
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Bearer {TOKEN}",
                "Cookie": f"session={TOKEN}; theme=dark",
                "X-Twilio-Signature": "c2lnbmF0dXJl=",
                "X-Call-Context": CONTEXT_TOKEN,
            },
            "cookies": {"session": TOKEN},
            "data": {
                "CallSid": "CA" + "1" * 32,
                "Digits": PIN,
                "SpeechResult": "four nine two one",
                "pin": PIN,
            },
        },
        "extra": {"session_token": TOKEN, "attempt": 2},
        "logentry": {
            "message": "PIN %s rejected",
            "params": [PIN],
            "formatted": f"PIN {PIN} rejected",
        },
        "tags": {"call_sid": "CA" + "1" * 32, "redis.key": f"va:session:{TOKEN}"},
        "user": {"id": "5e88489e5c1d9c3a", "email": "caller@example.test", "ip_address": "1.2.3.4"},
        "breadcrumbs": {
            "values": [
                {"category": "voice_app.twiml", "message": f"gathered Digits={PIN}"},
                {
                    "category": "httpx",
                    "data": {"url": f"https://pbx/x?X-Call-Context={CONTEXT_TOKEN}"},
                },
            ]
        },
    }


def turn_transaction() -> dict[str, Any]:
    """A turn transaction where integrations recorded conversation into span data."""
    return {
        "type": "transaction",
        "transaction": "voice.turn",
        "contexts": {
            "trace": {
                "trace_id": "a" * 32,
                "span_id": "b" * 16,
                "op": "turn",
                "data": {"caller_text": SAID, "turn_latency_ms": 640},
            }
        },
        "spans": [
            {
                "op": "model",
                "description": "model anthropic",
                "data": {
                    "gen_ai.request.messages": json.dumps([{"role": "user", "content": SAID}]),
                    "gen_ai.response.text": REPLY,
                    "gen_ai.usage.input_tokens": 812,
                    "gen_ai.request.model": "claude-sonnet-4-6",
                    "transcript": f"my pin is {PIN}, {SAID}",
                },
            },
            {
                "op": "mcp.server",
                "description": "tools/call add_todo",
                "data": {"mcp.request.argument.title": "oat milk", "mcp.tool.name": "add_todo"},
            },
            {"op": "db.redis", "description": f"GET 'va:callsession:{TOKEN}'", "data": {}},
        ],
        "extra": {"text": REPLY},
        "breadcrumbs": {
            "values": [
                {"category": "transcript", "message": SAID},
                {"category": "turn", "message": "caller barged in", "data": {"heard": REPLY}},
            ]
        },
    }


def test_webhook_error_event_loses_pins_digits_tokens_and_cookies() -> None:
    event = webhook_error_event()
    original = copy.deepcopy(event)
    scrubbed = scrub_event(event)
    text = json.dumps(scrubbed)
    for secret in (PIN, TOKEN, CONTEXT_TOKEN, "c2lnbmF0dXJl", "four nine two one", "caller@"):
        assert secret not in text, secret
    assert event == original  # pure: the input is untouched
    request = scrubbed["request"]
    assert request["data"]["Digits"] == request["data"]["SpeechResult"] == FILTERED
    assert request["data"]["CallSid"] == "CA" + "1" * 32  # the call stays identifiable
    assert request["headers"]["X-Call-Context"] == FILTERED
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert request["cookies"] == FILTERED
    assert request["query_string"] == "Digits=***&attempt=1"
    assert scrubbed["user"] == {"id": "5e88489e5c1d9c3a"}
    assert scrubbed["logentry"] == {
        "message": "PIN %s rejected",
        "params": [FILTERED],
        "formatted": f"PIN {FILTERED} rejected",
    }
    assert scrubbed["extra"]["attempt"] == 2
    frame = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert frame["context_line"] == "    digits = form['Digits']"  # source stays readable
    assert frame["vars"] == {"digits": FILTERED, "token": FILTERED}


def test_transaction_loses_transcripts_but_keeps_measurements() -> None:
    scrubbed = scrub_event(turn_transaction())
    text = json.dumps(scrubbed)
    for said in (SAID, REPLY, "oat milk", PIN, TOKEN):
        assert said not in text, said
    model, mcp, redis = scrubbed["spans"]
    assert model["data"]["gen_ai.usage.input_tokens"] == 812
    assert model["data"]["gen_ai.request.model"] == "claude-sonnet-4-6"
    assert mcp["data"]["mcp.tool.name"] == "add_todo"
    assert redis["description"] == "GET 'va:callsession:***'"
    assert scrubbed["contexts"]["trace"]["trace_id"] == "a" * 32
    assert scrubbed["contexts"]["trace"]["data"]["turn_latency_ms"] == 640
    assert scrubbed["breadcrumbs"]["values"][0]["message"] == FILTERED
    assert scrubbed["breadcrumbs"]["values"][1]["message"] == "caller barged in"


def test_transcripts_kept_when_opted_in_but_pins_never() -> None:
    scrubbed = scrub_event(turn_transaction(), include_transcripts=True)
    text = json.dumps(scrubbed)
    assert SAID in text and REPLY in text
    assert scrubbed["spans"][0]["data"]["transcript"] == f"my pin is ***, {SAID}"
    assert PIN not in text and TOKEN not in text
    webhook = json.dumps(scrub_event(webhook_error_event(), include_transcripts=True))
    assert PIN not in webhook and "four nine two one" not in webhook  # SpeechResult is a PIN


def test_breadcrumbs_from_logs_and_http_are_scrubbed() -> None:
    log_crumb = {
        "type": "log",
        "category": "voice_app.twiml.routes",
        "message": f"caller entered pin {PIN}",
        "data": {"pin": PIN, "attempt": 1},
    }
    assert scrub_breadcrumb(log_crumb) == {
        "type": "log",
        "category": "voice_app.twiml.routes",
        "message": "caller entered pin ***",
        "data": {"pin": FILTERED, "attempt": 1},
    }
    http = scrub_breadcrumb(
        {"type": "http", "data": {"url": "https://app/oauth/callback?code=4/0Ab&state=s1"}}
    )
    assert http["data"]["url"] == "https://app/oauth/callback?code=***&state=***"
    said = {"category": "transcript", "message": SAID}
    assert scrub_breadcrumb(said)["message"] == FILTERED
    assert scrub_breadcrumb(said, include_transcripts=True)["message"] == SAID


def test_headers_as_pairs_are_scrubbed_by_name() -> None:
    event = {"request": {"headers": [["Authorization", "Basic dTpw"], ["Accept", "*/*"]]}}
    assert scrub_event(event)["request"]["headers"] == [
        ["Authorization", FILTERED],
        ["Accept", "*/*"],
    ]


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("Digits", "secret"),
        ("SpeechResult", "secret"),
        ("PIN", "secret"),
        ("new_pin", "secret"),
        ("X-Call-Context", "secret"),
        ("X-Twilio-Signature", "secret"),
        ("Authorization", "secret"),
        ("cookies", "secret"),
        ("session_token", "secret"),
        ("ANTHROPIC_API_KEY", "secret"),
        ("text", "transcript"),
        ("caller_text", "transcript"),
        ("gen_ai.request.messages", "transcript"),
        ("gen_ai.response.text", "transcript"),
        ("mcp.request.argument.title", "transcript"),
        ("call_sid", None),
        ("CallSid", None),
        ("public_key", None),  # the DSN's public key in the trace's sampling context
        ("gen_ai.usage.input_tokens", None),
        ("gen_ai.request.max_tokens", None),
        ("status_code", None),
        ("message", None),
    ],
)
def test_classify_key(key: str, kind: str | None) -> None:
    assert classify_key(key) == kind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pin=1234", "pin=***"),
        ("my PIN is 4 4 2 1 thanks", "my PIN is *** thanks"),
        ("the pin is one two three four.", "the pin is ***."),
        ('{"pin": "1234", "Digits": "98"}', '{"pin": "***", "Digits": "***"}'),
        ("SpeechResult=four+nine&CallSid=CA1", "SpeechResult=***&CallSid=CA1"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("Authorization: Token 0123abcd", "Authorization: Token ***"),
        ("Cookie: session=abc; theme=dark", "Cookie: ***"),
        ("X-Call-Context=tok&X-Caller-Id=+1555", "X-Call-Context=***&X-Caller-Id=+1555"),
        ("key sk-ant-api03-abcdefghijk", "key sk-***"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "jwt ***"),
        ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("DEL va:session:abcDEF_12", "DEL va:session:***"),
        ('<Parameter name="token" value="abc"/>', '<Parameter name="token" value="***"/>'),
        # left alone: no value to hide
        ("account locked after 5 PIN failures", "account locked after 5 PIN failures"),
        ("max_tokens=512 input_tokens: 9", "max_tokens=512 input_tokens: 9"),
        ("call CA123 ended: completed", "call CA123 ended: completed"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


# Sentry end to end, against the local stand-in ---------------------------------------------


def raw_envelopes(sentry: SentryStandIn) -> str:
    return "\n".join(
        decode_body(r.body, r.headers.get("Content-Encoding", "")).decode("utf-8", "replace")
        for r in sentry.requests
    )


def sentry_settings(sentry: SentryStandIn, *, transcripts: bool = False) -> Settings:
    return Settings.from_env(
        {
            "ENVIRONMENT": "test",
            "SENTRY_DSN": sentry.dsn(),
            "SENTRY_TRACES_SAMPLE_RATE": "1.0",
            "SENTRY_INCLUDE_TRANSCRIPTS": str(transcripts).lower(),
        },
        dotenv=None,
    )


def start_sentry(sentry: SentryStandIn, *, transcripts: bool = False) -> None:
    assert init_sentry(sentry_settings(sentry, transcripts=transcripts))
    # The stand-in is an aiohttp server in this very process: tracing it would send a
    # transaction for every envelope it receives, forever.
    sentry_sdk.get_client().integrations.pop("aiohttp", None)


async def flush() -> None:
    await asyncio.to_thread(sentry_sdk.flush, 2.0)


@pytest.fixture
async def sentry() -> AsyncIterator[SentryStandIn]:
    loop = asyncio.get_running_loop()
    task_factory = loop.get_task_factory()
    async with SentryStandIn() as standin:
        try:
            yield standin
        finally:
            await asyncio.to_thread(sentry_sdk.get_client().close, 2.0)
            sentry_sdk.get_global_scope().set_client(None)  # back to "never initialised"
            loop.set_task_factory(task_factory)  # undo AsyncioIntegration's patch


async def test_init_sentry_is_a_no_op_without_a_dsn() -> None:
    assert init_sentry(Settings.from_env({"ENVIRONMENT": "test"}, dotenv=None)) is False
    assert not sentry_active()


async def test_init_sentry_keeps_pii_and_prompts_off(sentry: SentryStandIn) -> None:
    start_sentry(sentry)
    instrument_event_loop()
    client = sentry_sdk.get_client()
    collection = client.options["data_collection"]
    assert not client.should_send_default_pii()
    assert collection["user_info"] is False and collection["http_bodies"] == []
    assert collection["gen_ai"] == {"inputs": False, "outputs": False}
    assert collection["stack_frame_variables"] is False
    assert client.options["include_local_variables"] is False
    assert {"quart", "langchain", "langgraph", "mcp"} <= set(client.integrations)
    assert client.integrations["langchain"].include_prompts is False  # type: ignore[attr-defined]
    task_factory = asyncio.get_running_loop().get_task_factory()
    assert getattr(task_factory, "_is_sentry_task_factory", False)  # the running loop is patched


async def test_a_call_sends_its_transaction_and_turns_with_spans(sentry: SentryStandIn) -> None:
    start_sentry(sentry)
    instrument_event_loop()
    metrics = Metrics()
    with CallTelemetry("CA" + "7" * 32, "tenant-1", "pstn", "user-42", metrics=metrics) as call:

        async def assistant_turn() -> None:  # the engine runs each turn in its own task
            with call.turn() as turn:
                turn.stt("deepgram_stt", latency_s=0.2)
                with turn.model_step("anthropic", "claude-sonnet-4-6") as step:
                    await asyncio.sleep(0.01)
                    step.first_byte()
                with active_turn().tool("add_todo"):  # agent code without the telemetry object
                    await asyncio.sleep(0)
                turn.tts("deepgram_tts")

        await asyncio.create_task(assistant_turn())
        await asyncio.sleep(0.02)
        call.first_audio()  # from the audio task, after the assistant finished its part
        call.end("completed")
    await flush()
    transactions = await sentry.wait_for_transactions(2)

    turn_tx, call_tx = sorted(transactions, key=lambda t: t["transaction"] == "voice.call")
    assert call_tx["transaction"] == "voice.call" and call_tx["contexts"]["trace"]["op"] == "call"
    assert turn_tx["transaction"] == "voice.turn" and turn_tx["contexts"]["trace"]["op"] == "turn"
    tags = {"call_sid": "CA" + "7" * 32, "tenant": "tenant-1", "channel": "pstn"}
    assert tags.items() <= call_tx["tags"].items() and tags.items() <= turn_tx["tags"].items()
    assert call_tx["tags"]["outcome"] == "completed"
    opaque = hashlib.sha256(b"user-42").hexdigest()[:16]
    assert call_tx["user"] == turn_tx["user"] == {"id": opaque}
    # One trace: the turn hangs off the call.
    assert turn_tx["contexts"]["trace"]["trace_id"] == call_tx["contexts"]["trace"]["trace_id"]
    assert turn_tx["contexts"]["trace"]["parent_span_id"] == call_tx["contexts"]["trace"]["span_id"]
    spans = {span["op"]: span for span in turn_tx["spans"]}
    assert set(spans) == {"stt", "model", "tool", "tts"}
    assert spans["stt"]["data"]["stt_latency_ms"] == 200
    assert spans["model"]["data"]["ttfb_ms"] >= 10
    assert spans["tool"]["description"] == "tool add_todo"
    assert "ttfb_ms" in spans["tts"]["data"]  # closed by first_audio(), after the block ended
    data = turn_tx["contexts"]["trace"]["data"]
    assert data["turn_latency_ms"] >= 200 + 20 and data["stt_latency_ms"] == 200
    assert "user-42" not in raw_envelopes(sentry)
    assert metrics.turn_latency.collect()[0].samples  # the same calls fed Prometheus


async def test_errors_are_reported_once_per_kind_and_carry_no_secrets(
    sentry: SentryStandIn,
) -> None:
    start_sentry(sentry)
    instrument_event_loop()
    log = logging.getLogger("voice_app.test_observability")
    with (
        pytest.raises(RuntimeError),
        CallTelemetry("CA" + "8" * 32, "tenant-1", "browser", "user-7") as call,
    ):
        call.reconnect("deepgram_stt", reason=f"socket closed, token={TOKEN}")
        call.breadcrumb("fallback", "offline agent took over", said=SAID)
        with call.turn() as turn, turn.model_step("anthropic"):
            span = sentry_sdk.get_current_span()
            assert span is not None  # an integration recording the prompt anyway:
            span.set_data("gen_ai.request.messages", f"my pin is {PIN}. {SAID}")
        for _ in range(5):  # a retry loop
            try:
                raise ConnectionError(f"deepgram refused Authorization: Token {TOKEN}")
            except ConnectionError as error:
                call.provider_error("deepgram_stt", error)
        try:
            raise ValueError(f"caller pin={PIN}")
        except ValueError:
            log.exception("PIN check failed for %s", PIN)  # logging integration path
            log.exception("PIN check failed again")  # same kind: not reported again
        call.breadcrumb("transcript", REPLY)  # a careless breadcrumb of what was said
        raise RuntimeError("the engine crashed")
    await flush()
    await sentry.wait_for_transactions(2)
    events = await sentry.wait_for_events(3)
    await asyncio.sleep(0.1)  # nothing more should trickle in

    kinds = sorted(e["tags"]["error.kind"] for e in sentry.events)
    assert kinds == [
        "builtins.RuntimeError",
        "builtins.ValueError",
        "deepgram_stt:builtins.ConnectionError",
    ]
    connection = next(e for e in events if "ConnectionError" in e["tags"]["error.kind"])
    crumbs = [c["message"] for c in connection["breadcrumbs"]["values"]]
    assert "deepgram_stt reconnected" in crumbs and "offline agent took over" in crumbs
    assert connection["tags"]["call_sid"] == "CA" + "8" * 32
    raw = raw_envelopes(sentry)
    for secret in (PIN, TOKEN, SAID, REPLY, "user-7"):
        assert secret not in raw, secret


async def test_transcripts_reach_sentry_only_when_opted_in(sentry: SentryStandIn) -> None:
    start_sentry(sentry, transcripts=True)
    with CallTelemetry("CA" + "9" * 32, "tenant-1", "pstn") as call:
        with call.turn() as turn, turn.model_step("anthropic"):
            span = sentry_sdk.get_current_span()
            assert span is not None
            span.set_data("gen_ai.request.messages", f"my pin is {PIN}. {SAID}")
        call.end("completed")
    await flush()
    await sentry.wait_for_transactions(2)
    raw = raw_envelopes(sentry)
    assert SAID in raw and PIN not in raw


async def test_a_failing_request_reaches_sentry_scrubbed(sentry: SentryStandIn) -> None:
    start_sentry(sentry)
    app = Quart(__name__)

    @app.post("/twiml/pin")
    async def gather() -> str:
        raise ValueError("the PIN webhook broke")

    client = app.test_client()
    response = await client.post(
        f"/twiml/pin?Digits={PIN}&attempt=2",
        form={"Digits": PIN, "CallSid": "CA" + "2" * 32},
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Cookie": f"session={TOKEN}",
            "X-Twilio-Signature": "c2lnbmF0dXJl=",
            "X-Call-Context": CONTEXT_TOKEN,
        },
    )
    assert response.status_code == 500
    await flush()
    (event,) = await sentry.wait_for_events(1)
    assert event["request"]["method"] == "POST"
    assert event["request"]["headers"]["X-Call-Context"] == FILTERED
    raw = raw_envelopes(sentry)
    for secret in (PIN, TOKEN, CONTEXT_TOKEN, "c2lnbmF0dXJl"):
        assert secret not in raw, secret


# Metrics -----------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_telemetry_feeds_metrics_served_at_metrics() -> None:
    assert not sentry_active()  # metrics work with Sentry off
    metrics = Metrics()
    with CallTelemetry("CA" + "3" * 32, "tenant-1", "pstn", "user-1", metrics=metrics) as call:
        assert metrics.active_calls._value.get() == 1
        with call.turn() as turn:
            turn.stt("deepgram_stt", latency_s=0.15)
            with turn.model_step("anthropic") as step:
                step.first_byte()
            turn.tts("deepgram_tts")
        call.first_audio()

        async def interrupted_turn() -> None:
            with call.turn():
                await asyncio.sleep(10)

        task = asyncio.create_task(interrupted_turn())
        await asyncio.sleep(0)
        call.barge_in()
        task.cancel()  # the engine cancels the assistant's task on a barge-in
        await asyncio.gather(task, return_exceptions=True)
        call.turn()  # still open when the call ends: cut short too
        call.reconnect("deepgram_tts")
        call.provider_error("anthropic", TimeoutError())
        call.transfer("connected")
        call.end("transferred")
    pin_failure("pstn", metrics)
    pin_lockout("browser", metrics)

    app = create_app(Settings.from_env({"ENVIRONMENT": "test"}, dotenv=None))
    app.extensions["metrics"] = metrics
    response = await app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    values = samples(await response.get_data(as_text=True))

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert value("voice_active_calls") == 0
    assert value("voice_calls_total", outcome="transferred") == 1
    assert value("voice_turns_total", outcome="completed") == 1
    assert value("voice_turns_total", outcome="cancelled") == 2
    assert value("voice_turn_latency_seconds_count") == 1
    assert value("voice_turn_latency_seconds_sum") >= 0.15
    assert value("voice_turn_latency_seconds_bucket", le="0.1") == 0
    assert value("voice_agent_processing_seconds_count") == 1
    assert value("voice_provider_ttfb_seconds_count", provider="deepgram_stt") == 1
    assert value("voice_provider_ttfb_seconds_count", provider="anthropic") == 1
    assert value("voice_provider_ttfb_seconds_count", provider="deepgram_tts") == 1
    assert value("voice_barge_ins_total") == 1
    assert value("voice_transfers_total", outcome="connected") == 1
    assert value("voice_provider_errors_total", provider="anthropic") == 1
    assert value("voice_provider_errors_total", provider="deepgram_stt") == 0
    assert value("voice_provider_reconnects_total", provider="deepgram_tts") == 1
    assert value("voice_pin_failures_total", channel="pstn") == 1
    assert value("voice_pin_lockouts_total", channel="browser") == 1


def test_without_sentry_telemetry_does_nothing_but_count() -> None:
    call = CallTelemetry("CA1", "t", "local", "u", metrics=Metrics())
    with call:
        turn = call.turn()
        assert turn._tx is None and call._tx is None
        assert call.capture(RuntimeError("x")) is None
        call.breadcrumb("timeout", "tool took 8 s")
        assert not call._crumbs
    nobody = active_turn()  # outside any turn: a do-nothing turn
    with nobody.tool("add_todo"), nobody.model_step("anthropic") as step:
        step.first_byte()
    assert nobody._steps == []


# Logs --------------------------------------------------------------------------------------


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_json_log_lines_carry_the_call_sid_and_no_secrets(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json")
    log = logging.getLogger("voice_app.calls")
    log.info("process starting")

    async def call() -> None:
        call_sid_var.set("CA" + "4" * 32)
        log.info("caller keyed Digits=%s", PIN)

        async def child() -> None:  # tasks of the call inherit its SID
            log.warning("session %s", {"token": TOKEN, "pin": PIN})
            log.warning("PIN check failed for %s after %s tries", PIN, 2)
            try:
                raise PermissionError(f"Authorization: Bearer {TOKEN}")
            except PermissionError:
                log.exception("stream refused")

        await asyncio.create_task(child())

    await asyncio.create_task(call())
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]

    assert [line["msg"] for line in lines][:4] == [
        "process starting",
        "caller keyed Digits=***",
        "session {'token': '***', 'pin': '***'}",
        "PIN check failed for *** after 2 tries",
    ]
    assert "call_sid" not in lines[0]
    assert {line["call_sid"] for line in lines[1:]} == {"CA" + "4" * 32}
    assert "Bearer ***" in lines[4]["exc"] and lines[4]["level"] == "error"
    text = json.dumps(lines)
    assert PIN not in text and TOKEN not in text


def test_a_bad_log_call_still_logs(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    (ours,) = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    # Only our handler: pytest's own capture handler rightly fails a test on a bad format.
    ours.handle(logging.makeLogRecord({"msg": "bad %s %s", "args": ("one",), "levelno": 20}))
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["msg"] == "bad %s %s (unformattable arguments)"


def test_text_log_lines_are_readable(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("text")
    configure_logging("text")  # configuring twice does not double every line
    token = call_sid_var.set("CA" + "5" * 32)
    try:
        logging.getLogger("voice_app.calls").info("pin: %s accepted", PIN)
    finally:
        call_sid_var.reset(token)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(f"I voice_app.calls [CA{'5' * 32}]: pin: *** accepted")


async def test_twilio_webhooks_bind_the_call_sid() -> None:
    app = Quart(__name__)
    app.register_blueprint(blueprint)

    @app.post("/twiml/voice")
    async def voice() -> str:
        return call_sid_var.get() or "-"

    client = app.test_client()
    sid = "CA" + "6" * 32
    signed = {"X-Twilio-Signature": "c2ln"}
    signed_post = await client.post("/twiml/voice", form={"CallSid": sid}, headers=signed)
    assert await signed_post.get_data(as_text=True) == sid
    unsigned = await client.post("/twiml/voice", form={"CallSid": sid})
    assert await unsigned.get_data(as_text=True) == "-"


async def test_metrics_are_behind_a_token_when_one_is_set() -> None:
    base = Settings.from_env({"ENVIRONMENT": "test"}, dotenv=None)
    guarded = create_app(dataclasses.replace(base, metrics_token="scrape-me"))
    client = guarded.test_client()
    assert (await client.get("/metrics")).status_code == 401
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer scrape-you"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    right = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert right.status_code == 200 and b"voice_active_calls" in await right.get_data()


async def test_production_serves_no_metrics_without_a_token() -> None:
    base = Settings.from_env({"ENVIRONMENT": "test"}, dotenv=None)
    production = create_app(dataclasses.replace(base, environment="production"))
    response = await production.test_client().get("/metrics")
    assert response.status_code == 404
    assert b"voice_" not in await response.get_data()
