"""The Twilio webhooks against the real app, PostgreSQL and Redis, with requests signed exactly as
Twilio signs them (and some that are not)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest
from quart import Response, websocket
from quart.testing import WebsocketResponseError
from twilio.request_validator import RequestValidator

from tests.conftest import TWILIO_AUTH_TOKEN
from voice_app.app import create_app
from voice_app.auth.twilio_signature import websocket_signature_ok
from voice_app.state import keys
from voice_app.twiml import builders

pytest.register_assert_rewrite("tests.edge_fixtures")
from tests.edge_fixtures import (  # noqa: E402
    Tenant,
    call_params,
    new_call_sid,
    snapshot,
    twilio_post,
    twilio_signature,
)

pytest_plugins = ["tests.edge_fixtures"]

BASE = "https://voice.example.test"
URLS = builders.EdgeUrls(BASE, "wss://voice.example.test")


def parse(body: str | bytes) -> ET.Element:
    root = ET.fromstring(body)  # noqa: S314 - our own TwiML
    assert root.tag == "Response"
    return root


def verbs(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


async def xml_of(response) -> ET.Element:
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    return parse(await response.get_data())


def assert_stream(root: ET.Element, token: str | None = None) -> str:
    """The <Connect><Stream> hand-off; returns the session token it carries."""
    connect = root.find("Connect")
    assert connect is not None, ET.tostring(root)
    assert connect.get("action") == f"{BASE}/twiml/stream-ended"
    stream = connect.find("Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.test/streams/twilio"
    assert "?" not in stream.get("url", "")  # Twilio strips query strings
    assert stream.get("statusCallback") == f"{BASE}/twiml/stream-status"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert set(params) == {"session"}
    if token is not None:
        assert params["session"] == token
    return str(params["session"])


def assert_gather(root: ET.Element, action_path: str) -> ET.Element:
    gather = root.find("Gather")
    assert gather is not None, ET.tostring(root)
    assert gather.get("input") == "dtmf speech"
    assert gather.get("action") == f"{BASE}{action_path}"
    assert gather.get("actionOnEmptyResult") == "true"
    assert gather.find("Say") is not None
    return gather


def assert_goodbye(root: ET.Element) -> str:
    assert verbs(root) == ["Say", "Hangup"], ET.tostring(root)
    return root.findtext("Say") or ""


# Pure builders --------------------------------------------------------------------------------


def test_builders_make_parseable_twiml() -> None:
    assert_gather(parse(builders.ask_pin(URLS)), "/twiml/pin")
    assert_gather(parse(builders.ask_account(URLS, attempt=2)), "/twiml/account?attempt=2")
    assert assert_stream(parse(builders.connect_stream(URLS, "tok-1")), "tok-1") == "tok-1"
    assert verbs(parse(builders.empty())) == []
    assert verbs(parse(builders.hang_up())) == ["Hangup"]
    assert "15 minutes" in assert_goodbye(parse(builders.locked_goodbye(15 * 60)))
    assert "1 minutes" in builders.locked_goodbye(5)


@pytest.mark.parametrize(
    ("state", "alive", "decision"),
    [
        ({"transfer": "issued", "phase": "speaking"}, True, builders.AfterStream.NOTHING),
        ({"transfer": "1"}, False, builders.AfterStream.NOTHING),
        ({"transfer": "failed", "phase": "goodbye"}, True, builders.AfterStream.HANG_UP),
        ({"phase": "goodbye"}, True, builders.AfterStream.HANG_UP),
        ({"phase": "listening"}, True, builders.AfterStream.RECONNECT),
        ({"phase": "listening", "reconnects": "1"}, True, builders.AfterStream.RECONNECT),
        ({"phase": "listening", "reconnects": "2"}, True, builders.AfterStream.GIVE_UP),
        ({"reconnects": "junk"}, True, builders.AfterStream.RECONNECT),
        ({}, False, builders.AfterStream.GIVE_UP),
        ({"phase": "busy"}, True, builders.AfterStream.BUSY),
        ({"phase": "busy", "reconnects": "2"}, False, builders.AfterStream.BUSY),
        ({"phase": "busy", "transfer": "issued"}, True, builders.AfterStream.NOTHING),
    ],
)
def test_after_stream_decision(state, alive, decision) -> None:
    assert builders.after_stream(state, session_alive=alive) is decision


def test_after_stream_twiml_for_each_decision() -> None:
    def twiml(decision):
        return parse(builders.after_stream_twiml(decision, URLS, "tok"))

    assert verbs(twiml(builders.AfterStream.NOTHING)) == []
    assert verbs(twiml(builders.AfterStream.HANG_UP)) == ["Hangup"]
    assert_goodbye(twiml(builders.AfterStream.GIVE_UP))
    assert "lines are busy" in assert_goodbye(twiml(builders.AfterStream.BUSY))
    reconnect = twiml(builders.AfterStream.RECONNECT)
    assert verbs(reconnect) == ["Say", "Connect"]
    assert_stream(reconnect, "tok")


# Signatures -----------------------------------------------------------------------------------

WEBHOOKS = [
    "/twiml/voice",
    "/twiml/account?attempt=1",
    "/twiml/pin",
    "/twiml/stream-ended",
    "/twiml/status",
    "/twiml/stream-status",
]


@pytest.mark.parametrize("path", WEBHOOKS)
async def test_unsigned_and_tampered_webhooks_get_403_and_touch_nothing(
    path, client, edge_settings, tenant: Tenant, redis, owner_conn
) -> None:
    call_sid = new_call_sid()
    params = call_params(
        call_sid,
        tenant.admin.phone or "",
        Digits=tenant.admin.pin,
        CallStatus="completed",
        SequenceNumber="3",
        StreamEvent="stream-started",
    )
    await redis.set(keys.pending_account(call_sid), tenant.admin.account_number)
    good = twilio_signature(edge_settings, path, params)
    # What a client could forge: the Host and X-Forwarded-* headers. A signature over the URL
    # those name must not be accepted; only PUBLIC_BASE_URL counts.
    forged_url = f"https://attacker.example{path}"
    forged = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(forged_url, params)
    wrong_key = RequestValidator("not-the-token").compute_signature(f"{BASE}{path}", params)
    before = await snapshot(redis, owner_conn)

    attempts = [
        await client.post(path, form=params),  # no signature at all
        await twilio_post(client, edge_settings, path, params, signature=""),
        await twilio_post(client, edge_settings, path, params, signature=wrong_key),
        await twilio_post(
            client, edge_settings, path, {**params, "Digits": "0000"}, signature=good
        ),  # body changed after signing
        await twilio_post(
            client,
            edge_settings,
            path + ("&x=1" if "?" in path else "?x=1"),
            params,
            signature=good,
        ),  # URL changed after signing
        await twilio_post(
            client,
            edge_settings,
            path,
            params,
            signature=forged,
            headers={
                "Host": "attacker.example",
                "X-Forwarded-Host": "attacker.example",
                "X-Forwarded-Proto": "https",
            },
        ),
    ]
    assert [r.status_code for r in attempts] == [403] * len(attempts)
    assert await snapshot(redis, owner_conn) == before

    # The same request, correctly signed, goes through.
    ok = await twilio_post(client, edge_settings, path, params)
    assert ok.status_code in (200, 204)


async def test_stream_handshake_signature(edge_settings, redis) -> None:
    """Twilio signs the wss:// URL of the stream with no params; checked before accept()."""
    app = create_app(edge_settings)
    counter = "va:test:handshakes"

    @app.websocket("/streams/test-signed")
    async def signed_stream() -> Response | None:
        if not websocket_signature_ok(websocket, edge_settings):
            return Response("forbidden", status=403)
        await redis.incr(counter)  # the "state" an accepted stream touches
        await websocket.accept()
        await websocket.send("hello")
        return None

    await redis.delete(counter)
    url = f"{edge_settings.public_ws_base_url}/streams/test-signed"
    assert urlsplit(url).scheme == "wss"
    validator = RequestValidator(TWILIO_AUTH_TOKEN)
    rejected = {
        "unsigned": {},
        "wrong token": {"X-Twilio-Signature": RequestValidator("x").compute_signature(url, {})},
        "other path": {
            "X-Twilio-Signature": validator.compute_signature(
                f"{edge_settings.public_ws_base_url}/streams/twilio", {}
            )
        },
        "forged host": {
            "X-Twilio-Signature": validator.compute_signature(
                "wss://attacker.example/streams/test-signed", {}
            ),
            "Host": "attacker.example",
        },
        "https not wss": {
            "X-Twilio-Signature": validator.compute_signature(
                f"{edge_settings.public_base_url}/streams/test-signed", {}
            )
        },
    }
    async with app.test_app():
        client = app.test_client()
        for name, headers in rejected.items():
            with pytest.raises(WebsocketResponseError) as refused:
                async with client.websocket("/streams/test-signed", headers=headers) as ws:
                    await ws.receive()
            assert refused.value.response.status_code == 403, name
        assert await redis.get(counter) is None

        headers = {"X-Twilio-Signature": validator.compute_signature(url, {})}
        async with client.websocket("/streams/test-signed", headers=headers) as ws:
            assert await ws.receive() == "hello"
        assert await redis.get(counter) == b"1"
    await redis.delete(counter)


