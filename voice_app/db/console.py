"""What the agent console and the transfer need from PostgreSQL, tenant-scoped.

Every function takes a connection from `db.tenant(tid)` and filters `tenant_id = $1` itself; RLS is
the second lock. The one cross-tenant lookup (an agent's e-mail at sign-in) goes through the
SECURITY DEFINER function `auth_agent()` and so runs on `db.anonymous()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

AGENT_TEAM = "Agents"  # the team that owns callback todos, one per tenant, made on first use


@dataclass(frozen=True, slots=True)
class AgentLogin:
    tenant_id: UUID
    agent_id: UUID
    password_hash: str


async def agent_for_login(conn: asyncpg.Connection, email: str) -> AgentLogin | None:
    """The agent with this e-mail, across tenants (for the password check only)."""
    row = await conn.fetchrow("SELECT * FROM auth_agent($1)", email.strip().lower())
    return AgentLogin(row["tenant_id"], row["agent_id"], row["password_hash"]) if row else None


async def get_agent(
    conn: asyncpg.Connection, tenant_id: UUID, agent_id: UUID
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT a.id, a.email, a.display_name, a.extension, t.name AS tenant_name
           FROM agents a JOIN tenants t ON t.id = a.tenant_id
           WHERE a.tenant_id = $1 AND a.id = $2""",
        tenant_id, agent_id,
    )
    return dict(row) if row else None


async def caller_facts(
    conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID
) -> dict[str, Any] | None:
    """Who the caller is, for the card: name, account, phone, tenant."""
    row = await conn.fetchrow(
        """SELECT u.display_name, u.account_number, u.phone_e164, u.timezone,
                  t.name AS tenant_name
           FROM users u JOIN tenants t ON t.id = u.tenant_id
           WHERE u.tenant_id = $1 AND u.id = $2""",
        tenant_id, user_id,
    )
    return dict(row) if row else None


async def conversation(
    conn: asyncpg.Connection, tenant_id: UUID, call_sid: str, *, limit: int = 60
) -> list[dict[str, Any]]:
    """The last `limit` spoken turns of a call, oldest first (tool and system rows left out)."""
    rows = await conn.fetch(
        """SELECT role, content, interrupted, created_at FROM (
             SELECT id, role, content, interrupted, created_at FROM messages
             WHERE tenant_id = $1 AND call_sid = $2 AND role IN ('user', 'assistant')
             ORDER BY id DESC LIMIT $3) recent
           ORDER BY id""",
        tenant_id, call_sid, limit,
    )
    return [dict(r) for r in rows]


async def open_todos(
    conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID, *, limit: int = 10
) -> list[dict[str, Any]]:
    """The caller's open todos (owned, assigned, or their teams'), most pressing first."""
    rows = await conn.fetch(
        """SELECT t.title, t.priority, t.due_at, tm.name AS team_name
           FROM todos t LEFT JOIN teams tm ON tm.tenant_id = t.tenant_id AND tm.id = t.team_id
           WHERE t.tenant_id = $1 AND t.status = 'open'
             AND (t.owner_id = $2 OR t.assignee_id = $2 OR t.team_id IN
                  (SELECT m.team_id FROM team_members m WHERE m.tenant_id = $1 AND m.user_id = $2))
           ORDER BY t.due_at ASC NULLS LAST,
                    array_position(ARRAY['urgent', 'high', 'normal', 'low'], t.priority),
                    t.created_at
           LIMIT $3""",
        tenant_id, user_id, limit,
    )
    return [dict(r) for r in rows]


async def agent_team_id(conn: asyncpg.Connection, tenant_id: UUID) -> UUID:
    """The tenant's agent team, created on first use. It has no members: agents are not users,
    and they see the tenant's callbacks through the console, not through team membership."""
    team_id: UUID = await conn.fetchval(
        "INSERT INTO teams (tenant_id, name) VALUES ($1, $2) "
        "ON CONFLICT (tenant_id, lower(name)) DO UPDATE SET name = teams.name RETURNING id",
        tenant_id, AGENT_TEAM,
    )
    return team_id


async def create_callback_todo(
    conn: asyncpg.Connection, tenant_id: UUID, caller_id: UUID, *, title: str, notes: str
) -> UUID:
    """A high-priority todo on the agent team. The caller owns it (todos need a user as owner),
    so they can hear about it on their next call too."""
    team_id = await agent_team_id(conn, tenant_id)
    todo_id: UUID = await conn.fetchval(
        "INSERT INTO todos (tenant_id, owner_id, team_id, title, notes, priority) "
        "VALUES ($1, $2, $3, $4, $5, 'high') RETURNING id",
        tenant_id, caller_id, team_id, title[:200], notes[:4000],
    )
    return todo_id


async def set_call_outcome(
    conn: asyncpg.Connection, tenant_id: UUID, call_sid: str, outcome: str
) -> None:
    await conn.execute(
        "UPDATE calls SET outcome = $3, updated_at = now() WHERE tenant_id = $1 AND call_sid = $2",
        tenant_id, call_sid, outcome,
    )
