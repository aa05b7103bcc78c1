"""The end of a call completes even when the server cancels the handler twice.

When the caller's socket vanishes, Quart cancels the stream handler, and a second cancellation
can arrive while CallSession is still closing its provider sockets. Before the fix the second
one skipped the rest: the call log was never flushed (its writer task destroyed pending) and
the call's end never recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from tests.test_fallback_agent import account  # noqa: F401  (fixture)
from voice_app.agent.base import CallContext
from voice_app.agent.fallback import FallbackAssistant
from voice_app.agent.toolbox import Toolbox, ToolResult
from voice_app.db import calls
from voice_app.db.pool import Database
from voice_app.streams.session import CallSession


class SlowToClose:
    """A provider stream whose close takes a while (a TLS goodbye to a far server)."""

    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        await asyncio.sleep(0.3)
        self.closed = True


class NoTools(Toolbox):
    async def list_tools(self) -> list[Any]:
        return []

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        return ToolResult("no tools here", is_error=True)


class Hooks:
    def __init__(self) -> None:
        self.finished_with: str | None = None

    async def finished(self, outcome: str) -> None:
        self.finished_with = outcome

    def __getattr__(self, name: str) -> Any:  # the rest of CallHooks is not reached here
        raise AssertionError(f"unexpected hook {name}")


async def test_a_second_cancel_does_not_cut_the_end_of_the_call_short(
    db: Database, owner_conn: asyncpg.Connection, account: CallContext  # noqa: F811
) -> None:
    assistant = FallbackAssistant(toolbox=NoTools(), context=account, db=db)
    hooks = Hooks()

    async def send(_: str) -> None: ...

    session = CallSession(
        context=account, stream_sid="MZ" + uuid.uuid4().hex, send=send,
        stt=None, tts=None, assistant=assistant, hooks=hooks,  # type: ignore[arg-type]
    )
    stt, tts = SlowToClose(), SlowToClose()
    session.stt, session.tts = stt, tts  # type: ignore[assignment]
    await assistant.greeting()  # queued in the call log, not yet written
    session.outcome = "caller_hangup"

    ending = asyncio.create_task(session._cleanup())
    await asyncio.sleep(0.05)
    ending.cancel()  # the peer vanished ...
    await asyncio.sleep(0.05)
    ending.cancel()  # ... and the server cancels again while the sockets are closing
    await asyncio.gather(ending, return_exceptions=True)

    async with asyncio.timeout(5):  # the cleanup carries on by itself, bounded
        while hooks.finished_with is None:
            await asyncio.sleep(0.02)
    assert stt.closed and tts.closed
    assert hooks.finished_with == "caller_hangup"
    rows = await calls.list_messages(owner_conn, uuid.UUID(account.tenant_id), account.call_sid)
    assert [r["role"] for r in rows] == ["assistant"]  # the greeting reached the database
    assert assistant.call_log.lost == 0
