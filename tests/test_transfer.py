"""Transfer to a person: the TwiML, the REST update (against the local Twilio stand-in), the
`<Dial action>` outcomes (signed webhooks, real PostgreSQL and Redis) and the PBX availability
checks (a fake FreeSWITCH event socket and a local HTTP server)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from quart import Quart
from twilio.request_validator import RequestValidator

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
from tests.standins.twilio_rest import TwilioRestStandIn
from voice_app.agent.base import CallContext
from voice_app.app import create_app
from voice_app.config import Settings
from voice_app.db import calls, users
from voice_app.db.pool import Database
from voice_app.state import keys
from voice_app.state.store import StateStore
from voice_app.transfer import availability, twiml
from voice_app.transfer.service import (
    SAY_FAILED,
    SAY_NO_CALLBACK,
    SAY_NOBODY,
    SAY_NOT_ON_PHONE,
    TransferService,
    make_twilio_client,
)

# --- the TwiML (pure) ---------------------------------------------------------------------------


def test_transfer_twiml_is_exact_escaped_and_encoded() -> None:
    body = twiml.transfer_twiml(
        public_base_url="https://voice.example.test/",
        extension="2001",
        domain="pbx.example.com",
        context_token="tok-EN_123",
        caller_id="+15005550001",
        username="twilio",
        password="p&ss<w>rd",
    )
    assert body == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Dial action="https://voice.example.test/twiml/transfer-done" answerOnBridge="true"'
        ' method="POST" timeout="20">'
        '<Sip password="p&amp;ss&lt;w&gt;rd" username="twilio">'
        "sip:2001@pbx.example.com;transport=tls?X-Call-Context=tok-EN_123"
        "&amp;X-Caller-Id=%2B15005550001</Sip></Dial></Response>"
    )


def test_transfer_twiml_without_credentials_or_caller_id() -> None:
    body = twiml.transfer_twiml(
        public_base_url="https://v.test", extension="2001", domain="pbx:5061", context_token="t"
    )
    assert "<Sip>sip:2001@pbx:5061;transport=tls?X-Call-Context=t</Sip>" in body
    assert "username" not in body and "X-Caller-Id" not in body


def test_header_values_are_percent_encoded() -> None:
    assert twiml.sip_headers({"X-A": "a b&c=d/é"}) == "X-A=a%20b%26c%3Dd%2F%C3%A9"


@pytest.mark.parametrize("name", ["X-Twilio-Context", "x-twilio", "Call-Context", "X-", "X-a b"])
def test_header_names_twilio_refuses_are_refused_here(name: str) -> None:
    with pytest.raises(twiml.SipHeaderError):
        twiml.sip_headers({name: "v"})


def test_headers_part_stays_under_1024_characters() -> None:
    prefix = len("X-Call-Context=")
    assert len(twiml.sip_headers({"X-Call-Context": "a" * (1023 - prefix)})) == 1023
    with pytest.raises(twiml.SipHeaderError, match="under 1024"):
        twiml.sip_headers({"X-Call-Context": "a" * (1024 - prefix)})


@pytest.mark.parametrize(
    ("dial", "call", "outcome"),
    [
        ("completed", "in-progress", twiml.DialOutcome.CONNECTED),
        ("answered", "in-progress", twiml.DialOutcome.CONNECTED),
        ("busy", "in-progress", twiml.DialOutcome.MISSED),
        ("no-answer", "in-progress", twiml.DialOutcome.MISSED),
        ("failed", "in-progress", twiml.DialOutcome.MISSED),
        ("canceled", "in-progress", twiml.DialOutcome.MISSED),
        ("no-answer", "completed", twiml.DialOutcome.CALLER_GONE),
    ],
)
def test_dial_outcome(dial: str, call: str, outcome: twiml.DialOutcome) -> None:
    assert twiml.dial_outcome(dial, call) is outcome


# --- fixtures -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Caller:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    name: str
    phone: str

    def call(self, call_sid: str | None = None, **changes: Any) -> CallContext:
        base = CallContext(
            tenant_id=str(self.tenant_id),
            user_id=str(self.user_id),
            call_sid=call_sid or "CA" + uuid.uuid4().hex,
            display_name=self.name,
            caller_number=self.phone,
        )
        return dataclasses.replace(base, **changes)


@pytest.fixture
async def caller(owner_conn: asyncpg.Connection) -> Caller:
    slug = f"xfer-{uuid.uuid4().hex[:10]}"
    tenant_id = await users.create_tenant(owner_conn, slug, "Transfer & Co")
    user = await users.create_user(
        owner_conn,
        tenant_id,
        account_number=str(uuid.uuid4().int)[:10],
        display_name="Ada Lovelace",
        pin_hash="x",
        phone_e164="+15005550001",
    )
    return Caller(tenant_id, user.id, "Ada Lovelace", "+15005550001")


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioRestStandIn]:
    async with TwilioRestStandIn(
        account_sid=TWILIO_ACCOUNT_SID, auth_token=TWILIO_AUTH_TOKEN
    ) as standin:
        yield standin


@pytest.fixture
def xfer_settings(settings: Settings, twilio: TwilioRestStandIn) -> Settings:
    return dataclasses.replace(
        settings,
        twilio_api_base_url=twilio.url,
        pbx_sip_domain="pbx.example.com",
        agent_extension="2001",
    )


Availability = Callable[[], Awaitable[bool | None]]


@pytest.fixture
async def make_service(
    xfer_settings: Settings, state: StateStore, db: Database
) -> AsyncIterator[Callable[..., TransferService]]:
    made: list[TransferService] = []

    def make(*, available: bool | None = None) -> TransferService:
        async def ask() -> bool | None:
            return available

        service = TransferService(
            xfer_settings, state, db, make_twilio_client(xfer_settings), availability=ask
        )
        made.append(service)
        return service

    yield make
    for service in made:
        await service.aclose()


async def callback_todos(owner: asyncpg.Connection, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    return await owner.fetch(
        "SELECT t.title, t.notes, t.priority, tm.name AS team FROM todos t "
        "JOIN teams tm ON tm.id = t.team_id WHERE t.tenant_id = $1 AND tm.name = 'Agents'",
        tenant_id,
    )


# --- starting a transfer ------------------------------------------------------------------------


async def test_start_publishes_the_card_then_updates_the_call_once(
    make_service: Callable[..., TransferService],
    twilio: TwilioRestStandIn,
    state: StateStore,
    caller: Caller,
    owner_conn: asyncpg.Connection,
) -> None:
    call = caller.call()
    await calls.add_message(owner_conn, caller.tenant_id, call.call_sid, "user", "I want a human")
    await calls.add_message(owner_conn, caller.tenant_id, call.call_sid, "assistant", "Sure.")
    twilio.latency = 0.3  # the REST call is slow: the card must arrive while it is pending
    pushed: list[tuple[dict[str, Any], int]] = []

    async def listen() -> None:
        async for message in state.subscribe(keys.console_channel(str(caller.tenant_id))):
            pushed.append((message, len(twilio.updates)))
            return

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.1)  # subscribed
    result = await make_service().start(call, "  wants to dispute\n an invoice ")
    await asyncio.wait_for(listener, 2)

    assert result.status == "dialing" and result.say is None and result.handed_over
    token = result.token
    assert token
    # Exactly one REST update, carrying exactly the TwiML the builder makes for this token.
    assert twilio.updates == [
        (
            call.call_sid,
            {
                "Twiml": twiml.transfer_twiml(
                    public_base_url="https://voice.example.test",
                    extension="2001",
                    domain="pbx.example.com",
                    context_token=token,
                    caller_id="+15005550001",
                )
            },
        )
    ]
    # The card went out before the update reached Twilio.
    (message, updates_then), = pushed
    assert updates_then == 0
    assert message["type"] == "transfer" and message["token"] == token
    card = message["card"]
    assert card["caller"] == {
        "name": "Ada Lovelace",
        "account": card["caller"]["account"],
        "phone": "+15005550001",
        "timezone": "UTC",
    }
    assert card["reason"] == "wants to dispute an invoice"
    assert [line["text"] for line in card["conversation"]] == ["I want a human", "Sure."]
    assert card["tenant"]["name"] == "Transfer & Co"
    # The token maps to the call for 15 minutes; the call's stream end is now expected.
    context = await state.get_token(keys.console_context(token))
    assert context is not None and context["call_sid"] == call.call_sid
    assert 14 * 60 < await state.redis.ttl(keys.console_context(token)) <= 15 * 60
    call_state = await state.get_call_state(call.call_sid)
    assert call_state["transfer"] == "dialing" and call_state["console_token"] == token


async def test_a_second_request_is_answered_not_repeated(
    make_service: Callable[..., TransferService], twilio: TwilioRestStandIn, caller: Caller
) -> None:
    service, call = make_service(), caller.call()
    twilio.latency = 0.2
    first, second = await asyncio.gather(
        service.start(call, "asked for a person"), service.start(call, "asked again")
    )
    assert sorted([first.status, second.status]) == ["already_transferring", "dialing"]
    third = await service.start(call, "and again")
    assert third.status == "already_transferring" and third.handed_over
    assert len(twilio.updates) == 1


async def test_rest_failure_is_spoken_and_the_flag_cleared(
    make_service: Callable[..., TransferService],
    twilio: TwilioRestStandIn,
    state: StateStore,
    caller: Caller,
    owner_conn: asyncpg.Connection,
) -> None:
    service, call = make_service(), caller.call()
    twilio.fail_next(500)
    result = await service.start(call, "billing question")
    assert result.status == "failed" and result.say == SAY_FAILED and not result.handed_over
    call_state = await state.get_call_state(call.call_sid)
    assert "transfer" not in call_state and "transfer_in_flight" not in call_state
    assert await state.get_token(keys.console_context(result.token or "none")) is None
    todos = await callback_todos(owner_conn, caller.tenant_id)
    assert [t["title"] for t in todos] == ["Call back Ada Lovelace on +15005550001"]
    assert "billing question" in todos[0]["notes"] and todos[0]["priority"] == "high"
    # Cleared: a later request really dials.
    retry = await service.start(call, "billing question")
    assert retry.status == "dialing"
    assert len(twilio.requests) == 2 and len(twilio.updates) == 1  # refused, then the retry


async def test_an_unanswering_twilio_is_a_failure_within_budget(
    make_service: Callable[..., TransferService],
    twilio: TwilioRestStandIn,
    caller: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("voice_app.transfer.service.REST_TIMEOUT_SECONDS", 0.3)
    twilio.hang_next()
    result = await make_service().start(caller.call(), "needs help")
    assert result.status == "failed" and result.say == SAY_FAILED


@pytest.mark.parametrize(
    "changes", [{"channel": "local", "call_sid": "LC" + "1" * 32}, {"channel": "simulator"}]
)
async def test_calls_not_on_twilio_get_a_callback(
    make_service: Callable[..., TransferService],
    twilio: TwilioRestStandIn,
    caller: Caller,
    owner_conn: asyncpg.Connection,
    changes: dict[str, Any],
) -> None:
    result = await make_service().start(caller.call(**changes), "wants a person")
    assert result.status == "callback" and result.say == SAY_NOT_ON_PHONE
    assert twilio.updates == []
    assert len(await callback_todos(owner_conn, caller.tenant_id)) == 1


async def test_no_registered_agent_means_a_callback_not_a_ring(
    make_service: Callable[..., TransferService],
    twilio: TwilioRestStandIn,
    state: StateStore,
    caller: Caller,
    owner_conn: asyncpg.Connection,
) -> None:
    call = caller.call()
    result = await make_service(available=False).start(call, "wants a person")
    assert result.status == "callback" and result.say == SAY_NOBODY
    assert twilio.updates == []
    assert "transfer_in_flight" not in await state.get_call_state(call.call_sid)
    assert len(await callback_todos(owner_conn, caller.tenant_id)) == 1


async def test_no_callback_promised_when_none_could_be_noted(
    make_service: Callable[..., TransferService], caller: Caller
) -> None:
    ghost = caller.call(user_id=str(uuid.uuid4()))  # no such user: the todo cannot be written
    result = await make_service(available=False).start(ghost, "wants a person")
    assert result.status == "callback" and result.say == SAY_NO_CALLBACK


# --- the <Dial action> webhook ------------------------------------------------------------------


@pytest.fixture
async def app(xfer_settings: Settings) -> AsyncIterator[Quart]:
    application = create_app(xfer_settings)
    async with application.test_app():
        yield application


async def bound_call(state: StateStore, caller: Caller, owner: asyncpg.Connection) -> str:
    """A call as the PIN step leaves it (call row, call session, call state), then dialing."""
    call_sid = "CA" + uuid.uuid4().hex
    await calls.claim_call(owner, call_sid, caller.tenant_id, caller.user_id, "pstn")
    session = await state.create_session(
        kind="call", tenant_id=str(caller.tenant_id), subject_id=str(caller.user_id),
        ttl_seconds=600, call_sid=call_sid, channel="pstn",
    )
    await state.set_call_state(
        call_sid, session=session.token, tenant_id=str(caller.tenant_id),
        user_id=str(caller.user_id), channel="pstn", transfer="dialing",
        console_token="ctx-token", transfer_reason="wants a refund", transfer_in_flight="1",
    )
    return call_sid


async def post_signed(
    app: Quart, settings: Settings, form: dict[str, str], *, sign: bool = True
) -> tuple[int, str]:
    path = "/twiml/transfer-done"
    url = settings.public_base_url + path
    signature = RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(url, form) if sign else "x"
    response = await app.test_client().post(
        path, form=form, headers={"X-Twilio-Signature": signature}
    )
    return response.status_code, await response.get_data(as_text=True)


def dial_form(call_sid: str, dial_status: str, call_status: str = "in-progress") -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": TWILIO_ACCOUNT_SID,
        "CallStatus": call_status,
        "DialCallStatus": dial_status,
        "DialCallSid": "CA" + uuid.uuid4().hex,
        "DialSipResponseCode": "200" if dial_status == "completed" else "486",
    }


async def test_unsigned_dial_action_is_refused(
    app: Quart, xfer_settings: Settings, state: StateStore, caller: Caller, owner_conn: Any
) -> None:
    call_sid = await bound_call(state, caller, owner_conn)
    status, _ = await post_signed(app, xfer_settings, dial_form(call_sid, "busy"), sign=False)
    assert status == 403
    assert (await state.get_call_state(call_sid))["transfer"] == "dialing"


async def test_after_talking_to_the_agent_the_caller_hears_goodbye(
    app: Quart, xfer_settings: Settings, state: StateStore, caller: Caller, owner_conn: Any
) -> None:
    call_sid = await bound_call(state, caller, owner_conn)
    status, body = await post_signed(app, xfer_settings, dial_form(call_sid, "completed"))
    assert status == 200
    assert body == twiml.goodbye_twiml()
    assert "<Say" in body and body.endswith("<Hangup /></Response>")
    assert (await state.get_call_state(call_sid))["transfer"] == "connected"
    outcome = await owner_conn.fetchval("SELECT outcome FROM calls WHERE call_sid = $1", call_sid)
    assert outcome == "transferred"
    assert await callback_todos(owner_conn, caller.tenant_id) == []


@pytest.mark.parametrize("dial_status", ["busy", "no-answer", "failed", "canceled"])
async def test_a_missed_agent_brings_the_caller_back_with_a_callback(
    app: Quart,
    xfer_settings: Settings,
    state: StateStore,
    caller: Caller,
    owner_conn: Any,
    dial_status: str,
) -> None:
    call_sid = await bound_call(state, caller, owner_conn)
    session_token = (await state.get_call_state(call_sid))["session"]
    status, body = await post_signed(app, xfer_settings, dial_form(call_sid, dial_status))
    assert status == 200
    assert body == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Say language="en-US">{twiml.AGENT_MISSED}</Say>'
        '<Connect action="https://voice.example.test/twiml/stream-ended" method="POST">'
        '<Stream statusCallback="https://voice.example.test/twiml/stream-status"'
        ' statusCallbackMethod="POST" url="wss://voice.example.test/streams/twilio">'
        f'<Parameter name="session" value="{session_token}" /></Stream></Connect></Response>'
    )
    call_state = await state.get_call_state(call_sid)
    assert call_state["transfer"] == "returned" and "transfer_in_flight" not in call_state
    # Twilio retries webhooks: a replay must not make a second todo.
    await post_signed(app, xfer_settings, dial_form(call_sid, dial_status))
    todos = await callback_todos(owner_conn, caller.tenant_id)
    assert len(todos) == 1
    assert todos[0]["title"] == "Call back Ada Lovelace on +15005550001"
    assert "wants a refund" in todos[0]["notes"] and dial_status in todos[0]["notes"]


async def test_a_caller_who_hung_up_while_ringing_gets_a_callback_only(
    app: Quart, xfer_settings: Settings, state: StateStore, caller: Caller, owner_conn: Any
) -> None:
    call_sid = await bound_call(state, caller, owner_conn)
    form = dial_form(call_sid, "no-answer", call_status="completed")
    status, body = await post_signed(app, xfer_settings, form)
    assert status == 200 and "<Connect" not in body
    assert len(await callback_todos(owner_conn, caller.tenant_id)) == 1


async def test_with_the_call_session_gone_the_caller_is_told_and_let_go(
    app: Quart, xfer_settings: Settings, state: StateStore, caller: Caller, owner_conn: Any
) -> None:
    call_sid = await bound_call(state, caller, owner_conn)
    await state.end_session((await state.get_call_state(call_sid))["session"])
    status, body = await post_signed(app, xfer_settings, dial_form(call_sid, "busy"))
    assert status == 200
    assert body == twiml.goodbye_twiml(twiml.AGENT_MISSED + " Goodbye.")


# --- availability: FreeSWITCH's event socket ------------------------------------------------------

REGISTERED = """Registrations:
=================================================================================================
Call-ID:        5f7a9c
User:           2001@pbx.example.com
Contact:        "Agent" <sip:k3j2@df7jal23ls0d.invalid;transport=ws;fs_nat=yes>
Agent:          agent-console (JsSIP 3.13.8)
Status:         Registered(WSS-NAT)(unknown) EXP(2026-01-01 10:00:00) EXPSECS(280)
Ping-Status:    Reachable
Ping-Time:      0.00
Host:           pbx
IP:             203.0.113.7
Port:           51234
Auth-User:      2001
Auth-Realm:     pbx.example.com
MWI-Account:    2001@pbx.example.com

