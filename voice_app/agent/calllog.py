"""Writes a call's conversation to PostgreSQL as it happens: user turns, replies, tool calls.

A failing database must not silence the call, so every write is bounded and its errors are logged,
not raised. Without a database (unit tests, tooling) the log is a no-op.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from voice_app.agent.base import CallContext
from voice_app.agent.toolbox import ToolResult
from voice_app.db import calls
from voice_app.db.pool import Database

log = logging.getLogger(__name__)
T = TypeVar("T")

WRITE_BUDGET_S = 3.0
_SECRET_KEYS = ("pin", "password", "secret", "token")


def redact(arguments: dict[str, Any]) -> dict[str, Any]:
    """Tool arguments fit for storage: PINs and other secrets never reach the transcript."""
    return {
        k: "***" if any(s in k.lower() for s in _SECRET_KEYS) else v for k, v in arguments.items()
    }


class CallLog:
    def __init__(self, db: Database | None, context: CallContext) -> None:
        self._db = db
        self._context = context

    async def user(self, text: str) -> int | None:
        return await self._add("user", text)

    async def assistant(self, text: str) -> int | None:
        return await self._add("assistant", text)

    async def tool(self, name: str, arguments: dict[str, Any], result: ToolResult) -> int | None:
        record = {
            "tool": name,
            "arguments": redact(arguments),
            "ok": not result.is_error,
            "result": result.text[:2000],
        }
        return await self._add("tool", json.dumps(record, default=str))

    async def trim(self, message_id: int, heard: str) -> None:
        tenant = UUID(self._context.tenant_id)
        await self._write(lambda conn: calls.trim_message(conn, tenant, message_id, heard))

    async def _add(self, role: str, content: str) -> int | None:
        tenant, sid = UUID(self._context.tenant_id), self._context.call_sid
        return await self._write(lambda conn: calls.add_message(conn, tenant, sid, role, content))

    async def _write(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T | None:
        if self._db is None:
            return None
        try:
            async with (
                asyncio.timeout(WRITE_BUDGET_S),
                self._db.tenant(self._context.tenant_id) as conn,
            ):
                return await op(conn)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.exception("could not persist to the call log of %s", self._context.call_sid)
            return None