# The incoming call and the PIN ------------------------------------------------------------------


async def start_call(client, settings, caller: str, call_sid: str | None = None):
    call_sid = call_sid or new_call_sid()
    response = await twilio_post(client, settings, "/twiml/voice", call_params(call_sid, caller))
    return call_sid, await xml_of(response)


async def send_pin(client, settings, call_sid: str, caller: str, **heard: str) -> ET.Element:
    params = call_params(call_sid, caller, CallStatus="in-progress", **heard)
    return await xml_of(await twilio_post(client, settings, "/twiml/pin", params))


async def assert_bound(state, owner_conn, call_sid: str, token: str, caller, channel: str) -> None:
    session = await state.get_session(token, kind="call")
    assert session is not None
    assert (session.call_sid, session.channel) == (call_sid, channel)
    assert (session.tenant_id, session.subject_id) == (str(caller.tenant_id), str(caller.user_id))
    row = await owner_conn.fetchrow("SELECT * FROM calls WHERE call_sid = $1", call_sid)
    assert (row["tenant_id"], row["user_id"], row["channel"]) == (
        caller.tenant_id,
        caller.user_id,
        channel,
    )
    call_state = await state.get_call_state(call_sid)
    assert call_state["session"] == token


async def test_caller_id_match_then_right_pin_by_dtmf(
    client, edge_settings, tenant: Tenant, state, owner_conn
) -> None:
    caller = tenant.admin
    call_sid, root = await start_call(client, edge_settings, caller.phone)
    assert_gather(root, "/twiml/pin")  # caller ID suggested the account: straight to the PIN
    root = await send_pin(client, edge_settings, call_sid, caller.phone, Digits=caller.pin)
    token = assert_stream(root)
    await assert_bound(state, owner_conn, call_sid, token, caller, "pstn")
    row = await owner_conn.fetchrow("SELECT * FROM calls WHERE call_sid = $1", call_sid)
    assert row["from_number"] == caller.phone


