"""Todos, tenant-scoped. Visibility is decided here, in SQL: a user sees a todo they own, are
assigned, or that belongs to a team they are in. Every query filters `tenant_id = $1` itself; RLS
is the second lock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

PRIORITIES = ("urgent", "high", "normal", "low")  # most pressing first: the sort order

_SELECT = """
SELECT t.id, t.title, t.notes, t.status, t.priority, t.due_at, t.completed_at, t.created_at,
       t.owner_id, o.display_name AS owner_name,
       t.assignee_id, a.display_name AS assignee_name,
       t.team_id, tm.name AS team_name
FROM todos t
JOIN users o ON o.tenant_id = t.tenant_id AND o.id = t.owner_id
LEFT JOIN users a ON a.tenant_id = t.tenant_id AND a.id = t.assignee_id
LEFT JOIN teams tm ON tm.tenant_id = t.tenant_id AND tm.id = t.team_id
"""

# $1 tenant, $2 viewer.
_VISIBLE = """(t.owner_id = $2 OR t.assignee_id = $2 OR t.team_id IN
    (SELECT m.team_id FROM team_members m WHERE m.tenant_id = $1 AND m.user_id = $2))"""

_ORDER = """ORDER BY t.due_at ASC NULLS LAST,
    array_position(ARRAY['urgent', 'high', 'normal', 'low'], t.priority), t.created_at"""

_UPDATABLE = frozenset(
    {"title", "notes", "status", "priority", "due_at", "completed_at", "assignee_id", "team_id"}
)


async def create_todo(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    owner_id: UUID,
    *,
    title: str,
    notes: str = "",
    priority: str = "normal",
    due_at: datetime | None = None,
    assignee_id: UUID | None = None,
    team_id: UUID | None = None,
) -> dict[str, Any]:
    todo_id = await conn.fetchval(
        "INSERT INTO todos (tenant_id, owner_id, title, notes, priority, due_at, assignee_id,"
        " team_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        tenant_id,
        owner_id,
        title,
        notes,
        priority,
        due_at,
        assignee_id,
        team_id,
    )
    todo = await get_todo(conn, tenant_id, owner_id, todo_id)
    assert todo is not None  # the owner always sees their own todo
    return todo


async def get_todo(
    conn: asyncpg.Connection, tenant_id: UUID, viewer_id: UUID, todo_id: UUID
) -> dict[str, Any] | None:
    """The todo if `viewer_id` may see it, else None (absent and hidden look the same)."""
    row = await conn.fetchrow(
        f"{_SELECT} WHERE t.tenant_id = $1 AND {_VISIBLE} AND t.id = $3",
        tenant_id,
        viewer_id,
        todo_id,
    )
    return dict(row) if row else None


async def list_todos(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    viewer_id: UUID,
    *,
    status: str | None = None,
    priority: str | None = None,
    assignee_id: UUID | None = None,
    team_id: UUID | None = None,
    due_from: datetime | None = None,
    due_before: datetime | None = None,
    text: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Visible todos matching every filter given (None means "any")."""
    pattern = None if text is None else "%" + _escape_like(text) + "%"
    rows = await conn.fetch(
        f"""{_SELECT}
            WHERE t.tenant_id = $1 AND {_VISIBLE}
              AND ($3::text IS NULL OR t.status = $3)
              AND ($4::text IS NULL OR t.priority = $4)
              AND ($5::uuid IS NULL OR t.assignee_id = $5)
              AND ($6::uuid IS NULL OR t.team_id = $6)
              AND ($7::timestamptz IS NULL OR t.due_at >= $7)
              AND ($8::timestamptz IS NULL OR t.due_at < $8)
              AND ($9::text IS NULL OR t.title ILIKE $9 OR t.notes ILIKE $9)
            {_ORDER} LIMIT $10""",
        tenant_id,
        viewer_id,
        status,
        priority,
        assignee_id,
        team_id,
        due_from,
        due_before,
        pattern,
        limit,
    )
    return [dict(r) for r in rows]


async def update_todo(
    conn: asyncpg.Connection, tenant_id: UUID, todo_id: UUID, changes: dict[str, Any]
) -> bool:
    """Set the given columns; unknown keys are a programming error."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not todo fields: {sorted(unknown)}")
    columns = sorted(changes)
    assignments = "".join(f"{c} = ${i + 3}, " for i, c in enumerate(columns))
    status = await conn.execute(
        f"UPDATE todos SET {assignments}updated_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        todo_id,
        *[changes[c] for c in columns],
    )
    return bool(status.endswith(" 1"))


async def append_note(conn: asyncpg.Connection, tenant_id: UUID, todo_id: UUID, line: str) -> bool:
    status = await conn.execute(
        "UPDATE todos SET notes = CASE WHEN notes = '' THEN $3 ELSE notes || E'\\n' || $3 END,"
        " updated_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        todo_id,
        line,
    )
    return bool(status.endswith(" 1"))


async def delete_todo(conn: asyncpg.Connection, tenant_id: UUID, todo_id: UUID) -> bool:
    status = await conn.execute(
        "DELETE FROM todos WHERE tenant_id = $1 AND id = $2", tenant_id, todo_id
    )
    return bool(status.endswith(" 1"))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
