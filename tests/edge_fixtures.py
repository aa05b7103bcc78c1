"""Fixtures and helpers for the telephony edge tests: seeded callers, an app with Twilio keys,
requests signed exactly as Twilio signs them, and a snapshot of Redis + PostgreSQL state.

Test modules load this with `pytest_plugins = ["tests.edge_fixtures"]`.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from quart import Quart
from quart.typing import TestClientProtocol
from twilio.request_validator import RequestValidator

from tests.conftest import TWILIO_AUTH_TOKEN
from voice_app.app import create_app
from voice_app.auth.secrets import hash_secret
from voice_app.config import Settings
from voice_app.db import users
from voice_app.state import keys

API_KEY_SID = "SK" + "1" * 32
API_KEY_SECRET = "test-api-key-secret-0123456789abcdef"
TWIML_APP_SID = "AP" + "2" * 32


@dataclass(frozen=True)
class Caller:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    account_number: str
    pin: str
    phone: str | None
    role: str = "member"

    @property
    def identity(self) -> str:
        return f"t{self.tenant_id.hex}_u{self.user_id.hex}"


@dataclass(frozen=True)
class Tenant:
    tenant_id: uuid.UUID
    admin: Caller
    member: Caller
    spare: Caller  # a third user for tests that lock an account
    shared_phone: str  # two users of this tenant share this phone


def _account_number() -> str:
    return str(random.randint(100_000_000, 999_999_999))  # unique enough per run


def _phone() -> str:
    return f"+1555{random.randint(1_000_000, 9_999_999)}"


async def make_caller(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    pin: str,
    name: str,
    phone: str | None = None,
    role: str = "member",
) -> Caller:
    account = _account_number()
    user = await users.create_user(
        conn,
        tenant_id,
        account_number=account,
        display_name=name,
        pin_hash=hash_secret(pin),
        phone_e164=phone,
        role=role,
    )
    return Caller(tenant_id, user.id, account, pin, phone, role)


async def make_tenant(conn: asyncpg.Connection) -> Tenant:
    slug = f"edge-{uuid.uuid4().hex[:10]}"
    tenant_id = await users.create_tenant(conn, slug, f"Edge {slug[-4:]}")
    admin = await make_caller(
        conn, tenant_id, pin="4826", name="Ada Admin", phone=_phone(), role="admin"
    )
    member = await make_caller(conn, tenant_id, pin="739105", name="Max Member", phone=_phone())
    spare = await make_caller(conn, tenant_id, pin="5168", name="Sam Spare", phone=_phone())
    shared = _phone()
    for name in ("Pat One", "Pat Two"):
        await make_caller(conn, tenant_id, pin="2580", name=name, phone=shared)
    return Tenant(tenant_id, admin, member, spare, shared)


@pytest.fixture
async def tenant(owner_conn: asyncpg.Connection) -> Tenant:
    """A fresh tenant per test, so lockouts and counters never leak between tests."""
    return await make_tenant(owner_conn)


def edge_settings_for(settings: Settings, **changes: Any) -> Settings:
    base = {
        "twilio_api_key_sid": API_KEY_SID,
        "twilio_api_key_secret": API_KEY_SECRET,
        "twilio_twiml_app_sid": TWIML_APP_SID,
        "local_mode": True,
    }
    return dataclasses.replace(settings, **{**base, **changes})


@pytest.fixture(scope="session")
def edge_settings(settings: Settings) -> Settings:
    return edge_settings_for(settings)


@pytest.fixture(scope="session")
async def edge_app(edge_settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(edge_settings)
    async with app.test_app():
        yield app


@pytest.fixture
def client(edge_app: Quart) -> TestClientProtocol:
    """A fresh test client (own cookie jar) per test."""
    return edge_app.test_client()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


# Signing as Twilio does -----------------------------------------------------------------------


def twilio_signature(settings: Settings, path_and_query: str, params: Mapping[str, str]) -> str:
    url = f"{settings.public_base_url}{path_and_query}"
    return str(RequestValidator(TWILIO_AUTH_TOKEN).compute_signature(url, dict(params)))


async def twilio_post(
    client: TestClientProtocol,
    settings: Settings,
    path: str,
    params: Mapping[str, str],
    *,
    signature: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """POST a form as Twilio would; `signature` overrides the correct one (tampering tests)."""
    sig = twilio_signature(settings, path, params) if signature is None else signature
    return await client.post(
        path, form=dict(params), headers={"X-Twilio-Signature": sig, **(headers or {})}
    )


def new_call_sid() -> str:
    return "CA" + uuid.uuid4().hex


def call_params(call_sid: str, caller: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": "AC" + "0" * 31 + "1",
        "From": caller,
        "To": "+15005550006",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


# State snapshots --------------------------------------------------------------------------------


async def snapshot(redis: aioredis.Redis, owner_conn: asyncpg.Connection) -> dict[str, Any]:
    """Every Redis key with its value, and the rows of the tables the edge writes."""
    redis_state = {}
    for key in sorted(await redis.keys(f"{keys.PREFIX}*")):
        redis_state[key] = await redis.dump(key)
    tables = {}
    for table in ("calls", "security_events", "users"):
        rows = await owner_conn.fetch(f"SELECT * FROM {table} ORDER BY 1")
        tables[table] = [tuple(r.values()) for r in rows]
    return {"redis": redis_state, "db": tables}