async def test_spoken_pin_is_normalised(
    client, edge_settings, tenant: Tenant, state, owner_conn
) -> None:
    caller = tenant.admin  # PIN 4826
    call_sid, _ = await start_call(client, edge_settings, caller.phone)
    root = await send_pin(
        client,
        edge_settings,
        call_sid,
        caller.phone,
        SpeechResult="Four eight two six.",
        Confidence="0.91",
    )
    await assert_bound(state, owner_conn, call_sid, assert_stream(root), caller, "pstn")

    other = tenant.member  # PIN 739105, spoken as words
    call_sid, _ = await start_call(client, edge_settings, other.phone)
    root = await send_pin(
        client,
        edge_settings,
        call_sid,
        other.phone,
        SpeechResult="my pin is seven three nine one oh five",
    )
    await assert_bound(state, owner_conn, call_sid, assert_stream(root), other, "pstn")


@pytest.mark.parametrize("known_phone", [False, True])
async def test_unknown_or_shared_caller_id_asks_for_the_account(
    known_phone, client, edge_settings, tenant: Tenant, state, owner_conn
) -> None:
    # An unknown number, or one that several accounts share, cannot pick the account.
    phone = tenant.shared_phone if known_phone else "+15550000000"
    call_sid, root = await start_call(client, edge_settings, phone)
    assert_gather(root, "/twiml/account?attempt=1")

    caller = tenant.member
    params = call_params(call_sid, phone, Digits="")
    root = await xml_of(
        await twilio_post(client, edge_settings, "/twiml/account?attempt=1", params)
    )
    assert_gather(root, "/twiml/account?attempt=2")  # nothing heard: ask again
    params = call_params(call_sid, phone, SpeechResult=" ".join(caller.account_number))
    root = await xml_of(
        await twilio_post(client, edge_settings, "/twiml/account?attempt=2", params)
    )
    assert_gather(root, "/twiml/pin")
    root = await send_pin(client, edge_settings, call_sid, phone, Digits=caller.pin)
    await assert_bound(state, owner_conn, call_sid, assert_stream(root), caller, "pstn")


