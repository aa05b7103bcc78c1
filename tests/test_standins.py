"""The stand-ins, driven by the providers' real SDKs over real loopback sockets."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anthropic
import httpx
import httpx2
import pytest
import sentry_sdk
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.listen.v1.types import ListenV1Metadata, ListenV1Results
from deepgram.speak.v1.types import SpeakV1Text
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from websockets.exceptions import ConnectionClosedError

from tests.standins import wait_for
from tests.standins.anthropic import AnthropicStandIn, ScriptedReply, Text, ToolUse
from tests.standins.deepgram import DeepgramStandIn, tone
from tests.standins.google_calendar import GoogleCalendarStandIn
from tests.standins.sentry import SentryStandIn, parse_envelope
from tests.standins.twilio_rest import TwilioRestStandIn
from voice_app.twilio_http import (
    LocalAsyncTwilioHttpClient,
    LocalTwilioHttpClient,
    rewrite_twilio_url,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = "claude-sonnet-4-6"


# Deepgram, straight through the SDK -----------------------------------------------------------


def deepgram_client(dg: DeepgramStandIn) -> AsyncDeepgramClient:
    env = DeepgramClientEnvironment(
        base=dg.rest_url, production=dg.ws_url, agent=dg.ws_url, agent_rest=dg.rest_url
    )
    return AsyncDeepgramClient(api_key="test", environment=env)


async def test_deepgram_finalize_and_close_stream() -> None:
    async with DeepgramStandIn() as dg:
        dg.expect_utterances(["call me back tomorrow"])
        client = deepgram_client(dg)
        async with client.listen.v1.connect(
            model="nova-3", encoding="mulaw", sample_rate=8000, interim_results=True
        ) as socket:
            await socket.send_media(tone(4000, amplitude=8000))  # 0.5 s of voice, no pause
            await socket.send_finalize()
            await socket.send_close_stream()
            messages = [m async for m in socket]
    results = [m for m in messages if isinstance(m, ListenV1Results)]
    final = results[-1]
    assert final.is_final and final.from_finalize and not final.speech_final
    assert final.channel.alternatives[0].transcript == "call me back tomorrow"
    assert [w.word for w in final.channel.alternatives[0].words][:2] == ["call", "me"]
    assert isinstance(messages[-1], ListenV1Metadata) and messages[-1].duration == 0.5
    assert dg.listen_connections[0].close_code == 1000


async def test_deepgram_stall_then_resume_and_latency() -> None:
    async with (
        DeepgramStandIn(latency=0.1) as dg,
        deepgram_client(dg).listen.v1.connect(
            model="nova-3", encoding="mulaw", sample_rate=8000, endpointing=300
        ) as socket,
    ):
        dg.stall()
        started = time.monotonic()
        await socket.send_media(tone(4000, amplitude=8000) + b"\xff" * 4000)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.25):
                await socket.recv()
        dg.resume()
        message = await socket.recv()
        assert isinstance(message, ListenV1Results) and message.speech_final
        assert message.channel.alternatives[0].transcript == "hello"  # the fallback
        assert time.monotonic() - started >= 0.25


async def test_deepgram_tts_faults() -> None:
    async with DeepgramStandIn() as dg:
        async with deepgram_client(dg).speak.v1.connect(
            model="aura-2-thalia-en", encoding="mulaw", sample_rate=8000
        ) as socket:
            dg.fail_next_reply("stall")
            await socket.send_text(SpeakV1Text(type="Speak", text="Nothing comes back."))
            await socket.send_flush()
            assert (await socket.recv()).type == "Metadata"
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await socket.recv()
            dg.fail_next_reply("error")
            await socket.send_text(SpeakV1Text(type="Speak", text="Half of this."))
            await socket.send_flush()
            audio = b""
            with pytest.raises(ConnectionClosedError):  # the SDK's iterator raises on 1011
                async for message in socket:
                    if isinstance(message, bytes):
                        audio += message
        assert 0 < len(audio) < len("Half of this.") * 480
        assert dg.speak_connections[0].close_code == 1011
        assert dg.speak_connections[0].types_sent[-1] == "Error"


async def test_deepgram_rest_speak_and_rejected_handshake() -> None:
    async with DeepgramStandIn() as dg:
        client = deepgram_client(dg)
        chunks = [
            chunk
            async for chunk in client.speak.v1.audio.generate(
                text="Hi there",
                model="aura-2-thalia-en",
                encoding="mulaw",
                sample_rate=8000,
                container="none",
            )
        ]
        assert len(b"".join(chunks)) == len("Hi there") * 480
        assert dg.rest_requests[0]["query"]["container"] == "none"

        from deepgram.core.api_error import ApiError

        dg.reject_next(429)
        with pytest.raises(ApiError) as failure:
            async with client.listen.v1.connect(model="nova-3"):
                pass
        assert failure.value.status_code == 429


async def test_standin_runs_as_a_process() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.standins.deepgram",
        "--port",
        "0",
        "--ms-per-char",
        "10",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        ws = url.replace("http://", "ws://")
        env = DeepgramClientEnvironment(base=url, production=ws, agent=ws, agent_rest=url)
        client = AsyncDeepgramClient(api_key="any", environment=env)
        async with client.speak.v1.connect(
            model="aura-2-thalia-en", encoding="mulaw", sample_rate=8000
        ) as socket:
            await socket.send_text(SpeakV1Text(type="Speak", text="abc"))
            await socket.send_flush()
            size = 0
            async for message in socket:
                if isinstance(message, bytes):
                    size += len(message)
                elif message.type == "Flushed":
                    break
        assert size == 3 * 80
    finally:
        process.terminate()
        await process.wait()


# Anthropic ----------------------------------------------------------------------------------


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicStandIn]:
    async with AnthropicStandIn(api_key="sk-test") as standin:
        yield standin


def anthropic_client(claude: AnthropicStandIn, **options: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=claude.url, api_key="sk-test", max_retries=0, **options
    )


TOOLS: Any = [
    {
        "name": "list_todos",
        "description": "The caller's todos.",
        "input_schema": {"type": "object", "properties": {"status": {"type": "string"}}},
        "cache_control": {"type": "ephemeral"},
    }
]
SYSTEM: Any = [
    {"type": "text", "text": "You are a phone assistant.", "cache_control": {"type": "ephemeral"}}
]


async def test_anthropic_streams_text_and_tool_use(claude: AnthropicStandIn) -> None:
    claude.reply("Let me look.", ToolUse("list_todos", {"status": "open"}, id="toolu_1"))

    def after_tool(request: dict[str, Any]) -> ScriptedReply:
        result = request["messages"][-1]["content"][0]
        assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1"
        return ScriptedReply([Text(f"You have: {result['content']}.")])

    claude.responder = after_tool
    client = anthropic_client(claude)
    messages: list[Any] = [{"role": "user", "content": "What's on my list?"}]
    async with client.messages.stream(
        model=MODEL, max_tokens=256, system=SYSTEM, tools=TOOLS, messages=messages
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"text", "input_json", "content_block_stop", "message_delta"} <= set(kinds)
    tool = final.content[1]
    assert (
        tool.type == "tool_use" and tool.name == "list_todos" and tool.input == {"status": "open"}
    )
    assert final.usage.cache_creation_input_tokens

    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in final.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "buy milk"}],
        },
    ]
    async with client.messages.stream(
        model=MODEL, max_tokens=256, system=SYSTEM, tools=TOOLS, messages=messages
    ) as stream:
        text = "".join([chunk async for chunk in stream.text_stream])
        second = await stream.get_final_message()
    assert text == "You have: buy milk." and second.stop_reason == "end_turn"
    assert second.usage.cache_read_input_tokens  # same cached prefix

    first_request = claude.requests[0]
    assert first_request.headers["Authorization"] == "Bearer sk-test"
    assert claude.messages[0]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert claude.messages[0]["tools"][0]["name"] == "list_todos"
    assert claude.messages[0]["stream"] is True


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("overloaded", anthropic.OverloadedError, 529),
        ("rate_limit", anthropic.RateLimitError, 429),
        ("server_error", anthropic.InternalServerError, 500),
    ],
)
async def test_anthropic_error_statuses(
    claude: AnthropicStandIn, fault: str, error: type[Exception], status: int
) -> None:
    claude.fail_next(fault)
    with pytest.raises(error) as failure:
        async with anthropic_client(claude).messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            await stream.get_final_message()
    assert isinstance(failure.value, anthropic.APIStatusError)
    assert failure.value.status_code == status
    if fault == "rate_limit":
        assert failure.value.response.headers["retry-after"] == "1"
    # The next request is fine again.
    reply = await anthropic_client(claude).messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "OK."


async def test_anthropic_stream_faults(claude: AnthropicStandIn) -> None:
    client = anthropic_client(claude)
    hello: Any = [{"role": "user", "content": "hi"}]

    async def run(**options: Any) -> None:
        async with client.with_options(**options).messages.stream(
            model=MODEL, max_tokens=64, messages=hello
        ) as stream:
            await stream.get_final_message()

    claude.fail_next("malformed_tool_json")
    claude.reply(ToolUse("list_todos", {"status": "open"}))
    with pytest.raises(ValueError, match="Unable to parse tool parameter JSON"):
        await run()

    claude.fail_next("error_event")  # an SSE `error` event after a 200
    claude.reply("Two words and more")
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        await run()

    claude.fail_next("drop")  # the connection dies mid-stream
    claude.reply("Two words and more")
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        await run()

    claude.fail_next("hang")  # never answers
    with pytest.raises(anthropic.APITimeoutError):
        await run(timeout=0.2)

    claude.fail_next("stall")  # headers and a token, then nothing
    claude.reply("Two words and more")
    with pytest.raises((anthropic.APITimeoutError, httpx2.ReadTimeout)):
        await run(timeout=0.2)


async def test_anthropic_timing_auth_and_plain_json() -> None:
    async with AnthropicStandIn(api_key="sk-test", ttft=0.1, tokens_per_second=100) as claude:
        claude.reply("one two three four five")
        started = time.monotonic()
        async with anthropic_client(claude).messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "count"}]
        ) as stream:
            first = None
            async for _ in stream.text_stream:
                first = first or time.monotonic() - started
        total = time.monotonic() - started
        assert first is not None and 0.1 <= first < total
        assert total >= 0.1 + 4 / 100

        bad = anthropic.AsyncAnthropic(base_url=claude.url, api_key="wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            await bad.messages.create(model=MODEL, max_tokens=5, messages=[])

        async with httpx.AsyncClient() as http:  # the older x-api-key header, no stream
            response = await http.post(
                claude.url + "/v1/messages",
                headers={"x-api-key": "sk-test", "anthropic-version": "2023-06-01"},
                json={
                    "model": MODEL,
                    "max_tokens": 2,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            )
        body = response.json()
        assert response.status_code == 200 and body["type"] == "message"
        assert body["stop_reason"] == "max_tokens" or body["content"][0]["text"] == "OK."


# Twilio REST --------------------------------------------------------------------------------

ACCOUNT = "AC" + "0" * 31 + "1"
TOKEN = "test-auth-token"
CALL = "CA" + "1" * 32


def test_rewrite_twilio_url() -> None:
    local = "http://127.0.0.1:9/"
    assert (
        rewrite_twilio_url("https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json", local)
        == "http://127.0.0.1:9/2010-04-01/Accounts/AC1/Calls.json"
    )
    assert rewrite_twilio_url("https://api.dublin.ie1.twilio.com/x", local) == local + "x"
    assert rewrite_twilio_url("https://example.com/x", local) == "https://example.com/x"


async def test_twilio_update_async_is_recorded() -> None:
    async with TwilioRestStandIn(account_sid=ACCOUNT, auth_token=TOKEN) as twilio:
        http = LocalAsyncTwilioHttpClient(twilio.url)
        client = Client(ACCOUNT, TOKEN, http_client=http)
        twiml = "<Response><Dial><Sip>sip:2001@pbx.local?X-Call-Context=t</Sip></Dial></Response>"
        call = await client.calls(CALL).update_async(twiml=twiml)
        assert call.sid == CALL and call.status == "in-progress"
        assert twilio.updates == [(CALL, {"Twiml": twiml})]

        ended = await client.calls(CALL).update_async(status="completed")
        assert ended.status == "completed"
        with pytest.raises(TwilioRestException) as refused:
            await client.calls(CALL).update_async(twiml="<Response/>")
        assert (refused.value.status, refused.value.code) == (400, 21220)

        twilio.fail_next(503)
        with pytest.raises(TwilioRestException) as unavailable:
            await client.calls(CALL).fetch_async()
        assert unavailable.value.status == 503

        wrong = Client(ACCOUNT, "wrong-token", http_client=http)
        with pytest.raises(TwilioRestException) as denied:
            await wrong.calls(CALL).fetch_async()
        assert (denied.value.status, denied.value.code) == (401, 20003)
        await http.close()

        sync = Client(ACCOUNT, TOKEN, http_client=LocalTwilioHttpClient(twilio.url))
        created = await asyncio.to_thread(
            sync.calls.create, to="+15005550001", from_="+15005550006", twiml="<Response/>"
        )
        assert created.status == "queued" and created.sid in twilio.calls


# Sentry -------------------------------------------------------------------------------------


async def test_sentry_receives_events_and_transactions() -> None:
    async with SentryStandIn() as sentry:
        sentry_sdk.init(
            dsn=sentry.dsn(),
            traces_sample_rate=1.0,
            default_integrations=False,
            auto_enabling_integrations=False,
        )
        try:
            sentry_sdk.capture_message("caller hung up during PIN")
            with sentry_sdk.start_transaction(op="call", name="call.session"):
                with sentry_sdk.start_span(op="stt", name="transcribe"):
                    pass
                with sentry_sdk.start_span(op="llm", name="agent.turn"):
                    pass
            await asyncio.to_thread(sentry_sdk.flush, 2.0)
            events = await sentry.wait_for_events(1)
            transactions = await sentry.wait_for_transactions(1)
        finally:
            await asyncio.to_thread(sentry_sdk.get_client().close, 1.0)
    assert events[0]["message"] == "caller hung up during PIN"
    assert transactions[0]["transaction"] == "call.session"
    assert [span["op"] for span in transactions[0]["spans"]] == ["stt", "llm"]
    assert sentry.envelopes[0].project_id == "1"
    assert "sentry_key=public" in sentry.envelopes[0].auth
    assert sentry.requests[0].headers.get("Content-Encoding") == "gzip"


def test_envelope_parser_handles_length_and_newline_items() -> None:
    body = b'{"event_id":"e1"}\n{"type":"event","length":7}\n{"a":1}\n{"type":"session"}\n{"b":2}\n'
    headers, items = parse_envelope(body)
    assert headers == {"event_id": "e1"}
    assert [(i.type, i.json()) for i in items] == [("event", {"a": 1}), ("session", {"b": 2})]


# Google Calendar ----------------------------------------------------------------------------


async def test_google_oauth_and_calendar_crud() -> None:
    async with GoogleCalendarStandIn(client_id="cid", client_secret="secret") as google:
        calendar = google.url + "/calendar/v3/calendars/primary"
        async with httpx.AsyncClient() as http:
            consent = await http.get(
                google.url + "/o/oauth2/v2/auth",
                params={
                    "client_id": "cid",
                    "redirect_uri": "http://127.0.0.1:1/cb",
                    "response_type": "code",
                    "scope": "calendar",
                    "state": "s1",
                    "access_type": "offline",
                    "login_hint": "ann@example.com",
                },
            )
            assert consent.status_code == 302
            back = parse_qs(urlsplit(consent.headers["location"]).query)
            assert back["state"] == ["s1"]
            tokens = (
                await http.post(
                    google.url + "/token",
                    data={
                        "grant_type": "authorization_code",
                        "code": back["code"][0],
                        "redirect_uri": "http://127.0.0.1:1/cb",
                        "client_id": "cid",
                        "client_secret": "secret",
                    },
                )
            ).json()
            auth = {"Authorization": f"Bearer {tokens['access_token']}"}

            created = await http.post(
                calendar + "/events",
                headers=auth,
                json={
                    "summary": "Dentist",
                    "start": {"dateTime": "2030-05-01T10:00:00Z"},
                    "end": {"dateTime": "2030-05-01T11:00:00Z"},
                },
            )
            event = created.json()
            assert created.status_code == 200 and event["status"] == "confirmed"
            google.add_event(
                "ann@example.com",
                {
                    "summary": "Gym",
                    "start": {"dateTime": "2030-05-01T08:00:00Z"},
                    "end": {"dateTime": "2030-05-01T09:00:00Z"},
                },
            )

            listed = await http.get(
                calendar + "/events",
                headers=auth,
                params={
                    "timeMin": "2030-05-01T00:00:00Z",
                    "timeMax": "2030-05-02T00:00:00Z",
                    "singleEvents": "true",
                    "orderBy": "startTime",
                },
            )
            assert [e["summary"] for e in listed.json()["items"]] == ["Gym", "Dentist"]
            found = await http.get(calendar + "/events", headers=auth, params={"q": "dent"})
            assert [e["id"] for e in found.json()["items"]] == [event["id"]]

            patched = await http.patch(
                f"{calendar}/events/{event['id']}", headers=auth, json={"location": "Main St"}
            )
            assert patched.json()["location"] == "Main St"
            assert patched.json()["summary"] == "Dentist"

            busy = await http.post(
                google.url + "/calendar/v3/freeBusy",
                headers=auth,
                json={
                    "timeMin": "2030-05-01T00:00:00Z",
                    "timeMax": "2030-05-02T00:00:00Z",
                    "items": [{"id": "primary"}],
                },
            )
            assert len(busy.json()["calendars"]["primary"]["busy"]) == 2

            google.expire_tokens()
            expired = await http.get(calendar + "/events", headers=auth)
            assert expired.status_code == 401
            assert expired.json()["error"]["status"] == "UNAUTHENTICATED"
            refreshed = (
                await http.post(
                    google.url + "/token",
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": tokens["refresh_token"],
                        "client_id": "cid",
                        "client_secret": "secret",
                    },
                )
            ).json()
            auth = {"Authorization": f"Bearer {refreshed['access_token']}"}
            assert "refresh_token" not in refreshed

            deleted = await http.delete(f"{calendar}/events/{event['id']}", headers=auth)
            assert deleted.status_code == 204
            again = await http.delete(f"{calendar}/events/{event['id']}", headers=auth)
            assert again.status_code == 410
            assert [e["summary"] for e in google.events("ann@example.com")] == ["Gym"]

            google.revoke_refresh_tokens()
            revoked = await http.post(
                google.url + "/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": tokens["refresh_token"],
                    "client_id": "cid",
                    "client_secret": "secret",
                },
            )
            assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"

            google.fail_next(503)
            unavailable = await http.get(calendar + "/events", headers=auth)
            assert unavailable.status_code == 503
            await wait_for(lambda: len(google.requests) >= 12)
