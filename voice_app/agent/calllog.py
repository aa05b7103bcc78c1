"""Writes a call's conversation to PostgreSQL as it happens: user turns, replies, tool calls.

Nothing the caller waits for may wait on the database, so writing is queued: `user()`,
`assistant()` and `tool()` return at once with an `Entry`, and one writer task per call commits
the queue in order, a batch per transaction. A database that is down or slow costs the call
nothing: the writer keeps the queue and retries with backoff, and `aclose()` (at the end of the
call) gives it a last bounded chance before it reports what it could not write. A barge-in trims
an entry in the queue before it is ever written, or updates the row once it is.
Without a database (unit tests, tooling) the log only keeps its entries in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from voice_app.agent.base import CallContext
from voice_app.agent.toolbox import ToolResult
from voice_app.db import calls
from voice_app.db.pool import Database

log = logging.getLogger(__name__)

WRITE_BUDGET_S = 3.0  # one batch
CLOSE_BUDGET_S = 10.0  # how long the end of a call waits for a database that is away
MAX_QUEUED = 1000  # per call; beyond this the oldest entries give way (and are reported)
MAX_BATCH = 100
_RETRY_S = (0.1, 0.25, 0.5, 1.0, 2.0)
_SECRET_KEYS = ("pin", "password", "secret", "token")
_DATABASE_AWAY = (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


def redact(arguments: dict[str, Any]) -> dict[str, Any]:
    """Tool arguments fit for storage: PINs and other secrets never reach the transcript."""
    return {
        k: "***" if any(s in k.lower() for s in _SECRET_KEYS) else v for k, v in arguments.items()
    }


@dataclass(eq=False, slots=True)
class Entry:
    """One row of the call log. `id` is set once the row is committed."""

    role: str
    content: str
    interrupted: bool = False
    id: int | None = None
    written: bool = False  # committed (or given up on at close)


@dataclass(frozen=True, slots=True)
class _Trim:
    entry: Entry
    heard: str


class CallLog:
    def __init__(self, db: Database | None, context: CallContext) -> None:
        self._db = db
        self._context = context
        self._queue: list[Entry | _Trim] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._in_flight = 0  # the head of the queue the writer is committing right now
        self._closed = False
        self.lost = 0  # entries and trims dropped: the queue overflowed or the call ended first

    def user(self, text: str) -> Entry:
        return self._add("user", text)

    def assistant(self, text: str) -> Entry:
        return self._add("assistant", text)

    def tool(self, name: str, arguments: dict[str, Any], result: ToolResult) -> Entry:
        record = {
            "tool": name,
            "arguments": redact(arguments),
            "ok": not result.is_error,
            "result": result.text[:2000],
        }
        return self._add("tool", json.dumps(record, default=str))

    def trim(self, entry: Entry, heard: str) -> None:
        """Keep only what the caller heard of `entry` (an assistant line cut by a barge-in)."""
        if not entry.written and entry in self._queue[self._in_flight :]:
            entry.content, entry.interrupted = heard, True  # not written yet: write it short
        else:
            self._enqueue(_Trim(entry, heard))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (the writer retries meanwhile)."""
        if self._queue:
            await self._idle.wait()

    async def aclose(self) -> None:
        """Flush within CLOSE_BUDGET_S, then stop the writer; what is left is reported lost."""
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_BUDGET_S):
                await self.flush()
        except TimeoutError:
            pass
        finally:
            if self._writer is not None:
                self._writer.cancel()
                await asyncio.wait([self._writer])
            if self._queue:
                self._give_up(len(self._queue), "the call ended while the database was away")

    # The writer ---------------------------------------------------------------------------

    def _add(self, role: str, content: str) -> Entry:
        entry = Entry(role, content)
        self._enqueue(entry)
        return entry

    def _enqueue(self, item: Entry | _Trim) -> None:
        if self._db is None:
            if isinstance(item, _Trim):
                item.entry.content, item.entry.interrupted = item.heard, True
            return
        if self._closed:
            self._give_up(1, "written after the call log closed")
            return
        self._queue.append(item)
        if len(self._queue) > MAX_QUEUED:
            self._queue.pop(0)
            self._give_up(1, "the queue overflowed")
        self._idle.clear()
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_forever(), name="call-log")

    async def _write_forever(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._queue[:MAX_BATCH]
                self._in_flight = len(batch)
                try:
                    await self._commit(batch)
                except _DATABASE_AWAY as error:
                    self._in_flight = 0
                    if failures == 0:
                        log.warning(
                            "call log of %s waits for the database (%d queued): %r",
                            self._context.call_sid,
                            len(self._queue),
                            error,
                        )
                    await asyncio.sleep(_RETRY_S[min(failures, len(_RETRY_S) - 1)])
                    failures += 1
                    continue
                if failures:
                    log.info("call log of %s caught up", self._context.call_sid)
                    failures = 0
                del self._queue[: len(batch)]
                self._in_flight = 0
            self._idle.set()

    async def _commit(self, batch: list[Entry | _Trim]) -> None:
        assert self._db is not None
        tenant, sid = UUID(self._context.tenant_id), self._context.call_sid
        ids: dict[Entry, int] = {}
        async with asyncio.timeout(WRITE_BUDGET_S), self._db.tenant(tenant) as conn:
            for item in batch:
                if isinstance(item, Entry):
                    ids[item] = await calls.add_message(
                        conn, tenant, sid, item.role, item.content, interrupted=item.interrupted
                    )
                    continue
                row_id = ids.get(item.entry, item.entry.id)
                if row_id is not None:  # else its row was never written: nothing to trim
                    await calls.trim_message(conn, tenant, row_id, item.heard)
        for entry, row_id in ids.items():  # only now: a rolled-back batch is retried whole
            entry.id, entry.written = row_id, True

    def _give_up(self, count: int, why: str) -> None:
        self.lost += count
        log.error("call log of %s lost %d write(s): %s", self._context.call_sid, count, why)