async def test_account_prompt_gives_up_after_three_tries(client, edge_settings) -> None:
    call_sid, _ = await start_call(client, edge_settings, "+15550000001")
    params = call_params(call_sid, "+15550000001", Digits="12")
    root = await xml_of(
        await twilio_post(client, edge_settings, "/twiml/account?attempt=3", params)
    )
    assert_goodbye(root)


async def test_unknown_account_gets_the_same_pin_prompt(
    client, edge_settings, tenant: Tenant
) -> None:
    """Nothing tells a caller whether an account number exists."""
    answers = []
    for number in (tenant.member.account_number, "987654321012"):
        call_sid, _ = await start_call(client, edge_settings, "+15550000002")
        params = call_params(call_sid, "+15550000002", Digits=number)
        after_account = await twilio_post(client, edge_settings, "/twiml/account?attempt=1", params)
        wrong = call_params(call_sid, "+15550000002", Digits="1357")
        after_pin = await twilio_post(client, edge_settings, "/twiml/pin", wrong)
        answers.append((await after_account.get_data(), await after_pin.get_data()))
    assert answers[0] == answers[1]


async def test_three_wrong_pins_end_the_call(
    client, edge_settings, tenant: Tenant, state, owner_conn
) -> None:
    caller = tenant.member
    call_sid, _ = await start_call(client, edge_settings, caller.phone)
    for _ in range(2):
        root = await send_pin(client, edge_settings, call_sid, caller.phone, Digits="1111")
        gather = assert_gather(root, "/twiml/pin")
        assert gather.findtext("Say") == builders.PIN_WRONG
    root = await send_pin(client, edge_settings, call_sid, caller.phone, Digits="2222")
    assert assert_goodbye(root) == builders.GOODBYE_TOO_MANY
    # No session was made and the call was not bound to anyone.
    assert "session" not in await state.get_call_state(call_sid)
    row = await owner_conn.fetchrow("SELECT * FROM calls WHERE call_sid = $1", call_sid)
    assert row["tenant_id"] is None


async def test_silence_counts_as_a_try_but_not_as_a_failure(
    client, edge_settings, tenant: Tenant, redis
) -> None:
    caller = tenant.member
    call_sid, _ = await start_call(client, edge_settings, caller.phone)
    root = await send_pin(client, edge_settings, call_sid, caller.phone, Digits="", SpeechResult="")
    assert assert_gather(root, "/twiml/pin").findtext("Say") == builders.PIN_NOT_HEARD
    assert await redis.zcard(keys.pin_failures(caller.account_number)) == 0


async def test_browser_call_skips_the_pin(
    client, edge_settings, tenant: Tenant, state, owner_conn
) -> None:
    caller = tenant.member
    call_sid, root = await start_call(client, edge_settings, f"client:{caller.identity}")
    token = assert_stream(root)
    await assert_bound(state, owner_conn, call_sid, token, caller, "browser")


@pytest.mark.parametrize("identity", ["client:someone", "client:t" + "0" * 32 + "_u" + "1" * 32])
async def test_browser_call_from_unknown_identity_is_refused(
    identity, client, edge_settings, state
) -> None:
    call_sid, root = await start_call(client, edge_settings, identity)
    assert assert_goodbye(root) == builders.GOODBYE_UNKNOWN_CLIENT
    assert await state.get_call_state(call_sid) == {}


# After the stream ------------------------------------------------------------------------------


