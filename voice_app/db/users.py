"""Tenants, users and the cross-tenant sign-in lookups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    tenant_id: UUID
    account_number: str
    display_name: str
    phone_e164: str | None
    email: str | None
    timezone: str
    role: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> User:
        return cls(**{k: row[k] for k in cls.__slots__})  # type: ignore[attr-defined]

    def public(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "account_number": self.account_number,
            "display_name": self.display_name,
            "phone": self.phone_e164,
            "email": self.email,
            "timezone": self.timezone,
            "role": self.role,
        }


_USER_COLUMNS = "id, tenant_id, account_number, display_name, phone_e164, email, timezone, role"


@dataclass(frozen=True, slots=True)
class AccountMatch:
    tenant_id: UUID
    user_id: UUID
    pin_hash: str


async def account_for_sign_in(conn: asyncpg.Connection, account_number: str) -> AccountMatch | None:
    """Who owns this account number, across tenants (a SECURITY DEFINER lookup)."""
    row = await conn.fetchrow("SELECT * FROM auth_account($1)", account_number)
    return AccountMatch(row["tenant_id"], row["user_id"], row["pin_hash"]) if row else None


async def accounts_for_phone(conn: asyncpg.Connection, phone_e164: str) -> list[str]:
    """Account numbers whose owner has this phone number (caller-ID hint; may be several)."""
    rows = await conn.fetch("SELECT account_number FROM auth_accounts_by_phone($1)", phone_e164)
    return [r["account_number"] for r in rows]


async def create_tenant(conn: asyncpg.Connection, slug: str, name: str) -> UUID:
    """Create a tenant (owner connection only: used by seeding and admin tooling)."""
    return await conn.fetchval(
        "INSERT INTO tenants (slug, name) VALUES ($1, $2) "
        "ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name RETURNING id",
        slug,
        name,
    )


async def tenant_name(conn: asyncpg.Connection, tenant_id: UUID) -> str | None:
    return await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tenant_id)


async def create_user(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    *,
    account_number: str,
    display_name: str,
    pin_hash: str,
    phone_e164: str | None = None,
    email: str | None = None,
    timezone: str = "UTC",
    role: str = "member",
) -> User:
    row = await conn.fetchrow(
        f"""INSERT INTO users (tenant_id, account_number, display_name, pin_hash, phone_e164,
                               email, timezone, role)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_USER_COLUMNS}""",
        tenant_id,
        account_number,
        display_name,
        pin_hash,
        phone_e164,
        email,
        timezone,
        role,
    )
    return User.from_row(row)


async def get_user(conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID) -> User | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2", tenant_id, user_id
    )
    return User.from_row(row) if row else None


async def list_users(
    conn: asyncpg.Connection, tenant_id: UUID, *, limit: int = 50, offset: int = 0
) -> list[User]:
    rows = await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM users WHERE tenant_id = $1 "
        "ORDER BY lower(display_name) LIMIT $2 OFFSET $3",
        tenant_id,
        limit,
        offset,
    )
    return [User.from_row(r) for r in rows]


async def find_users_by_name(
    conn: asyncpg.Connection, tenant_id: UUID, name: str, *, limit: int = 10
) -> list[User]:
    rows = await conn.fetch(
        f"""SELECT {_USER_COLUMNS} FROM users
            WHERE tenant_id = $1 AND display_name ILIKE '%' || $2 || '%'
            ORDER BY lower(display_name) = lower($2) DESC, lower(display_name) LIMIT $3""",
        tenant_id,
        name.replace("%", r"\%").replace("_", r"\_"),
        limit,
    )
    return [User.from_row(r) for r in rows]


async def update_profile(
    conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID, changes: dict[str, Any]
) -> User | None:
    """Update the allowed profile fields; unknown keys are a programming error."""
    allowed = {"display_name", "email", "phone_e164", "timezone"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not profile fields: {sorted(unknown)}")
    if not changes:
        return await get_user(conn, tenant_id, user_id)
    columns = sorted(changes)
    assignments = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(columns))
    row = await conn.fetchrow(
        f"UPDATE users SET {assignments}, updated_at = now() WHERE tenant_id = $1 AND id = $2 "
        f"RETURNING {_USER_COLUMNS}",
        tenant_id,
        user_id,
        *[changes[c] for c in columns],
    )
    return User.from_row(row) if row else None


async def set_pin_hash(
    conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID, pin_hash: str
) -> bool:
    status = await conn.execute(
        "UPDATE users SET pin_hash = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        user_id,
        pin_hash,
    )
    return status.endswith(" 1")


async def get_pin_hash(conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID) -> str | None:
    return await conn.fetchval(
        "SELECT pin_hash FROM users WHERE tenant_id = $1 AND id = $2", tenant_id, user_id
    )
