"""The asyncpg pool and the one way to reach tenant data: `async with db.tenant(tid) as conn`.

Every pooled connection switches to the restricted role `voice_app_rw` as soon as it is opened, so
PostgreSQL's row-level security applies to every query the application makes. `tenant()` opens a
transaction and sets `app.tenant_id` for it; the policies compare against that. A query that forgets
its own tenant filter therefore still sees only the current tenant's rows.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg

APP_ROLE = "voice_app_rw"


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)  # datetimes and UUIDs in audit arguments


async def _init_connection(conn: asyncpg.Connection) -> None:
    for pg_type in ("jsonb", "json"):
        await conn.set_type_codec(pg_type, encoder=_dumps, decoder=json.loads, schema="pg_catalog")
    await conn.execute(f"SET ROLE {APP_ROLE}")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset runs RESET ALL, which would also drop our SET ROLE.
    await conn.execute(f"RESET app.tenant_id; SET ROLE {APP_ROLE}")


class Database:
    """Owns the pool. Construct with `await Database.connect(url)`; close with `close()`."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 1, max_size: int = 10) -> Database:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_reset_connection,
            command_timeout=10,
            timeout=5,
        )
        return cls(pool, url)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def tenant(self, tenant_id: UUID | str) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction that can see only `tenant_id`'s rows."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
            yield conn

    @asynccontextmanager
    async def anonymous(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection with no tenant: sees no tenant rows; may call the auth_* functions."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    async def ping(self) -> bool:
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1"))


def row_dict(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
