"""The call engine end to end over real sockets: the caller simulator plays Twilio against the
real app, which hears and speaks through the official Deepgram SDK pointed at the wire-level
stand-in, answers with the offline agent over the real MCP tools, on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.live_app import LiveApp, live_app
from tests.standins.deepgram import DeepgramStandIn, Utterance, tone
from voice_app.config import Settings
from voice_app.db.seed import DEMO_USERS, seed_demo
from voice_app.simulator.call import CallConfig, run_call
from voice_app.simulator.caller import Step
from voice_app.simulator.report import CallReport
from voice_app.streams.audio import audioop

DEMO = DEMO_USERS[0]


@pytest.fixture(scope="module")
async def deepgram() -> AsyncIterator[DeepgramStandIn]:
    async with DeepgramStandIn(api_key="dg-test", endpointing_ms=300) as dg:
        yield dg


@pytest.fixture(scope="module")
async def app(
    settings: Settings, database_url: str, deepgram: DeepgramStandIn
) -> AsyncIterator[LiveApp]:
    await seed_demo(database_url)
    async with live_app(
        settings,
        deepgram_api_key="dg-test",
        deepgram_url=deepgram.url,
        idle_reprompt_seconds=2.0,
    ) as live:
        yield live


@pytest.fixture(autouse=True)
def fresh_script(deepgram: DeepgramStandIn) -> None:
    deepgram.expect_utterances([])
    deepgram.fallback_transcript = "hello"


def call_config(app: LiveApp, *steps: Step, **overrides: object) -> CallConfig:
    config = CallConfig.from_settings(app.settings, steps=list(steps), record=True)
    return dataclasses.replace(config, account=DEMO.account_number, pin=DEMO.pin, **overrides)


async def messages_of(app: LiveApp, report: CallReport) -> list[dict[str, object]]:
    async with app.services.db.pool.acquire() as conn:
        await conn.execute("RESET ROLE")  # the owner sees the call's rows for the assertion
        rows = await conn.fetch(
            "SELECT role, content, interrupted FROM messages WHERE call_sid = $1 ORDER BY id",
            report.call_sid,
        )
        await conn.execute("SET ROLE voice_app_rw")
    return [dict(r) for r in rows]


async def test_a_full_turn_speech_in_reply_out_untranscoded(
    app: LiveApp, deepgram: DeepgramStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voice_app.streams")
    deepgram.expect_utterances(["what is on my todo list"])
    report = await run_call(call_config(app, Step("say", "what is on my todo list")))

    assert report.outcome == "caller_hangup", report.detail
    greeting, turn = report.turns[0], report.turns[1]
    assert greeting.first_arrival is not None
    assert turn.first_arrival is not None and not turn.reply_timed_out
    # The app forwards the synthesizer's μ-law untouched: the stand-in's tone is in what the
    # caller heard, byte for byte.
    assert report.recording is not None and tone(4000)[800:2400] in report.recording
    messages = await messages_of(app, report)
    assert {"role": "user", "content": "what is on my todo list", "interrupted": False} in messages
    reply = next(
        m for m in messages if m["role"] == "assistant" and "milk" in str(m["content"]).lower()
    )
    assert reply["interrupted"] is False
    listen = deepgram.listen_connections[-1]
    assert listen.query["encoding"] == "mulaw" and listen.query["sample_rate"] == "8000"
    # The caller hung up first (the server cancels the handler): the end is still logged, once.
    for _ in range(100):
        ended = [r for r in caplog.records if r.getMessage().startswith("call ended: ")]
        if ended:
            break
        await asyncio.sleep(0.05)
    assert len(ended) == 1 and "call ended: completed" in ended[0].getMessage(), ended


async def test_barge_in_clears_drops_stale_audio_and_trims_history(
    app: LiveApp, deepgram: DeepgramStandIn
) -> None:
    deepgram.expect_utterances(["what is on my todo list", "stop what is on my calendar today"])
    report = await run_call(
        call_config(
            app,
            Step("say", "what is on my todo list"),
            Step("say", "stop what is on my calendar today", barge_in_after_ms=1200),
        )
    )
    assert report.outcome == "caller_hangup", report.detail
    barge = report.turns[2]
    timeline = "\n".join(map(str, report.timeline()))
    # Outbound audio pauses the moment speech starts (so it may simply run out at the caller
    # first), then words confirm the barge-in and the app clears.
    assert barge.barge_in and barge.barge_in_stop is not None, timeline
    assert report.clears >= 1, timeline
    assert barge.stale_audio_bytes == 0  # nothing of the cancelled reply after the clear
    messages = await messages_of(app, report)
    interrupted = [m for m in messages if m["role"] == "assistant" and m["interrupted"]]
    assert len(interrupted) == 1
    full_reply_chars = 40  # the todo list reply is far longer than what 1.2 s of audio carries
    assert (
        len(str(interrupted[0]["content"])) < full_reply_chars
        or "milk" not in str(interrupted[0]["content"]).lower()
    )
    assert any(m["role"] == "user" and "calendar" in str(m["content"]) for m in messages)


def cough_wav(path: Path) -> str:
    """A 150 ms burst: loud enough to be heard as sound, too short and wordless to be speech."""
    pcm = audioop.ulaw2lin(tone(1200, freq=900, amplitude=9000), 2)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)
    return str(path)


async def test_a_cough_does_not_barge_in(
    app: LiveApp, deepgram: DeepgramStandIn, tmp_path: Path
) -> None:
    deepgram.expect_utterances(["what is on my todo list", Utterance("")])
    report = await run_call(
        call_config(
            app,
            Step("say", "what is on my todo list"),
            Step("wav", cough_wav(tmp_path / "cough.wav"), barge_in_after_ms=800),
        )
    )
    assert report.clears == 0, report.to_dict()
    messages = await messages_of(app, report)
    assert not any(m["interrupted"] for m in messages)


async def test_dropped_deepgram_socket_is_reopened_and_the_call_goes_on(
    app: LiveApp, deepgram: DeepgramStandIn
) -> None:
    deepgram.expect_utterances(["what is on my todo list", "who is on my team"])
    config = call_config(
        app, Step("say", "what is on my todo list"), Step("say", "who is on my team")
    )

    async def drop_after_first_turn() -> None:
        for _ in range(400):
            await asyncio.sleep(0.05)
            if len(deepgram.listen_connections) and deepgram.listen_connections[-1].audio:
                break
        await asyncio.sleep(3.5)
        await deepgram.drop("listen")

    dropper = asyncio.create_task(drop_after_first_turn())
    report = await run_call(config)
    await dropper
    assert report.outcome == "caller_hangup", report.detail
    assert all(t.first_arrival is not None for t in report.turns[1:]), report.to_dict()
    messages = await messages_of(app, report)
    assert any(m["role"] == "user" and m["content"] == "who is on my team" for m in messages)


def silence_wav(path: Path, seconds: float) -> str:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))
    return str(path)


async def test_silence_earns_a_reprompt_then_goodbye(app: LiveApp, tmp_path: Path) -> None:
    report = await run_call(
        call_config(app, Step("wav", silence_wav(tmp_path / "quiet.wav", 20)), max_duration_s=40)
    )
    assert report.outcome == "app_hangup", report.to_dict()
    messages = await messages_of(app, report)
    lines = [str(m["content"]) for m in messages if m["role"] == "assistant"]
    assert any("still there" in line for line in lines), lines
    assert "hang up" in lines[-1], lines


async def test_dtmf_zero_transfers_then_an_unanswered_dial_brings_the_caller_back(
    settings: Settings, database_url: str, deepgram: DeepgramStandIn
) -> None:
    import secrets

    from tests.standins.twilio_rest import TwilioRestStandIn

    await seed_demo(database_url)
    async with (
        TwilioRestStandIn(account_sid=settings.twilio_account_sid) as twilio,
        live_app(
            settings,
            deepgram_api_key="dg-test",
            deepgram_url=deepgram.url,
            twilio_api_base_url=twilio.url,
            pbx_sip_domain="pbx.example.test",
        ) as app,
    ):
        call_sid = "CA" + secrets.token_hex(16)
        report = await run_call(
            # The call lives on with the agent: no "completed" status callback yet.
            call_config(
                app, Step("dtmf", "0"), max_duration_s=30, call_sid=call_sid, status_path=None
            )
        )
        assert report.outcome == "transferred", "\n".join(map(str, report.timeline()))
        assert len(twilio.updates) == 1  # the live call was updated once, through the REST API
        updated_sid, form = twilio.updates[0]
        assert updated_sid == call_sid
        assert "sip:2001@pbx.example.test;transport=tls?X-Call-Context=" in form["Twiml"]
        messages = await messages_of(app, report)
        assert any("connect you to a person" in str(m["content"]) for m in messages), messages

        # Nobody answered: Twilio calls <Dial action>, and the caller is back with the assistant
        # on a new stream of the same call, which picks the conversation up.
        deepgram.expect_utterances(["what is on my todo list"])
        back = await run_call(
            call_config(
                app,
                Step("say", "what is on my todo list"),
                voice_path="/twiml/transfer-done",
                call_sid=call_sid,
            )
        )
        assert back.outcome == "caller_hangup", back.timeline()
        said = [str(m["content"]) for m in await messages_of(app, back)]
        assert any("I'm back" in line for line in said), said
        assert any("milk" in line.lower() for line in said), said


async def test_shutdown_lets_calls_finish_then_says_goodbye(app: LiveApp, tmp_path: Path) -> None:
    from voice_app.shutdown import drain

    config = call_config(app, Step("wav", silence_wav(tmp_path / "quiet.wav", 20)))
    config = dataclasses.replace(config, max_duration_s=40)
    call = asyncio.create_task(run_call(config))
    services = app.services
    for _ in range(100):  # until the call is live
        await asyncio.sleep(0.05)
        if services.extras.get("live_calls"):
            break
    try:
        ended_by_server = await drain(services, grace_s=0.3)
        client = app.app.test_client()
        assert (await client.get("/readyz")).status_code == 503
    finally:
        services.extras["draining"] = False
    report = await call
    assert ended_by_server == 1
    assert report.outcome == "app_hangup", report.to_dict()
    messages = await messages_of(app, report)
    assert "maintenance" in str(messages[-1]["content"])


async def test_pin_is_changed_on_the_keypad_and_never_reaches_the_transcript(
    app: LiveApp, deepgram: DeepgramStandIn, owner_conn
) -> None:
    from voice_app.auth.secrets import verify_secret

    alan = DEMO_USERS[2]
    deepgram.expect_utterances(["i want to change my pin"])
    config = call_config(
        app,
        Step("say", "i want to change my pin"),
        Step("dtmf", f"{alan.pin}#"),
        Step("dtmf", "8642#"),
        Step("dtmf", "8642#"),
        max_duration_s=60,
    )
    config = dataclasses.replace(
        config, account=alan.account_number, pin=alan.pin, from_number=alan.phone
    )
    report = await run_call(config)
    assert report.outcome == "caller_hangup", report.detail
    stored = await owner_conn.fetchval(
        "SELECT pin_hash FROM users WHERE account_number = $1", alan.account_number
    )
    assert verify_secret(stored, "8642")
    messages = await messages_of(app, report)
    assert any("PIN has been changed" in str(m["content"]) for m in messages), messages
    assert not any("8642" in str(m["content"]) or alan.pin in str(m["content"]) for m in messages)
    from voice_app.auth.secrets import hash_secret

    await owner_conn.execute(  # put the demo PIN back for the other tests
        "UPDATE users SET pin_hash = $2 WHERE account_number = $1",
        alan.account_number,
        hash_secret(alan.pin),
    )


async def test_the_call_ends_at_its_maximum_length(
    settings: Settings, database_url: str, deepgram: DeepgramStandIn, tmp_path: Path
) -> None:
    await seed_demo(database_url)
    async with live_app(
        settings,
        deepgram_api_key="dg-test",
        deepgram_url=deepgram.url,
        max_call_seconds=10,
        idle_reprompt_seconds=60.0,
    ) as app:
        report = await run_call(
            call_config(
                app, Step("wav", silence_wav(tmp_path / "quiet.wav", 30)), max_duration_s=40
            )
        )
        messages = await messages_of(app, report)
    assert report.outcome == "app_hangup", report.to_dict()
    assert 10 <= report.duration_s < 25, report.duration_s
    assert "time limit" in str(messages[-1]["content"]), messages


async def test_calls_beyond_max_live_calls_hear_the_busy_line_and_live_calls_go_on(
    settings: Settings, database_url: str, deepgram: DeepgramStandIn, tmp_path: Path
) -> None:
    import secrets

    from voice_app.observability.metrics import METRICS
    from voice_app.streams.admission import call_admission
    from voice_app.twiml.binding import bind_call

    def refused() -> float:
        value = METRICS.registry.get_sample_value("voice_calls_refused_total", {"reason": "busy"})
        return value or 0.0

    await seed_demo(database_url)
    async with live_app(
        settings, deepgram_api_key="dg-test", deepgram_url=deepgram.url, max_live_calls=1
    ) as app:
        services, admission = app.services, call_admission(app.services)
        first = asyncio.create_task(
            run_call(call_config(app, Step("wav", silence_wav(tmp_path / "q.wav", 12))))
        )
        for _ in range(200):  # until the first call holds the only slot
            await asyncio.sleep(0.05)
            if services.extras.get("live_calls"):
                break
        assert admission.full
        ready = await app.app.test_client().get("/readyz")
        assert ready.status_code == 503
        assert (await ready.get_json())["checks"]["process"] == "full"
        before = refused()

        # At the door: turned away before any PIN is asked for.
        door = await run_call(call_config(app, Step("say", "hello")))
        said = [e.text for e in door.timeline() if e.kind == "app says"]
        assert door.outcome == "app_hangup" and door.stream_started_at is None, door.to_dict()
        assert len(said) == 1 and "lines are busy" in said[0], said

        # Signed in while a slot looked free: the stream itself is refused at `start`, and
        # <Connect action> plays the busy line instead of reconnecting.
        late_sid = "CA" + secrets.token_hex(16)
        await services.state.set_pending_account(late_sid, DEMO.account_number)
        late = await run_call(call_config(app, voice_path="/twiml/pin", call_sid=late_sid))
        said = [e.text for e in late.timeline() if e.kind == "app says"]
        assert late.outcome == "app_hangup", late.to_dict()
        assert "lines are busy" in said[-1], said
        assert not late.turns or late.turns[0].first_played is None  # no assistant audio
        assert (await services.state.get_call_state(late_sid))["phase"] == "busy"
        assert refused() == before + 2

        # A call whose stream dropped keeps its place, full or not: Twilio asks <Connect action>,
        # which reconnects the stream, and the stream is let in.
        back_sid = "CA" + secrets.token_hex(16)
        async with services.db.pool.acquire() as conn:
            await conn.execute("RESET ROLE")
            row = await conn.fetchrow(
                "SELECT id, tenant_id FROM users WHERE account_number = $1", DEMO.account_number
            )
            await conn.execute("SET ROLE voice_app_rw")
        await bind_call(
            services, call_sid=back_sid, tenant_id=row["tenant_id"], user_id=row["id"],
            channel="pstn",
        )
        await services.state.set_call_state(back_sid, reconnects="1")  # it has dropped once
        deepgram.expect_utterances(["what is on my todo list"])
        back = await run_call(
            call_config(
                app,
                Step("say", "what is on my todo list"),
                voice_path="/twiml/stream-ended",
                call_sid=back_sid,
            )
        )
        assert back.outcome == "caller_hangup", back.timeline()
        said = [str(m["content"]).lower() for m in await messages_of(app, back)]
        assert any("milk" in line for line in said), said

        report = await first  # the call that held the slot went on undisturbed
        assert report.outcome == "caller_hangup", report.to_dict()
        assert report.protocol_error_count == 0
        for _ in range(200):  # the server side of both calls winds down after the caller hangs up
            if admission.taken == 0:
                break
            await asyncio.sleep(0.05)
        assert admission.taken == 0 and not admission.full
        assert refused() == before + 2
