"""Calls, their conversation messages, tool-call audit and security events."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

TERMINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "canceled", "failed"})


async def record_call_event(
    conn: asyncpg.Connection,
    *,
    call_sid: str,
    status: str,
    sequence: int,
    at: datetime,
    from_number: str = "",
    to_number: str = "",
    channel: str = "pstn",
    duration_s: int | None = None,
) -> None:
    """Record a Twilio status callback. Idempotent: retries and reordering change nothing."""
    await conn.execute(
        "SELECT record_call_event($1, $2, $3, $4, $5, $6, $7, $8)",
        call_sid,
        status,
        sequence,
        from_number,
        to_number,
        channel,
        duration_s,
        at,
    )


async def claim_call(
    conn: asyncpg.Connection, call_sid: str, tenant_id: UUID, user_id: UUID, channel: str
) -> None:
    """Bind a call to the caller who proved who they are."""
    await conn.execute("SELECT claim_call($1, $2, $3, $4)", call_sid, tenant_id, user_id, channel)


async def set_call_outcome(
    conn: asyncpg.Connection, tenant_id: UUID, call_sid: str, outcome: str
) -> None:
    await conn.execute(
        "UPDATE calls SET outcome = $3, updated_at = now() WHERE tenant_id = $1 AND call_sid = $2",
        tenant_id,
        call_sid,
        outcome,
    )


async def get_call(
    conn: asyncpg.Connection, tenant_id: UUID, call_sid: str
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM calls WHERE tenant_id = $1 AND call_sid = $2", tenant_id, call_sid
    )
    return dict(row) if row else None


async def add_message(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    call_sid: str,
    role: str,
    content: str,
    *,
    interrupted: bool = False,
) -> int:
    return await conn.fetchval(
        "INSERT INTO messages (tenant_id, call_sid, role, content, interrupted) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id",
        tenant_id,
        call_sid,
        role,
        content,
        interrupted,
    )


async def trim_message(
    conn: asyncpg.Connection, tenant_id: UUID, message_id: int, heard: str
) -> None:
    """After a barge-in, keep only what the caller actually heard of an assistant message."""
    await conn.execute(
        "UPDATE messages SET content = $3, interrupted = true WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        message_id,
        heard,
    )


async def list_messages(
    conn: asyncpg.Connection, tenant_id: UUID, call_sid: str, *, limit: int = 200
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, role, content, interrupted, created_at FROM messages "
        "WHERE tenant_id = $1 AND call_sid = $2 ORDER BY id LIMIT $3",
        tenant_id,
        call_sid,
        limit,
    )
    return [dict(r) for r in rows]


async def audit_tool_call(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    user_id: UUID,
    *,
    call_sid: str | None,
    tool: str,
    arguments: dict[str, Any],
    outcome: str,
    detail: str = "",
    duration_ms: int = 0,
) -> None:
    await conn.execute(
        "INSERT INTO tool_calls (tenant_id, user_id, call_sid, tool, arguments, outcome, detail,"
        " duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        tenant_id,
        user_id,
        call_sid,
        tool,
        arguments,
        outcome,
        detail[:500],
        duration_ms,
    )


async def list_tool_calls(
    conn: asyncpg.Connection, tenant_id: UUID, *, call_sid: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT tool, arguments, outcome, detail, duration_ms, created_at FROM tool_calls "
        "WHERE tenant_id = $1 AND ($2::text IS NULL OR call_sid = $2) ORDER BY id DESC LIMIT $3",
        tenant_id,
        call_sid,
        limit,
    )
    return [dict(r) for r in rows]


async def add_security_event(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    kind: str,
    *,
    user_id: UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO security_events (tenant_id, user_id, kind, detail)"
        " VALUES ($1, $2, $3, $4)",
        tenant_id,
        user_id,
        kind,
        detail or {},
    )


async def list_security_events(
    conn: asyncpg.Connection, tenant_id: UUID, *, limit: int = 50
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT user_id, kind, detail, created_at FROM security_events WHERE tenant_id = $1 "
        "ORDER BY id DESC LIMIT $2",
        tenant_id,
        limit,
    )
    return [dict(r) for r in rows]
