"""PIN sign-in on both channels, lockout, the browser session (cookie, CSRF, rotation), the
Voice SDK token, local-mode calls and the transcript socket, against real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import jwt
import pytest
from quart import Quart
from quart.testing import WebsocketResponseError

from tests.conftest import TWILIO_ACCOUNT_SID
from voice_app.app import create_app
from voice_app.auth import pin_policy
from voice_app.state import keys

pytest.register_assert_rewrite("tests.edge_fixtures")
from tests.edge_fixtures import (  # noqa: E402
    API_KEY_SECRET,
    API_KEY_SID,
    TWIML_APP_SID,
    Caller,
    Tenant,
    call_params,
    edge_settings_for,
    new_call_sid,
    twilio_post,
)

pytest_plugins = ["tests.edge_fixtures"]

BASE = "https://voice.example.test"
PAGE = {"X-Requested-With": "fetch", "Origin": BASE}


async def sign_in(
    client,
    caller: Caller,
    pin: str | None = None,
    *,
    account: str | None = None,
    headers: dict[str, str] | None = None,
):
    body = {"account_number": account or caller.account_number, "pin": pin or caller.pin}
    return await client.post(
        "/api/auth/pin", json=body, headers=PAGE if headers is None else headers
    )


async def signed_in(client, caller: Caller) -> dict:
    response = await sign_in(client, caller)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return await response.get_json()


def session_cookie(response) -> SimpleCookie:
    cookie = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        cookie.load(header)
    return cookie


# Sign-in and the session ---------------------------------------------------------------------


async def test_sign_in_sets_a_hardened_cookie_and_me_works(client, tenant: Tenant, state) -> None:
    caller = tenant.member
    response = await sign_in(client, caller)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    profile = await response.get_json()
    assert profile["user"]["account_number"] == caller.account_number
    assert profile["tenant"]["name"].startswith("Edge ")
    assert profile["features"] == {"twilio": True, "local_mode": True}

    morsel = session_cookie(response)["va_session"]
    assert morsel["httponly"] and morsel["secure"]  # PUBLIC_BASE_URL is https
    assert morsel["samesite"] == "Lax" and morsel["path"] == "/"
    session = await state.get_session(morsel.value, kind="browser")
    assert session is not None and session.subject_id == str(caller.user_id)
    assert profile["csrf"] == session.csrf

    me = await client.get("/api/me")
    assert me.status_code == 200
    assert (await me.get_json())["user"]["display_name"] == "Max Member"


async def test_sign_in_rotates_the_session(client, tenant: Tenant, state) -> None:
    # A token planted in the browser before sign-in (fixation) must not become a session.
    planted = await state.create_session(
        kind="browser",
        tenant_id=str(tenant.tenant_id),
        subject_id=str(tenant.member.user_id),
        ttl_seconds=60,
    )
    client.set_cookie("localhost", "va_session", planted.token)
    first = session_cookie(await sign_in(client, tenant.member))["va_session"].value
    assert first != planted.token
    assert await state.get_session(planted.token) is None
    second = session_cookie(await sign_in(client, tenant.member))["va_session"].value
    assert second != first and await state.get_session(first) is None


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a plain cross-site form post cannot add X-Requested-With
        {"Origin": BASE},
        {"X-Requested-With": "fetch", "Origin": "https://evil.example"},
        {"X-Requested-With": "fetch", "Origin": "http://voice.example.test"},
    ],
)
async def test_sign_in_needs_the_page(headers, client, tenant: Tenant) -> None:
    response = await sign_in(client, tenant.member, headers=headers)
    assert response.status_code == 403
    assert "va_session" not in session_cookie(response)


async def test_wrong_pin_and_unknown_account_look_the_same(client, tenant: Tenant) -> None:
    wrong_pin = await sign_in(client, tenant.member, "0000")
    unknown = await sign_in(client, tenant.member, account="998877665544")
    assert wrong_pin.status_code == unknown.status_code == 401
    assert await wrong_pin.get_data() == await unknown.get_data()
    assert dict(wrong_pin.headers).keys() == dict(unknown.headers).keys()
    bad_json = await client.post("/api/auth/pin", data="nope", headers=PAGE)
    assert bad_json.status_code == 400


async def test_logout_needs_csrf_and_ends_the_session(client, tenant: Tenant, state) -> None:
    profile = await signed_in(client, tenant.member)
    assert (await client.post("/api/auth/logout", headers=PAGE)).status_code == 403
    forged = {**PAGE, "X-CSRF-Token": "x" * len(profile["csrf"])}
    assert (await client.post("/api/auth/logout", headers=forged)).status_code == 403
    assert (await client.get("/api/me")).status_code == 200

    response = await client.post(
        "/api/auth/logout", headers={**PAGE, "X-CSRF-Token": profile["csrf"]}
    )
    assert response.status_code == 204
    assert (await client.get("/api/me")).status_code == 401
    # Logging out twice is harmless.
    assert (await client.post("/api/auth/logout", headers=PAGE)).status_code == 204


async def test_signed_out_requests_are_refused(client) -> None:
    for path in ("/api/me", "/api/voice/token", "/api/admin/security-events"):
        response = await client.get(path)
        assert response.status_code == 401, path
    assert (await client.post("/api/local/call", headers=PAGE)).status_code == 401


# Lockout ---------------------------------------------------------------------------------------


async def wrong_pin_call(client, settings, caller: Caller, tries: int):
    call_sid = new_call_sid()
    await twilio_post(client, settings, "/twiml/voice", call_params(call_sid, caller.phone))
    response = None
    for _ in range(tries):
        params = call_params(call_sid, caller.phone, Digits="9090")
        response = await twilio_post(client, settings, "/twiml/pin", params)
    return await response.get_data(as_text=True)


async def security_events(client) -> list[dict]:
    response = await client.get("/api/admin/security-events")
    assert response.status_code == 200
    return (await response.get_json())["events"]


async def test_five_failures_lock_the_account_across_calls_and_the_browser(
    edge_app: Quart, edge_settings, tenant: Tenant, redis
) -> None:
    victim = tenant.spare
    phone, browser, admin = (edge_app.test_client() for _ in range(3))

    # Three wrong PINs on one call (the call ends), one on another, one in the browser.
    assert "<Hangup />" in await wrong_pin_call(phone, edge_settings, victim, 3)
    assert "<Gather" in await wrong_pin_call(phone, edge_settings, victim, 1)
    locked = await sign_in(browser, victim, "9090")
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) == pin_policy.LOCK_SECONDS
    assert "Too many attempts" in (await locked.get_json())["error"]

    # The right PIN no longer works anywhere.
    assert (await sign_in(browser, victim)).status_code == 429
    call_sid = new_call_sid()
    await twilio_post(phone, edge_settings, "/twiml/voice", call_params(call_sid, victim.phone))
    params = call_params(call_sid, victim.phone, Digits=victim.pin)
    twiml = await (await twilio_post(phone, edge_settings, "/twiml/pin", params)).get_data(
        as_text=True
    )
    assert "sign-in is paused" in twiml and "<Connect" not in twiml

    # The admin sees it; a member may not look.
    await signed_in(admin, tenant.admin)
    for _ in range(50):  # written after the response, so it cannot be timed
        events = [e for e in await security_events(admin) if e["user_id"] == str(victim.user_id)]
        if events:
            break
        await asyncio.sleep(0.05)
    assert [e["kind"] for e in events] == ["pin_lockout"]
    assert events[0]["detail"]["account_number"] == victim.account_number
    assert events[0]["detail"]["channel"] == "browser"
    assert events[0]["detail"]["failures"] == pin_policy.LOCK_AFTER_FAILURES
    member = edge_app.test_client()
    await signed_in(member, tenant.member)
    assert (await member.get("/api/admin/security-events")).status_code == 403

    # When the lock runs out, the right PIN works again.
    lock_key = keys.pin_lock(victim.account_number)
    assert 0 < await redis.ttl(lock_key) <= pin_policy.LOCK_SECONDS
    await redis.expire(lock_key, 1)
    await asyncio.sleep(1.2)
    assert (await sign_in(browser, victim)).status_code == 200


def some_address(net: str = "203.0.113") -> str:
    return f"{net}.{random.randrange(1, 255)}"  # documentation ranges: never a real client


@pytest.fixture
async def throttled_app(edge_settings) -> AsyncIterator[Quart]:
    """Three sign-in attempts per address per window, behind one trusted proxy."""
    settings = edge_settings_for(edge_settings, sign_in_attempts_per_ip=3, trusted_proxy_hops=1)
    app = create_app(settings)
    async with app.test_app():
        yield app


async def test_one_address_trying_many_accounts_is_throttled(
    throttled_app: Quart, tenant: Tenant
) -> None:
    client, address = throttled_app.test_client(), some_address()  # Redis is fresh per run
    via_proxy = {**PAGE, "X-Forwarded-For": address}
    for account in ("998877665501", "998877665502", "998877665503"):  # a credential-stuffing run
        wrong = await sign_in(client, tenant.member, "0000", account=account, headers=via_proxy)
        assert wrong.status_code == 401
    # The fourth try is refused before the PIN is even hashed, the right PIN included ...
    refused = await sign_in(client, tenant.member, headers=via_proxy)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 600
    assert "Too many sign-in attempts" in (await refused.get_json())["error"]
    # ... the console's password sign-in shares the budget ...
    console = await client.post(
        "/api/console/login",
        json={"email": "someone@example.test", "password": "x"},
        headers=via_proxy,
    )
    assert console.status_code == 429
    # ... and nobody else is locked out: not the account, not another address.
    elsewhere = {**PAGE, "X-Forwarded-For": some_address("198.51.100")}
    assert (await sign_in(client, tenant.member, headers=elsewhere)).status_code == 200


async def test_the_client_address_is_not_taken_from_an_untrusted_header(
    edge_settings, tenant: Tenant
) -> None:
    app = create_app(edge_settings_for(edge_settings, sign_in_attempts_per_ip=2))
    client, address = app.test_client(), some_address("192.0.2")
    async with app.test_app():
        statuses = []
        for forged in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):  # one per attempt
            response = await client.post(
                "/api/auth/pin",
                json={"account_number": "998877665599", "pin": "0000"},
                headers={**PAGE, "X-Forwarded-For": forged},
                scope_base={"client": (address, 40000)},
            )
            statuses.append(response.status_code)
    assert statuses == [401, 401, 429]  # counted against the real peer address


async def test_unknown_account_locks_exactly_like_a_real_one(
    edge_app: Quart, tenant: Tenant, owner_conn
) -> None:
    client = edge_app.test_client()
    unknown = str(random.randint(10**10, 10**11 - 1))
    before = await owner_conn.fetchval("SELECT count(*) FROM security_events")
    real = [await sign_in(client, tenant.member, "0101") for _ in range(5)]
    fake = [await sign_in(client, tenant.member, "0101", account=unknown) for _ in range(5)]
    assert [r.status_code for r in real] == [r.status_code for r in fake] == [401] * 4 + [429]
    assert [await r.get_data() for r in real] == [await r.get_data() for r in fake]
    await asyncio.sleep(0.3)
    # Only the real account's lock is an event (there is no tenant to tell about the other).
    assert await owner_conn.fetchval("SELECT count(*) FROM security_events") == before + 1


# Timing ----------------------------------------------------------------------------------------


def medians_close(a: list[float], b: list[float], tolerance: float = 0.30) -> bool:
    ma, mb = statistics.median(a), statistics.median(b)
    return abs(ma - mb) <= tolerance * max(ma, mb)


async def test_browser_timing_does_not_reveal_whether_an_account_exists(
    client, tenant: Tenant, redis
) -> None:
    """A security property, not a speed test: both paths do one argon2 verify."""
    caller = tenant.member
    times: dict[str, list[float]] = {"wrong_pin": [], "unknown_account": []}
    bodies = set()
    for i in range(26):
        kind = "wrong_pin" if i % 2 == 0 else "unknown_account"
        account = (
            caller.account_number if kind == "wrong_pin" else str(random.randint(10**10, 10**11))
        )
        started = time.perf_counter()
        response = await sign_in(client, caller, "0909", account=account)
        elapsed = time.perf_counter() - started
        bodies.add((response.status_code, await response.get_data()))
        await redis.delete(keys.pin_failures(account))  # stay below the lockout
        if i >= 2:  # warm-up
            times[kind].append(elapsed)
    assert len(bodies) == 1 and next(iter(bodies))[0] == 401
    assert medians_close(times["wrong_pin"], times["unknown_account"]), times


async def test_phone_timing_does_not_reveal_whether_an_account_exists(
    client, edge_settings, tenant: Tenant, state, redis
) -> None:
    caller = tenant.member
    times: dict[str, list[float]] = {"wrong_pin": [], "unknown_account": []}
    bodies = set()
    for i in range(26):
        kind = "wrong_pin" if i % 2 == 0 else "unknown_account"
        account = (
            caller.account_number if kind == "wrong_pin" else str(random.randint(10**10, 10**11))
        )
        call_sid = new_call_sid()
        await state.set_pending_account(call_sid, account)
        params = call_params(call_sid, "+15550000009", Digits="0909")
        started = time.perf_counter()
        response = await twilio_post(client, edge_settings, "/twiml/pin", params)
        elapsed = time.perf_counter() - started
        bodies.add((response.status_code, await response.get_data()))
        await redis.delete(keys.pin_failures(account))
        if i >= 2:
            times[kind].append(elapsed)
    assert len(bodies) == 1 and next(iter(bodies))[0] == 200
    assert medians_close(times["wrong_pin"], times["unknown_account"]), times


# The Voice SDK token ---------------------------------------------------------------------------


async def test_voice_token_is_bound_to_the_user(client, tenant: Tenant) -> None:
    caller = tenant.member
    await signed_in(client, caller)
    response = await client.get("/api/voice/token")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["identity"] == caller.identity and len(caller.identity) <= 121
    assert re.fullmatch(r"[A-Za-z0-9_]+", caller.identity)

    claims = jwt.decode(body["token"], API_KEY_SECRET, algorithms=["HS256"])
    assert jwt.get_unverified_header(body["token"])["cty"] == "twilio-fpa;v=1"
    assert claims["iss"] == API_KEY_SID and claims["sub"] == TWILIO_ACCOUNT_SID
    assert claims["grants"]["identity"] == caller.identity
    assert claims["grants"]["voice"] == {"outgoing": {"application_sid": TWIML_APP_SID}}
    assert 590 <= claims["exp"] - time.time() <= 600
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(body["token"], "some-other-secret-of-32-bytes-or-more", algorithms=["HS256"])


@pytest.fixture(scope="module")
async def bare_app(settings) -> AsyncIterator[Quart]:
    """No Twilio API keys and local mode off: the defaults on a fresh checkout."""
    app = create_app(
        edge_settings_for(
            settings,
            twilio_api_key_sid=None,
            twilio_api_key_secret=None,
            twilio_twiml_app_sid=None,
            local_mode=False,
        )
    )
    async with app.test_app():
        yield app


async def test_voice_token_without_twilio_keys_says_what_is_missing(
    bare_app, tenant: Tenant
) -> None:
    client = bare_app.test_client()
    profile = await signed_in(client, tenant.member)
    assert profile["features"] == {"twilio": False, "local_mode": False}
    response = await client.get("/api/voice/token")
    assert response.status_code == 503
    error = (await response.get_json())["error"]
    assert "TWILIO_API_KEY_SID" in error and "TWILIO_TWIML_APP_SID" in error


# Local mode ------------------------------------------------------------------------------------


async def test_local_call_creates_a_call_session(client, tenant: Tenant, state, owner_conn) -> None:
    caller = tenant.member
    profile = await signed_in(client, caller)
    assert (await client.post("/api/local/call", headers=PAGE)).status_code == 403  # no CSRF
    response = await client.post(
        "/api/local/call", headers={**PAGE, "X-CSRF-Token": profile["csrf"]}
    )
    assert response.status_code == 200
    body = await response.get_json()
    assert re.fullmatch(r"LC[0-9a-f]{32}", body["call_sid"])
    assert body["stream_url"] == "wss://voice.example.test/streams/local"
    session = await state.get_session(body["session_token"], kind="call")
    assert session is not None
    assert (session.call_sid, session.channel) == (body["call_sid"], "local")
    assert (session.tenant_id, session.subject_id) == (str(caller.tenant_id), str(caller.user_id))
    row = await owner_conn.fetchrow("SELECT * FROM calls WHERE call_sid = $1", body["call_sid"])
    assert (row["tenant_id"], row["user_id"], row["channel"]) == (
        caller.tenant_id,
        caller.user_id,
        "local",
    )


async def test_local_call_is_off_unless_local_mode(bare_app, tenant: Tenant) -> None:
    client = bare_app.test_client()
    profile = await signed_in(client, tenant.member)
    response = await client.post(
        "/api/local/call", headers={**PAGE, "X-CSRF-Token": profile["csrf"]}
    )
    assert response.status_code == 404
    assert "LOCAL_MODE" in (await response.get_json())["error"]


# The transcript socket -------------------------------------------------------------------------


async def start_local_call(client, caller: Caller) -> str:
    profile = await signed_in(client, caller)
    response = await client.post(
        "/api/local/call", headers={**PAGE, "X-CSRF-Token": profile["csrf"]}
    )
    return (await response.get_json())["call_sid"]


async def wait_for_subscriber(redis, channel: str) -> None:
    for _ in range(100):
        if dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the transcript socket never subscribed")


async def test_transcript_socket_relays_the_calls_lines(
    client, tenant: Tenant, state, redis
) -> None:
    call_sid = await start_local_call(client, tenant.member)
    path = f"/api/calls/transcript?call_sid={call_sid}"
    async with client.websocket(path, headers={"Origin": BASE}) as ws:
        await wait_for_subscriber(redis, keys.transcript_channel(call_sid))
        lines = [
            {"speaker": "caller", "text": "what's on my", "final": False},
            {"speaker": "caller", "text": "What's on my list?", "final": True},
            {"speaker": "assistant", "text": "You have two todos.", "final": True, "extra": 1},
        ]
        for line in lines:
            await state.publish(keys.transcript_channel(call_sid), line)
        received = [await asyncio.wait_for(ws.receive_json(), 5) for _ in lines]
    assert received == [{k: v for k, v in line.items() if k != "extra"} for line in lines]


async def test_transcript_socket_refuses_strangers(edge_app: Quart, tenant: Tenant) -> None:
    owner, other, anonymous = (edge_app.test_client() for _ in range(3))
    call_sid = await start_local_call(owner, tenant.member)
    await signed_in(other, tenant.admin)  # same tenant, different user
    path = f"/api/calls/transcript?call_sid={call_sid}"
    cases = [
        (other, {"Origin": BASE}),
        (anonymous, {"Origin": BASE}),
        (owner, {"Origin": "https://evil.example"}),
        (owner, {}),
    ]
    for client, headers in cases:
        with pytest.raises(WebsocketResponseError) as refused:
            async with client.websocket(path, headers=headers) as ws:
                await ws.receive()
        assert refused.value.response.status_code == 403
    with pytest.raises(WebsocketResponseError):
        async with owner.websocket(
            "/api/calls/transcript?call_sid=CAnope", headers={"Origin": BASE}
        ) as ws:
            await ws.receive()
