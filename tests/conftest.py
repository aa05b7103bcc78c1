"""Shared fixtures: a freshly migrated PostgreSQL database and a clean Redis, both real.

TEST_DATABASE_URL (default: the local `test` database) is used only to create and drop a scratch
database for the run; TEST_REDIS_URL (default: local Redis, db 9) is flushed at the start.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from voice_app.config import Settings
from voice_app.db.migrate import migrate
from voice_app.db.pool import Database
from voice_app.state.store import StateStore

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
TWILIO_ACCOUNT_SID = "AC" + "0" * 31 + "1"
TWILIO_AUTH_TOKEN = "test-auth-token-0123456789abcdef"


def pytest_collection_finish(session: pytest.Session) -> None:
    """As `voice-app serve` does after start-up: the apps these tests serve in-process must not
    pause for full collections over every module and test object loaded (a 0.4 s pause makes a
    gap in the assistant's audio that the simulated caller takes for the end of a reply)."""
    gc.collect()
    gc.freeze()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    name = f"va_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(ADMIN_URL, name)
    try:
        await migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, max_size=20)
    yield database
    await database.close()


@pytest.fixture(scope="session")
async def owner_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the schema owner (not restricted by RLS): for setup and assertions."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()
    yield REDIS_URL


@pytest.fixture
async def state(redis_url: str) -> AsyncIterator[StateStore]:
    store = StateStore.from_url(redis_url)
    yield store
    await store.close()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ENVIRONMENT": "test",
            "PUBLIC_BASE_URL": "https://voice.example.test",
            "TWILIO_ACCOUNT_SID": TWILIO_ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": TWILIO_AUTH_TOKEN,
            "SECRET_KEY": "test-secret-key",
            # Every test client signs in from the same address; the limit has its own tests.
            "SIGN_IN_ATTEMPTS_PER_IP": "100000",
        },
        dotenv=None,
    )