async def test_stream_ended_follows_the_call_state(
    client, edge_settings, tenant: Tenant, state
) -> None:
    caller = tenant.member
    call_sid, root = await start_call(client, edge_settings, f"client:{caller.identity}")
    token = assert_stream(root)
    params = call_params(call_sid, f"client:{caller.identity}", CallStatus="in-progress")

    async def ended() -> ET.Element:
        return await xml_of(await twilio_post(client, edge_settings, "/twiml/stream-ended", params))

    # Dropped unexpectedly: apologise and reconnect the same session, at most twice.
    for count in (1, 2):
        root = await ended()
        assert verbs(root) == ["Say", "Connect"]
        assert_stream(root, token)
        assert (await state.get_call_state(call_sid))["reconnects"] == str(count)
    assert_goodbye(await ended())

    await state.set_call_state(call_sid, reconnects="0", phase="goodbye")
    assert verbs(await ended()) == ["Hangup"]

    await state.set_call_state(call_sid, transfer="issued")
    assert verbs(await ended()) == []


async def test_stream_ended_without_a_live_session_hangs_up(client, edge_settings) -> None:
    call_sid = new_call_sid()
    params = call_params(call_sid, "+15550000003")
    root = await xml_of(await twilio_post(client, edge_settings, "/twiml/stream-ended", params))
    assert_goodbye(root)


# Status callbacks ----------------------------------------------------------------------------


async def test_status_callbacks_record_progress_idempotently(
    client, edge_settings, tenant: Tenant, state, owner_conn
) -> None:
    caller = tenant.admin
    call_sid, _ = await start_call(client, edge_settings, caller.phone)
    await send_pin(client, edge_settings, call_sid, caller.phone, Digits=caller.pin)
    token = (await state.get_call_state(call_sid))["session"]
    t0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    events = [("ringing", 0, None), ("in-progress", 1, None), ("completed", 2, "47")]

    async def post(status: str, sequence: int, duration: str | None) -> None:
        extra = {
            "CallStatus": status,
            "SequenceNumber": str(sequence),
            "Timestamp": format_datetime(t0 + timedelta(seconds=sequence * 10)),
            "CallbackSource": "call-progress-events",
        }
        if duration:
            extra["CallDuration"] = duration
        params = call_params(call_sid, caller.phone, **extra)
        response = await twilio_post(client, edge_settings, "/twiml/status", params)
        assert response.status_code == 204

    # Every callback retried, and the retries arrive out of order.
    for event in events + events[::-1]:
        await post(*event)
    row = await owner_conn.fetchrow("SELECT * FROM calls WHERE call_sid = $1", call_sid)
    assert row["status"] == "completed" and row["outcome"] == "completed"
    assert row["answered_at"] == t0 + timedelta(seconds=10)
    assert row["ended_at"] == t0 + timedelta(seconds=20)
    assert row["duration_s"] == 47
    assert (row["tenant_id"], row["user_id"], row["channel"]) == (
        caller.tenant_id,
        caller.user_id,
        "pstn",
    )
    assert row["from_number"] == caller.phone
    count = await owner_conn.fetchval("SELECT count(*) FROM calls WHERE call_sid = $1", call_sid)
    assert count == 1
    # A finished call's stream token can no longer open a stream.
    assert await state.get_session(token) is None


async def test_stream_status_is_recorded(
    client, edge_settings, tenant: Tenant, state, owner_conn
) -> None:
    caller = tenant.member
    call_sid, _ = await start_call(client, edge_settings, f"client:{caller.identity}")
    base = call_params(
        call_sid,
        f"client:{caller.identity}",
        StreamSid="MZ" + "a" * 32,
        StreamName="stream",
        Timestamp=format_datetime(datetime.now(UTC)),
    )
    for event in ("stream-started", "stream-started", "stream-error", "stream-stopped"):
        params = {**base, "StreamEvent": event}
        if event == "stream-error":
            params["StreamError"] = "31920 handshake failed"
        response = await twilio_post(client, edge_settings, "/twiml/stream-status", params)
        assert response.status_code == 204
    call_state = await state.get_call_state(call_sid)
    assert call_state["stream_event"] == "stream-stopped"
    assert call_state["stream_sid"] == "MZ" + "a" * 32
    row = await owner_conn.fetchrow("SELECT * FROM calls WHERE call_sid = $1", call_sid)
    assert row["answered_at"] is not None and row["channel"] == "browser"