Total items returned: 1
=================================================================================================
"""
ONLY_20010 = REGISTERED.replace("User:           2001@", "User:           20010@")
NONE_REGISTERED = "Registrations:\n" + "=" * 97 + "\n\nTotal items returned: 0\n" + "=" * 97 + "\n"


class FakeEventSocket:
    """FreeSWITCH's inbound event socket, as far as `auth` and `api` go, with its framing."""

    def __init__(self, reply: str, password: str = "ClueCon", *, stall: bool = False) -> None:
        self.reply, self.password, self.stall = reply, password, stall
        self.commands: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()

    async def __aenter__(self) -> FakeEventSocket:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._closing.set()
        if self._handlers:  # let each conversation finish (so `commands` is complete)
            await asyncio.wait(self._handlers, timeout=3)

    async def _command(self, reader: asyncio.StreamReader) -> str:
        lines = []
        while (line := (await reader.readline()).decode()) not in ("\n", ""):
            lines.append(line.rstrip("\n"))
        return "\n".join(lines)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.append(task)
        try:
            writer.write(b"Content-Type: auth/request\n\n")
            if self.stall:  # say hello, then nothing until the test is over
                await self._closing.wait()
                return
            command = await self._command(reader)
            self.commands.append(command)
            if command != f"auth {self.password}":
                writer.write(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n")
                return
            writer.write(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
            command = await self._command(reader)
            self.commands.append(command)
            body = self.reply.encode()
            writer.write(
                b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(body), body)
            )
            await writer.drain()
            self.commands.append(await self._command(reader))  # exit
            writer.write(b"Content-Type: command/reply\nReply-Text: +OK bye\n\n")
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()


def esl_settings(settings: Settings, port: int, password: str = "ClueCon") -> Settings:
    return dataclasses.replace(
        settings,
        pbx_event_socket=f"127.0.0.1:{port}",
        pbx_event_socket_password=password,
        pbx_sip_domain="pbx.example.com",
        agent_extension="2001",
        pbx_availability_url="http://127.0.0.1:9/never-asked",
    )


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (REGISTERED, True),
        (REGISTERED.replace("Reachable", "Unreachable"), False),
        (ONLY_20010, False),
        (REGISTERED.replace("@pbx.example.com", "@other.example.com"), False),
        (NONE_REGISTERED, False),
        ("Invalid Profile!\n", None),
        ("-ERR no reply\n", None),
    ],
)
async def test_event_socket_availability(
    settings: Settings, reply: str, expected: bool | None
) -> None:
    async with FakeEventSocket(reply) as pbx:
        assert await availability.check_agent_availability(esl_settings(settings, pbx.port)) is (
            expected
        )
    assert pbx.commands == [
        "auth ClueCon",
        "api sofia status profile internal reg 2001",
        "exit",
    ]


