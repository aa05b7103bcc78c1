"""Fixtures for the MCP tool tests: two tenants with people, teams, todos and linked calendars
(on the Google stand-in), the tool server, and a helper to call a tool as someone.

Objects are created fresh per test through the owner connection, so tests never depend on each
other's leftovers.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult

from tests.standins.google_calendar import GoogleCalendarStandIn
from voice_app.agent.base import CallContext
from voice_app.config import Settings
from voice_app.db import calendar as calendar_db
from voice_app.db import users
from voice_app.db.pool import Database
from voice_app.state.store import StateStore
from voice_app.tools.core import ToolServices
from voice_app.tools.google import GoogleTokens, token_cipher
from voice_app.tools.server import ConnectionState, build_server
from voice_app.tools.session import open_tools_client


class FixedAvailability:
    """An AgentAvailability whose answer a test sets."""

    def __init__(self, answer: bool | None = True) -> None:
        self.answer = answer

    async def is_available(self) -> bool | None:
        return self.answer


def unique(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def account_number() -> str:
    return str(uuid.uuid4().int % 9_000_000_000 + 1_000_000_000)


@dataclass
class Tenant:
    """One tenant, with the person who calls (`caller`) and an `admin`."""

    key: str
    id: uuid.UUID
    caller: users.User
    admin: users.User
    owner: asyncpg.Connection
    google: GoogleCalendarStandIn
    settings: Settings
    linked: set[uuid.UUID] = field(default_factory=set)

    async def user(
        self, name: str | None = None, *, role: str = "member", pin_hash: str = "x"
    ) -> users.User:
        return await users.create_user(
            self.owner,
            self.id,
            account_number=account_number(),
            display_name=name or unique("Person"),
            pin_hash=pin_hash,
            role=role,
            timezone=self.caller.timezone,
        )

    async def todo(
        self,
        *,
        owner: users.User | None = None,
        title: str | None = None,
        due: datetime | None = None,
        team: uuid.UUID | None = None,
        assignee: uuid.UUID | None = None,
        status: str = "open",
        notes: str = "",
    ) -> uuid.UUID:
        return await self.owner.fetchval(  # type: ignore[no-any-return]
            "INSERT INTO todos (tenant_id, owner_id, title, due_at, team_id, assignee_id, status,"
            " notes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            self.id,
            (owner or self.caller).id,
            title or unique("Todo"),
            due,
            team,
            assignee,
            status,
            notes,
        )

    async def team(
        self,
        *,
        name: str | None = None,
        owner: users.User | None = None,
        members: tuple[users.User, ...] = (),
    ) -> uuid.UUID:
        team_id: uuid.UUID = await self.owner.fetchval(
            "INSERT INTO teams (tenant_id, name) VALUES ($1, $2) RETURNING id",
            self.id,
            name or unique("Team"),
        )
        await self.owner.execute(
            "INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES ($1, $2, $3, $4)",
            self.id,
            team_id,
            (owner or self.caller).id,
            "owner",
        )
        for member in members:
            await self.owner.execute(
                "INSERT INTO team_members (tenant_id, team_id, user_id) VALUES ($1, $2, $3)",
                self.id,
                team_id,
                member.id,
            )
        return team_id

    def google_user(self, user: users.User) -> str:
        return f"{user.id}@example.com"

    async def link_calendar(self, user: users.User | None = None) -> None:
        user = user or self.caller
        tokens = GoogleTokens.from_response(self.google.issue_tokens(self.google_user(user)))
        await calendar_db.save_account(
            self.owner,
            self.id,
            user.id,
            token_ciphertext=tokens.encrypt(token_cipher(self.settings)),
        )
        self.linked.add(user.id)

    def event(
        self,
        *,
        user: users.User | None = None,
        title: str | None = None,
        start: datetime | None = None,
        minutes: int = 60,
        **extra: Any,
    ) -> str:
        start = start or datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        stored = self.google.add_event(
            self.google_user(user or self.caller),
            {
                "summary": title or unique("Meeting"),
                "start": {"dateTime": start.isoformat()},
                "end": {"dateTime": (start + timedelta(minutes=minutes)).isoformat()},
                **extra,
            },
        )
        return str(stored["id"])

    def context(self, user: users.User | None = None, call_sid: str | None = None) -> CallContext:
        user = user or self.caller
        return CallContext(
            tenant_id=str(self.id),
            user_id=str(user.id),
            call_sid=call_sid if call_sid is not None else unique("CA"),
            display_name=user.display_name,
            timezone=user.timezone,
        )


@dataclass
class ToolWorld:
    a: Tenant
    b: Tenant
    server: MCPServer[ConnectionState]
    services: ToolServices
    availability: FixedAvailability
    google: GoogleCalendarStandIn

    def tenant(self, key: str) -> Tenant:
        return self.a if key == "a" else self.b

    def other(self, key: str) -> Tenant:
        return self.b if key == "a" else self.a


async def call_tool(
    server: MCPServer[ConnectionState], context: CallContext, name: str, arguments: dict[str, Any]
) -> CallToolResult:
    async with open_tools_client(server, context) as client:
        return await client.call_tool(name, arguments)


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture(scope="session")
async def google_standin() -> AsyncIterator[GoogleCalendarStandIn]:
    async with GoogleCalendarStandIn(client_id="test-client", client_secret="test-secret") as g:
        yield g


@pytest.fixture(scope="session")
def tool_settings(settings: Settings, google_standin: GoogleCalendarStandIn) -> Settings:
    return dataclasses.replace(
        settings,
        google_client_id="test-client",
        google_client_secret="test-secret",
        google_oauth_base_url=google_standin.url,
        google_token_url=google_standin.url + "/token",
        google_calendar_base_url=google_standin.url + "/calendar/v3",
    )


@pytest.fixture(scope="session")
async def tool_state(redis_url: str) -> AsyncIterator[StateStore]:
    store = StateStore.from_url(redis_url)
    yield store
    await store.close()


async def _tenant(
    key: str, owner: asyncpg.Connection, google: GoogleCalendarStandIn, settings: Settings, tz: str
) -> Tenant:
    tenant_id = await users.create_tenant(owner, unique(f"tools-{key}"), f"Tools {key.upper()}")
    caller = await users.create_user(
        owner,
        tenant_id,
        account_number=account_number(),
        display_name=unique("Caller"),
        pin_hash="x",
        timezone=tz,
    )
    admin = await users.create_user(
        owner,
        tenant_id,
        account_number=account_number(),
        display_name=unique("Admin"),
        pin_hash="x",
        timezone=tz,
        role="admin",
    )
    tenant = Tenant(key, tenant_id, caller, admin, owner, google, settings)
    await tenant.link_calendar()
    return tenant


@pytest.fixture(scope="session")
async def tool_world(
    db: Database,
    owner_conn: asyncpg.Connection,
    tool_state: StateStore,
    tool_settings: Settings,
    google_standin: GoogleCalendarStandIn,
) -> AsyncIterator[ToolWorld]:
    availability = FixedAvailability(True)
    services = ToolServices.create(tool_settings, db, tool_state, availability=availability)
    server = build_server(lambda: services)
    world = ToolWorld(
        await _tenant("a", owner_conn, google_standin, tool_settings, "Europe/London"),
        await _tenant("b", owner_conn, google_standin, tool_settings, "America/New_York"),
        server,
        services,
        availability,
        google_standin,
    )
    yield world
    await services.aclose()


async def audit_rows(owner: asyncpg.Connection, call_sid: str) -> list[dict[str, Any]]:
    rows = await owner.fetch(
        "SELECT tenant_id, user_id, tool, arguments, outcome, detail, duration_ms FROM tool_calls"
        " WHERE call_sid = $1 ORDER BY id",
        call_sid,
    )
    found = [dict(r) for r in rows]
    for row in found:
        # calls.audit_tool_call json.dumps()es and the pool's jsonb codec encodes again, so the
        # arguments may arrive as JSON text inside JSON: unwrap until they are an object.
        while isinstance(row["arguments"], str):
            row["arguments"] = json.loads(row["arguments"])
    return found
