"""The foundation against the real PostgreSQL and Redis: migrations, RLS, sessions, settings."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from voice_app.app import create_app
from voice_app.auth.secrets import hash_secret
from voice_app.config import ConfigError, Settings
from voice_app.db import calls, users
from voice_app.db.migrate import load_migrations, migrate
from voice_app.db.pool import Database
from voice_app.state.store import StateStore


async def _tenant_with_user(
    owner: asyncpg.Connection, slug: str, account: str
) -> tuple[uuid.UUID, uuid.UUID]:
    tenant_id = await users.create_tenant(owner, slug, slug.title())
    user = await users.create_user(
        owner, tenant_id, account_number=account, display_name=f"{slug} user", pin_hash="x"
    )
    return tenant_id, user.id


@pytest.fixture(scope="module")
async def two_tenants(owner_conn: asyncpg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    suffix = uuid.uuid4().hex[:6]
    a = await _tenant_with_user(
        owner_conn, f"alpha-{suffix}", str(10_000_000 + int(suffix, 16) % 1000)
    )
    b = await _tenant_with_user(
        owner_conn, f"beta-{suffix}", str(20_000_000 + int(suffix, 16) % 1000)
    )
    for tenant_id, _ in (a, b):
        await calls.add_message(
            owner_conn, tenant_id, "CA-shared", "user", f"secret of {tenant_id}"
        )
    return {"a": a, "b": b}


async def test_migrations_apply_to_empty_database_then_are_a_noop(
    owner_conn: asyncpg.Connection,
) -> None:
    name = f"va_mig_{uuid.uuid4().hex[:8]}"
    await owner_conn.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = _dsn_for(owner_conn, name)
        first = await migrate(dsn)
        assert [m.version for m in first] == [m.version for m in load_migrations()]
        assert await migrate(dsn) == []
        conn = await asyncpg.connect(dsn)
        try:
            recorded = await conn.fetch(
                "SELECT version, checksum FROM schema_migrations ORDER BY 1"
            )
            assert [r["version"] for r in recorded] == [m.version for m in load_migrations()]
            tables = {
                r[0]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
            }
            assert {
                "tenants",
                "users",
                "teams",
                "team_members",
                "todos",
                "calendar_accounts",
                "calendar_events",
                "calls",
                "messages",
                "tool_calls",
                "agents",
            } <= tables
        finally:
            await conn.close()
    finally:
        await owner_conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _dsn_for(conn: asyncpg.Connection, database: str) -> str:
    params = conn._params
    host, port = conn._addr
    return f"postgresql://{params.user}@{host}:{port}/{database}"


async def test_concurrent_migrations_apply_once(owner_conn: asyncpg.Connection) -> None:
    name = f"va_mig_{uuid.uuid4().hex[:8]}"
    await owner_conn.execute(f'CREATE DATABASE "{name}"')
    try:
        dsn = _dsn_for(owner_conn, name)
        results = await asyncio.gather(migrate(dsn), migrate(dsn), migrate(dsn))
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
    finally:
        await owner_conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_repository_never_returns_another_tenants_rows(db: Database, two_tenants) -> None:
    (tenant_a, user_a), (tenant_b, user_b) = two_tenants["a"], two_tenants["b"]
    async with db.tenant(tenant_a) as conn:
        assert await users.get_user(conn, tenant_a, user_a) is not None
        # Asking for B's user while scoped to A: the explicit filter and RLS both refuse.
        assert await users.get_user(conn, tenant_a, user_b) is None
        assert await users.get_user(conn, tenant_b, user_b) is None
        assert [u.id for u in await users.list_users(conn, tenant_b)] == []
        messages = await calls.list_messages(conn, tenant_a, "CA-shared")
        assert [m["content"] for m in messages] == [f"secret of {tenant_a}"]


async def test_raw_query_without_tenant_filter_sees_only_current_tenant(
    db: Database, two_tenants
) -> None:
    (tenant_a, _), (tenant_b, _) = two_tenants["a"], two_tenants["b"]
    async with db.tenant(tenant_a) as conn:
        rows = await conn.fetch("SELECT tenant_id FROM users")
        assert {r["tenant_id"] for r in rows} == {tenant_a}
        assert {r["tenant_id"] for r in await conn.fetch("SELECT tenant_id FROM messages")} == {
            tenant_a
        }
        assert {r["id"] for r in await conn.fetch("SELECT id FROM tenants")} == {tenant_a}
        # Writing a row for another tenant is refused by the policy's WITH CHECK.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO messages (tenant_id, call_sid, role, content)"
                " VALUES ($1, 'x', 'user', 'x')",
                tenant_b,
            )
    async with db.anonymous() as conn:
        assert await conn.fetch("SELECT id FROM users") == []
        assert await conn.fetchval("SELECT current_user") == "voice_app_rw"


async def test_sign_in_lookup_crosses_tenants_narrowly(
    db: Database, owner_conn, two_tenants
) -> None:
    tenant_b, user_b = two_tenants["b"]
    account = await owner_conn.fetchval("SELECT account_number FROM users WHERE id = $1", user_b)
    async with db.anonymous() as conn:
        match = await users.account_for_sign_in(conn, account)
        assert match is not None and match.tenant_id == tenant_b and match.user_id == user_b
        assert await users.account_for_sign_in(conn, "999999999") is None


async def test_status_callbacks_are_idempotent(db: Database, owner_conn) -> None:
    from datetime import UTC, datetime, timedelta

    sid = "CA" + uuid.uuid4().hex
    t0 = datetime.now(UTC)
    events = [("initiated", 0), ("ringing", 1), ("in-progress", 2), ("completed", 3)]
    async with db.anonymous() as conn:
        for status, seq in events + events[::-1]:  # every event twice, the retries out of order
            await calls.record_call_event(
                conn,
                call_sid=sid,
                status=status,
                sequence=seq,
                at=t0 + timedelta(seconds=seq),
                from_number="+15550001111",
                duration_s=3 if status == "completed" else None,
            )
    row = await owner_conn.fetchrow("SELECT * FROM calls WHERE call_sid = $1", sid)
    assert row["status"] == "completed" and row["outcome"] == "completed"
    assert row["answered_at"] == t0 + timedelta(seconds=2)
    assert row["ended_at"] == t0 + timedelta(seconds=3)
    assert row["duration_s"] == 3
    assert await owner_conn.fetchval("SELECT count(*) FROM calls WHERE call_sid = $1", sid) == 1


async def test_session_expires_after_its_ttl(state: StateStore) -> None:
    session = await state.create_session(
        kind="browser", tenant_id="t", subject_id="u", ttl_seconds=1
    )
    assert (await state.get_session(session.token)) == session
    assert await state.get_session(session.token, kind="agent") is None
    await asyncio.sleep(2.1)
    assert await state.get_session(session.token) is None


async def test_pin_failures_lock_the_account(state: StateStore) -> None:
    account = str(uuid.uuid4().int)[:9]
    verdicts = [await state.record_pin_failure(account) for _ in range(5)]
    assert [v.locked for v in verdicts] == [False, False, False, False, True]
    assert 0 < await state.is_locked(account) <= 15 * 60


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"TWILIO_ACCOUNT_SID": "AC123"}, "TWILIO_ACCOUNT_SID"),
        ({"AGENT_EXTENSION": "20a1"}, "AGENT_EXTENSION"),
        ({"PUBLIC_BASE_URL": "voice.example.com"}, "PUBLIC_BASE_URL"),
        ({"TWILIO_API_KEY_SID": "SK" + "a" * 32}, "TWILIO_API_KEY_SECRET"),
        ({"ENVIRONMENT": "production"}, "TWILIO_AUTH_TOKEN"),
        ({"LOCAL_MODE": "maybe"}, "LOCAL_MODE"),
    ],
)
def test_bad_setting_fails_with_its_name(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env, dotenv=None)
    assert caught.value.variable == variable
    assert variable in str(caught.value)


def test_missing_provider_keys_choose_offline_engines() -> None:
    engines = Settings.from_env({}, dotenv=None).engines()
    assert engines["speech-to-text"] == "offline pocketsphinx"
    assert engines["agent"] == "offline intent grammar"
    assert Settings.from_env({"AGENT_EXTENSION": "2001"}, dotenv=None).agent_extension == "2001"


def test_settings_read_dotenv_file(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9099\nANTHROPIC_API_KEY=sk-test\n")
    settings = Settings.from_env({}, dotenv=dotenv)
    assert settings.port == 9099
    assert settings.redacted()["ANTHROPIC_API_KEY"] == "***"


async def test_health_and_readiness(settings: Settings) -> None:
    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/healthz")).status_code == 200
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert (await response.get_json())["checks"] == {"database": "ok", "redis": "ok"}


def test_pin_hash_round_trip() -> None:
    from voice_app.auth.secrets import verify_secret

    stored = hash_secret("482913")
    assert verify_secret(stored, "482913")
    assert not verify_secret(stored, "482914")
    assert not verify_secret(None, "482913")
