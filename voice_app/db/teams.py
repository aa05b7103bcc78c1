"""Teams and their members, tenant-scoped. Who may change what is decided by the caller of these
functions (voice_app.tools.teams); these only read and write.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

_SELECT = """
SELECT tm.id, tm.name, tm.created_at,
       (SELECT count(*) FROM team_members m WHERE m.tenant_id = tm.tenant_id AND m.team_id = tm.id)
         AS member_count,
       (SELECT m.role FROM team_members m
         WHERE m.tenant_id = tm.tenant_id AND m.team_id = tm.id AND m.user_id = $2) AS my_role
FROM teams tm
"""


async def create_team(
    conn: asyncpg.Connection, tenant_id: UUID, name: str, owner_id: UUID
) -> dict[str, Any] | None:
    """A new team with `owner_id` as its owner, or None when the name is taken."""
    team_id = await conn.fetchval(
        "INSERT INTO teams (tenant_id, name, created_by) VALUES ($1, $2, $3) "
        "ON CONFLICT (tenant_id, lower(name)) DO NOTHING RETURNING id",
        tenant_id,
        name,
        owner_id,
    )
    if team_id is None:
        return None
    await add_member(conn, tenant_id, team_id, owner_id, "owner")
    return await get_team(conn, tenant_id, owner_id, team_id)


async def get_team(
    conn: asyncpg.Connection, tenant_id: UUID, viewer_id: UUID, team_id: UUID
) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        f"{_SELECT} WHERE tm.tenant_id = $1 AND tm.id = $3", tenant_id, viewer_id, team_id
    )
    return dict(row) if row else None


async def list_teams(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    viewer_id: UUID,
    *,
    name_contains: str | None = None,
    member_only: bool = False,
    limit: int = 50,
) -> list[dict[str, Any]]:
    pattern = None if name_contains is None else "%" + _escape_like(name_contains) + "%"
    rows = await conn.fetch(
        f"""SELECT * FROM ({_SELECT} WHERE tm.tenant_id = $1
                AND ($3::text IS NULL OR tm.name ILIKE $3)) found
            WHERE NOT $4 OR my_role IS NOT NULL
            ORDER BY lower(name) LIMIT $5""",
        tenant_id,
        viewer_id,
        pattern,
        member_only,
        limit,
    )
    return [dict(r) for r in rows]


async def rename_team(
    conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID, name: str
) -> bool | None:
    """True when renamed, False when the team is gone, None when the name is taken."""
    try:
        async with conn.transaction():  # a savepoint: a clash must not abort the caller's work
            status = await conn.execute(
                "UPDATE teams SET name = $3 WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                team_id,
                name,
            )
    except asyncpg.UniqueViolationError:
        return None
    return bool(status.endswith(" 1"))


async def delete_team(conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID) -> bool:
    """Delete a team; its members go with it and its todos stay, without a team."""
    status = await conn.execute(
        "DELETE FROM teams WHERE tenant_id = $1 AND id = $2", tenant_id, team_id
    )
    return bool(status.endswith(" 1"))


async def member_role(
    conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID, user_id: UUID
) -> str | None:
    return await conn.fetchval(  # type: ignore[no-any-return]
        "SELECT role FROM team_members WHERE tenant_id = $1 AND team_id = $2 AND user_id = $3",
        tenant_id,
        team_id,
        user_id,
    )


async def list_members(
    conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT u.id AS user_id, u.display_name, m.role, m.added_at
           FROM team_members m JOIN users u ON u.tenant_id = m.tenant_id AND u.id = m.user_id
           WHERE m.tenant_id = $1 AND m.team_id = $2
           ORDER BY m.role = 'owner' DESC, lower(u.display_name)""",
        tenant_id,
        team_id,
    )
    return [dict(r) for r in rows]


async def count_owners(conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM team_members WHERE tenant_id = $1 AND team_id = $2"
            " AND role = 'owner'",
            tenant_id,
            team_id,
        )
    )


async def add_member(
    conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID, user_id: UUID, role: str = "member"
) -> bool:
    """False when the user was already a member (their role is left alone)."""
    added = await conn.fetchval(
        "INSERT INTO team_members (tenant_id, team_id, user_id, role) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING RETURNING true",
        tenant_id,
        team_id,
        user_id,
        role,
    )
    return bool(added)


async def remove_member(
    conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID, user_id: UUID
) -> bool:
    status = await conn.execute(
        "DELETE FROM team_members WHERE tenant_id = $1 AND team_id = $2 AND user_id = $3",
        tenant_id,
        team_id,
        user_id,
    )
    return bool(status.endswith(" 1"))


async def set_member_role(
    conn: asyncpg.Connection, tenant_id: UUID, team_id: UUID, user_id: UUID, role: str
) -> bool:
    status = await conn.execute(
        "UPDATE team_members SET role = $4 WHERE tenant_id = $1 AND team_id = $2 AND user_id = $3",
        tenant_id,
        team_id,
        user_id,
        role,
    )
    return bool(status.endswith(" 1"))


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
