"""The call log writes in the background, in order, and waits out a database that is away."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.fault_fixtures import TcpProxy
from tests.test_fallback_agent import account  # noqa: F401  (fixture)
from voice_app.agent import calllog
from voice_app.agent.base import CallContext
from voice_app.agent.calllog import CallLog
from voice_app.agent.toolbox import ToolResult
from voice_app.db import calls
from voice_app.db.pool import Database


async def stored(
    owner_conn: asyncpg.Connection, context: CallContext
) -> list[tuple[str, str, bool]]:
    rows = await calls.list_messages(owner_conn, uuid.UUID(context.tenant_id), context.call_sid)
    return [(r["role"], r["content"], r["interrupted"]) for r in rows]


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def proxied_db(database_url: str, proxy: TcpProxy) -> AsyncIterator[Database]:
    parts = urlsplit(database_url)
    user = f"{parts.username}@" if parts.username else ""
    db = await Database.connect(
        urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}")), max_size=2
    )
    yield db
    await db.close()


async def test_writes_return_at_once_and_land_in_order(
    db: Database, owner_conn: asyncpg.Connection, account: CallContext  # noqa: F811
) -> None:
    log = CallLog(db, account)
    greeting = log.assistant("Hi Ada, how can I help?")
    log.user("what is on my list")
    log.tool("todo_list", {"status": "open", "pin": "4826"}, ToolResult("3 todos"))
    assert greeting.id is None  # nothing waited for the database
    await log.flush()
    assert greeting.written and greeting.id is not None
    rows = await stored(owner_conn, account)
    assert [(role, interrupted) for role, _, interrupted in rows] == [
        ("assistant", False), ("user", False), ("tool", False),
    ]
    assert rows[1][1] == "what is on my list"
    assert '"pin": "***"' in rows[2][1] and "4826" not in rows[2][1]
    await log.aclose()
    assert log.lost == 0


async def test_a_trim_before_the_write_writes_only_what_was_heard(
    db: Database, owner_conn: asyncpg.Connection, account: CallContext  # noqa: F811
) -> None:
    log = CallLog(db, account)
    reply = log.assistant("You have three todos: buy milk, call mom, and pay the rent.")
    log.trim(reply, "You have three todos")  # the writer has not run yet
    await log.flush()
    assert await stored(owner_conn, account) == [("assistant", "You have three todos", True)]
    await log.aclose()


async def test_a_trim_after_the_write_updates_the_row(
    db: Database, owner_conn: asyncpg.Connection, account: CallContext  # noqa: F811
) -> None:
    log = CallLog(db, account)
    reply = log.assistant("Your team is the launch team, with Grace and Alan.")
    await log.flush()
    log.trim(reply, "Your team is")
    log.user("stop")
    await log.flush()
    assert await stored(owner_conn, account) == [
        ("assistant", "Your team is", True), ("user", "stop", False),
    ]
    await log.aclose()


async def test_a_trim_while_its_row_is_being_written_is_not_lost(
    db: Database, owner_conn: asyncpg.Connection, account: CallContext  # noqa: F811
) -> None:
    log = CallLog(db, account)
    reply = log.assistant("One, two, three, four.")
    await asyncio.sleep(0)  # the writer takes the entry and starts its transaction
    log.trim(reply, "One, two")
    await log.flush()
    assert await stored(owner_conn, account) == [("assistant", "One, two", True)]
    await log.aclose()


async def test_an_outage_delays_the_writes_and_loses_none(
    proxy: TcpProxy, proxied_db: Database, owner_conn: asyncpg.Connection,
    account: CallContext,  # noqa: F811
) -> None:
    log = CallLog(proxied_db, account)
    log.user("first")
    await log.flush()
    proxy.outage()
    second = log.user("second, while the database is away")
    reply = log.assistant("An answer the caller heard only half of.")
    log.trim(reply, "An answer")
    await asyncio.sleep(1.0)  # several retries, all refused
    assert proxy.refused > 0 and not second.written
    proxy.restore()
    async with asyncio.timeout(10):
        await log.flush()
    assert await stored(owner_conn, account) == [
        ("user", "first", False),
        ("user", "second, while the database is away", False),
        ("assistant", "An answer", True),
    ]
    await log.aclose()
    assert log.lost == 0


async def test_closing_while_the_database_stays_away_reports_what_is_lost(
    proxy: TcpProxy, proxied_db: Database, account: CallContext,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(calllog, "CLOSE_BUDGET_S", 0.5)
    log = CallLog(proxied_db, account)
    proxy.outage()
    log.user("never written")
    log.assistant("nor this")
    with caplog.at_level(logging.ERROR, logger=calllog.__name__):
        async with asyncio.timeout(5):  # bounded: a call's end never hangs on the database
            await log.aclose()
    assert log.lost == 2
    assert "lost 2 write(s)" in caplog.text and account.call_sid in caplog.text
    log.user("after the end")  # refused politely, and counted
    assert log.lost == 3


async def test_without_a_database_entries_live_in_memory(account: CallContext) -> None:  # noqa: F811
    log = CallLog(None, account)
    reply = log.assistant("Hello there, Ada.")
    log.trim(reply, "Hello")
    assert (reply.content, reply.interrupted, reply.id) == ("Hello", True, None)
    await log.flush()
    await log.aclose()
    assert log.lost == 0