async def test_event_socket_wrong_password_is_none(settings: Settings) -> None:
    async with FakeEventSocket(REGISTERED) as pbx:
        result = await availability.check_agent_availability(
            esl_settings(settings, pbx.port, password="wrong")
        )
    assert result is None and pbx.commands == ["auth wrong"]


async def test_event_socket_silence_is_none_within_two_seconds(settings: Settings) -> None:
    async with FakeEventSocket(REGISTERED, stall=True) as pbx:
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await availability.check_agent_availability(esl_settings(settings, pbx.port))
        assert result is None and loop.time() - started < 2.5


async def test_event_socket_nobody_listening_is_none(settings: Settings) -> None:
    async with FakeEventSocket(REGISTERED) as pbx:
        port = pbx.port
    assert await availability.check_agent_availability(esl_settings(settings, port)) is None


# --- availability: the HTTP lookup --------------------------------------------------------------


@pytest.fixture
async def pbx_http() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    behaviour: dict[str, Any] = {"status": 200, "body": {"registered": True}, "delay": 0.0}

    async def lookup(request: web.Request) -> web.Response:
        await asyncio.sleep(behaviour["delay"])
        return web.json_response(behaviour["body"], status=behaviour["status"])

    application = web.Application()
    application.router.add_get("/registered/2001", lookup)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/registered/2001", behaviour
    await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "body", "delay", "expected"),
    [
        (200, {"registered": True}, 0, True),
        (200, {"registered": False}, 0, False),
        (200, {"registered": "yes"}, 0, None),
        (200, ["no"], 0, None),
        (500, {"registered": True}, 0, None),
        (200, {"registered": True}, 0.5, None),
    ],
)
async def test_http_availability(
    settings: Settings,
    pbx_http: tuple[str, dict[str, Any]],
    status: int,
    body: Any,
    delay: float,
    expected: bool | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, behaviour = pbx_http
    monkeypatch.setattr(availability, "TIMEOUT_SECONDS", 0.2)  # the 0.5 s answer is too late
    behaviour.update(status=status, body=body, delay=delay)
    configured = dataclasses.replace(settings, pbx_availability_url=url, pbx_event_socket=None)
    assert await availability.check_agent_availability(configured) is expected


async def test_no_pbx_configured_means_cannot_ask(settings: Settings) -> None:
    bare = dataclasses.replace(settings, pbx_availability_url=None, pbx_event_socket=None)
    assert await availability.check_agent_availability(bare) is None
    assert await availability.PbxAvailability(bare).is_available() is None
