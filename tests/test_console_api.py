"""The agent console API against real PostgreSQL and Redis: sign-in, who may read a caller card
(same tenant only, only while the token lives), and the card pushed over the event socket."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from quart import Quart
from quart.testing.connections import WebsocketDisconnectError, WebsocketResponseError
from quart.typing import TestClientProtocol as Client

from tests.conftest import TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN
from tests.standins.twilio_rest import TwilioRestStandIn
from voice_app.agent.base import CallContext
from voice_app.app import create_app
from voice_app.auth.secrets import hash_secret
from voice_app.config import Settings
from voice_app.db import calls, users
from voice_app.services import Services
from voice_app.state import keys
from voice_app.transfer.service import transfer_service

BASE = "https://voice.example.test"
JSON_HEADERS = {"X-Requested-With": "test", "Origin": BASE}
PASSWORD = "correct horse battery staple"


@dataclasses.dataclass(frozen=True)
class Desk:
    """A tenant with one agent and one caller."""

    tenant_id: uuid.UUID
    agent_email: str
    caller_id: uuid.UUID


async def make_desk(owner: asyncpg.Connection, name: str) -> Desk:
    slug = f"desk-{uuid.uuid4().hex[:10]}"
    tenant_id = await users.create_tenant(owner, slug, name)
    email = f"agent-{slug}@example.test"
    await owner.execute(
        "INSERT INTO agents (tenant_id, email, display_name, password_hash, extension)"
        " VALUES ($1, $2, $3, $4, '2001')",
        tenant_id, email, f"{name} Agent", hash_secret(PASSWORD),
    )
    user = await users.create_user(
        owner, tenant_id, account_number=str(uuid.uuid4().int)[:10],
        display_name=f"{name} Caller", pin_hash="x", phone_e164="+15005550009",
    )
    await owner.execute(
        "INSERT INTO todos (tenant_id, owner_id, title, priority) VALUES ($1, $2, $3, 'urgent')",
        tenant_id, user.id, "Renew the contract",
    )
    return Desk(tenant_id, email, user.id)


@pytest.fixture
async def desks(owner_conn: asyncpg.Connection) -> tuple[Desk, Desk]:
    return await make_desk(owner_conn, "Acme"), await make_desk(owner_conn, "Globex")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    async with TwilioRestStandIn(
        account_sid=TWILIO_ACCOUNT_SID, auth_token=TWILIO_AUTH_TOKEN
    ) as twilio:
        application = create_app(dataclasses.replace(settings, twilio_api_base_url=twilio.url))
        async with application.test_app():
            yield application


def services_of(app: Quart) -> Services:
    services: Services = app.extensions["services"]
    return services


async def sign_in(client: Client, email: str, password: str = PASSWORD) -> Any:
    return await client.post(
        "/api/console/login", json={"email": email, "password": password}, headers=JSON_HEADERS
    )


async def signed_in(app: Quart, desk: Desk) -> tuple[Client, str]:
    client = app.test_client()
    response = await sign_in(client, desk.agent_email)
    assert response.status_code == 200
    return client, (await response.get_json())["csrf"]


async def transfer(app: Quart, desk: Desk, owner: asyncpg.Connection) -> str:
    """A real transfer (REST update to the stand-in) of a call with some conversation."""
    call_sid = "CA" + uuid.uuid4().hex
    for role, text in (("user", "Can I talk to someone?"), ("assistant", "Of course.")):
        await calls.add_message(owner, desk.tenant_id, call_sid, role, text)
    call = CallContext(
        tenant_id=str(desk.tenant_id), user_id=str(desk.caller_id), call_sid=call_sid,
        caller_number="+15005550009",
    )
    result = await transfer_service(services_of(app)).start(call, "contract renewal")
    assert result.status == "dialing" and result.token
    return result.token


# --- signing in ----------------------------------------------------------------------------------


async def test_sign_in_sets_a_strict_http_only_cookie(app: Quart, desks: tuple[Desk, Desk]) -> None:
    client = app.test_client()
    response = await sign_in(client, desks[0].agent_email.upper())  # e-mail case is ignored
    assert response.status_code == 200
    body = await response.get_json()
    assert body["agent"]["email"] == desks[0].agent_email
    assert body["tenant"]["name"] == "Acme" and body["csrf"]
    assert body["sip"]["extension"] == "2001" and "password" not in str(body["sip"])
    cookie = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        cookie.load(header)
    morsel = cookie["va_console"]
    assert morsel["httponly"] and morsel["secure"] and morsel["samesite"] == "Strict"
    me = await client.get("/api/console/me")
    assert me.status_code == 200 and (await me.get_json())["agent"]["name"] == "Acme Agent"


async def test_wrong_password_and_unknown_email_look_the_same(
    app: Quart, desks: tuple[Desk, Desk]
) -> None:
    client = app.test_client()
    wrong = await sign_in(client, desks[0].agent_email, "nope")
    unknown = await sign_in(client, "nobody@example.test", "nope")
    assert wrong.status_code == unknown.status_code == 401
    assert await wrong.get_json() == await unknown.get_json()
    assert (await client.get("/api/console/me")).status_code == 401


@pytest.mark.parametrize(
    "headers", [{"Origin": BASE}, {"X-Requested-With": "x", "Origin": "https://evil.example"}]
)
async def test_sign_in_needs_the_console_page(
    app: Quart, desks: tuple[Desk, Desk], headers: dict[str, str]
) -> None:
    response = await app.test_client().post(
        "/api/console/login",
        json={"email": desks[0].agent_email, "password": PASSWORD},
        headers=headers,
    )
    assert response.status_code == 403


async def test_repeated_failures_lock_the_sign_in(app: Quart, desks: tuple[Desk, Desk]) -> None:
    client = app.test_client()
    for _ in range(5):
        assert (await sign_in(client, desks[1].agent_email, "guess")).status_code == 401
    locked = await sign_in(client, desks[1].agent_email)  # even the right password, for now
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0


async def test_logout_needs_the_csrf_token(app: Quart, desks: tuple[Desk, Desk]) -> None:
    client, csrf = await signed_in(app, desks[0])
    refused = await client.post("/api/console/logout", headers={"Origin": BASE})
    assert refused.status_code == 403
    done = await client.post("/api/console/logout", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 204
    assert (await client.get("/api/console/me")).status_code == 401


async def test_a_caller_session_is_not_an_agent_session(
    app: Quart, desks: tuple[Desk, Desk]
) -> None:
    state = services_of(app).state
    browser = await state.create_session(
        kind="browser", tenant_id=str(desks[0].tenant_id), subject_id=str(desks[0].caller_id),
        ttl_seconds=60,
    )
    client = app.test_client()
    client.set_cookie("localhost", "va_console", browser.token)
    assert (await client.get("/api/console/me")).status_code == 401


# --- the caller card -----------------------------------------------------------------------------


async def test_the_card_is_for_agents_of_that_tenant_only(
    app: Quart, desks: tuple[Desk, Desk], owner_conn: asyncpg.Connection
) -> None:
    acme, globex = desks
    token = await transfer(app, acme, owner_conn)
    mine, _ = await signed_in(app, acme)
    response = await mine.get(f"/api/console/context/{token}")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    card = await response.get_json()
    assert card["caller"]["name"] == "Acme Caller" and card["caller"]["phone"] == "+15005550009"
    assert card["tenant"]["name"] == "Acme" and card["reason"] == "contract renewal"
    assert [(c["speaker"], c["text"]) for c in card["conversation"]] == [
        ("caller", "Can I talk to someone?"),
        ("assistant", "Of course."),
    ]
    assert [t["title"] for t in card["open_todos"]] == ["Renew the contract"]

    theirs, _ = await signed_in(app, globex)
    foreign = await theirs.get(f"/api/console/context/{token}")
    unknown = await theirs.get("/api/console/context/not-a-token")
    assert foreign.status_code == unknown.status_code == 404
    assert await foreign.get_json() == await unknown.get_json()  # nothing tells them apart
    assert (await app.test_client().get(f"/api/console/context/{token}")).status_code == 401


async def test_the_card_expires_with_its_token(
    app: Quart, desks: tuple[Desk, Desk], owner_conn: asyncpg.Connection, redis_url: str
) -> None:
    token = await transfer(app, desks[0], owner_conn)
    client, _ = await signed_in(app, desks[0])
    assert (await client.get(f"/api/console/context/{token}")).status_code == 200
    raw = aioredis.from_url(redis_url)
    await raw.pexpire(keys.console_context(token), 50)
    await raw.aclose()
    await asyncio.sleep(0.1)
    assert (await client.get(f"/api/console/context/{token}")).status_code == 404


# --- the event socket ----------------------------------------------------------------------------


async def wait_for_subscriber(redis_url: str, channel: str) -> None:
    raw = aioredis.from_url(redis_url)
    try:
        for _ in range(250):
            if dict(await raw.pubsub_numsub(channel)).get(channel.encode(), 0):
                return
            await asyncio.sleep(0.02)
    finally:
        await raw.aclose()
    raise AssertionError("the console socket never subscribed")


async def test_the_card_is_pushed_the_moment_the_transfer_starts(
    app: Quart, desks: tuple[Desk, Desk], owner_conn: asyncpg.Connection, redis_url: str
) -> None:
    acme, globex = desks
    mine, _ = await signed_in(app, acme)
    theirs, _ = await signed_in(app, globex)
    async with (
        mine.websocket("/api/console/events", headers={"Origin": BASE}) as ws,
        theirs.websocket("/api/console/events", headers={"Origin": BASE}) as other,
    ):
        assert (await ws.receive_json())["type"] == "hello"
        assert (await other.receive_json())["type"] == "hello"
        await wait_for_subscriber(redis_url, keys.console_channel(str(acme.tenant_id)))
        await wait_for_subscriber(redis_url, keys.console_channel(str(globex.tenant_id)))
        token = await transfer(app, acme, owner_conn)
        pushed = await asyncio.wait_for(ws.receive_json(), 5)
        assert pushed["type"] == "transfer" and pushed["token"] == token
        assert pushed["card"]["caller"]["name"] == "Acme Caller"
        assert pushed["card"]["reason"] == "contract renewal"
        with pytest.raises(TimeoutError):  # the other tenant's console hears nothing
            await asyncio.wait_for(other.receive_json(), 0.3)


async def test_a_signed_out_console_hears_no_more(
    app: Quart, desks: tuple[Desk, Desk], owner_conn: asyncpg.Connection, redis_url: str
) -> None:
    acme = desks[0]
    client, csrf = await signed_in(app, acme)
    async with client.websocket("/api/console/events", headers={"Origin": BASE}) as ws:
        assert (await ws.receive_json())["type"] == "hello"
        await wait_for_subscriber(redis_url, keys.console_channel(str(acme.tenant_id)))
        other_tab = app.test_client()
        other_tab.set_cookie("localhost", "va_console", client_cookie(client))
        done = await other_tab.post("/api/console/logout", headers={"X-CSRF-Token": csrf})
        assert done.status_code == 204
        await transfer(app, acme, owner_conn)
        with pytest.raises(WebsocketDisconnectError):
            await asyncio.wait_for(ws.receive_json(), 5)


def client_cookie(client: Client) -> str:
    return next(c.value for c in client.cookie_jar if c.name == "va_console")  # type: ignore[union-attr]


@pytest.mark.parametrize("case", ["anonymous", "foreign origin", "no origin"])
async def test_the_event_socket_refuses_strangers(
    app: Quart, desks: tuple[Desk, Desk], case: str
) -> None:
    if case == "anonymous":
        client, headers = app.test_client(), {"Origin": BASE}
    else:
        client, _ = await signed_in(app, desks[0])
        headers = {"Origin": "https://evil.example"} if case == "foreign origin" else {}
    with pytest.raises(WebsocketResponseError) as refused:
        async with client.websocket("/api/console/events", headers=headers) as ws:
            await ws.receive()
    assert refused.value.response.status_code == 403


# --- the page ------------------------------------------------------------------------------------


async def test_the_console_page_is_served_with_a_policy(app: Quart) -> None:
    client = app.test_client()
    response = await client.get("/console/")
    if response.status_code == 503:
        pytest.skip("agent console not built (agent_console/build.sh)")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "wss:" in policy
    assert "console.js" in await response.get_data(as_text=True)
    assert (await client.get("/console/console.js")).status_code == 200
    assert (await client.get("/console/../app.py")).status_code == 404
