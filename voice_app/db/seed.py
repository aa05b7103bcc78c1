"""`voice-app seed --demo`: a demo tenant with users, a team and todos. Safe to run twice.

Runs as the schema owner (like migrations). Account numbers and PINs are fixed so the demo and
the caller simulator work without flags; they are printed once, when the users are created.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from voice_app.auth.secrets import hash_secret
from voice_app.db import users


@dataclass(frozen=True)
class DemoUser:
    account_number: str
    pin: str
    display_name: str
    phone: str
    role: str
    timezone: str = "Europe/London"


DEMO_TENANT = ("demo", "Demo Company")
DEMO_USERS = (
    DemoUser("10000001", "4826", "Ada Lovelace", "+15005550001", "admin"),
    DemoUser("10000002", "7391", "Grace Hopper", "+15005550002", "member", "America/New_York"),
    DemoUser("10000003", "5168", "Alan Turing", "+15005550003", "member"),
)
DEMO_AGENT = ("agent@demo.example", "Demo Agent", "demo-agent-password")
DEMO_TEAM = "Launch team"
DEMO_TODOS = (
    ("Call the bank about the card", "high", 0),
    ("Buy milk", "normal", 1),
    ("Book the dentist", "low", 3),
)


@dataclass(frozen=True)
class SeedReport:
    created: list[DemoUser]
    agent_created: bool


async def seed_demo(url: str) -> SeedReport:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            return await _seed(conn)
    finally:
        await conn.close()


async def _seed(conn: asyncpg.Connection) -> SeedReport:
    tenant_id = await users.create_tenant(conn, *DEMO_TENANT)
    created: list[DemoUser] = []
    ids = {}
    for demo in DEMO_USERS:
        existing = await conn.fetchval(
            "SELECT id FROM users WHERE account_number = $1", demo.account_number
        )
        if existing is None:
            user = await users.create_user(
                conn,
                tenant_id,
                account_number=demo.account_number,
                display_name=demo.display_name,
                pin_hash=hash_secret(demo.pin),
                phone_e164=demo.phone,
                timezone=demo.timezone,
                role=demo.role,
            )
            existing = user.id
            created.append(demo)
        ids[demo.account_number] = existing

    owner = ids[DEMO_USERS[0].account_number]
    team_id = await conn.fetchval(
        "INSERT INTO teams (tenant_id, name, created_by) VALUES ($1, $2, $3) "
        "ON CONFLICT (tenant_id, lower(name)) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        tenant_id,
        DEMO_TEAM,
        owner,
    )
    for index, user_id in enumerate(ids.values()):
        await conn.execute(
            "INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING",
            tenant_id,
            team_id,
            user_id,
            "owner" if index == 0 else "member",
        )
    today = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0)
    for title, priority, due_in_days in DEMO_TODOS:
        await conn.execute(
            "INSERT INTO todos (tenant_id, owner_id, team_id, title, priority, due_at) "
            "SELECT $1, $2, $3, $4, $5, $6 WHERE NOT EXISTS "
            "(SELECT 1 FROM todos WHERE tenant_id = $1 AND owner_id = $2 AND title = $4)",
            tenant_id,
            owner,
            team_id if priority == "high" else None,
            title,
            priority,
            today + timedelta(days=due_in_days),
        )
    email, name, password = DEMO_AGENT
    agent_created = (
        await conn.fetchval(
            "INSERT INTO agents (tenant_id, email, display_name, password_hash) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO NOTHING RETURNING id",
            tenant_id,
            email,
            name,
            hash_secret(password),
        )
        is not None
    )
    return SeedReport(created, agent_created)
