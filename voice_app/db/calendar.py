"""Linked calendar accounts (one per user and provider). Tokens arrive and leave encrypted: this
module never sees them in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg


@dataclass(frozen=True, slots=True)
class CalendarAccount:
    user_id: UUID
    provider: str
    account_email: str | None
    calendar_id: str
    token_ciphertext: bytes
    scopes: str


async def get_account(
    conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID, provider: str = "google"
) -> CalendarAccount | None:
    row = await conn.fetchrow(
        "SELECT user_id, provider, account_email, calendar_id, token_ciphertext, scopes"
        " FROM calendar_accounts WHERE tenant_id = $1 AND user_id = $2 AND provider = $3",
        tenant_id,
        user_id,
        provider,
    )
    return CalendarAccount(**dict(row)) if row else None


async def save_account(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    user_id: UUID,
    *,
    token_ciphertext: bytes,
    account_email: str | None = None,
    calendar_id: str = "primary",
    scopes: str = "",
    provider: str = "google",
) -> None:
    """Link (or re-link) the user's calendar, replacing any earlier tokens."""
    await conn.execute(
        """INSERT INTO calendar_accounts (tenant_id, user_id, provider, account_email, calendar_id,
                                          token_ciphertext, scopes)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (tenant_id, user_id, provider) DO UPDATE SET
             account_email = EXCLUDED.account_email, calendar_id = EXCLUDED.calendar_id,
             token_ciphertext = EXCLUDED.token_ciphertext, scopes = EXCLUDED.scopes,
             updated_at = now()""",
        tenant_id,
        user_id,
        provider,
        account_email,
        calendar_id,
        token_ciphertext,
        scopes,
    )


async def update_tokens(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    user_id: UUID,
    token_ciphertext: bytes,
    provider: str = "google",
) -> bool:
    status = await conn.execute(
        "UPDATE calendar_accounts SET token_ciphertext = $4, updated_at = now()"
        " WHERE tenant_id = $1 AND user_id = $2 AND provider = $3",
        tenant_id,
        user_id,
        provider,
        token_ciphertext,
    )
    return bool(status.endswith(" 1"))


async def delete_account(
    conn: asyncpg.Connection, tenant_id: UUID, user_id: UUID, provider: str = "google"
) -> bool:
    status = await conn.execute(
        "DELETE FROM calendar_accounts WHERE tenant_id = $1 AND user_id = $2 AND provider = $3",
        tenant_id,
        user_id,
        provider,
    )
    return bool(status.endswith(" 1"))
