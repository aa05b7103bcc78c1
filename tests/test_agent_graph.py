"""ClaudeAssistant and its graph against the local Anthropic stand-in and a real MCP server:
streaming through tool use, persistence, prompt caching, budgets, the fallback path, barge-in.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from anthropic import AsyncAnthropic

from tests.standins import wait_for
from tests.standins.anthropic import AnthropicStandIn, ToolUse
from tests.test_fallback_agent import NOW, FakeDomain, caller, serve_fake_domain
from voice_app.agent.base import (
    AgentEvent,
    CallContext,
    Hangup,
    Retract,
    TextDelta,
    ToolActivity,
    Transfer,
)
from voice_app.agent.claude import ClaudeAssistant
from voice_app.agent.factory import build_assistant
from voice_app.agent.fallback import FallbackAssistant
from voice_app.agent.history import (
    NOT_RUN,
    close_tool_uses,
    is_consistent,
    message_text,
    replace_text,
    split_heard,
)
from voice_app.agent.prompts import TROUBLE_LINE
from voice_app.agent.toolbox import ToolResult
from voice_app.config import Settings
from voice_app.db import calls, users
from voice_app.db.pool import Database

fake = pytest.fixture(serve_fake_domain)


@pytest.fixture
async def claude() -> AsyncIterator[AnthropicStandIn]:
    async with AnthropicStandIn() as standin:
        yield standin


@pytest.fixture
async def account(owner_conn: asyncpg.Connection) -> CallContext:
    suffix = uuid.uuid4().hex[:8]
    tenant_id = await users.create_tenant(owner_conn, f"graph-{suffix}", "Graph Co")
    user = await users.create_user(
        owner_conn, tenant_id, account_number=str(40_000_000 + int(suffix, 16) % 9_000_000),
        display_name="Ada Lovelace", pin_hash="x", timezone="America/New_York",
    )
    return caller(str(tenant_id), str(user.id))


_clients: list[AsyncAnthropic] = []


@pytest.fixture(autouse=True)
async def close_clients() -> AsyncIterator[None]:
    yield
    while _clients:
        await _clients.pop().close()


def assistant_for(
    claude: AnthropicStandIn, fake: FakeDomain, context: CallContext, db: Database | None = None,
    **budgets: float,
) -> ClaudeAssistant:
    client = AsyncAnthropic(base_url=claude.url, api_key="test-key", max_retries=0)
    _clients.append(client)
    return ClaudeAssistant(
        client=client, toolbox=fake.toolbox, context=context, db=db, now=lambda: NOW, **budgets
    )


async def turn(assistant: ClaudeAssistant, text: str) -> list[AgentEvent]:
    return [event async for event in assistant.respond(text)]


def spoken(events: list[AgentEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def messages(
    owner_conn: asyncpg.Connection, assistant: ClaudeAssistant
) -> list[dict[str, Any]]:
    """The call log as stored, once the assistant's background writer has caught up."""
    await assistant.call_log.flush()
    context = assistant.context
    return await calls.list_messages(owner_conn, uuid.UUID(context.tenant_id), context.call_sid)


# The happy path --------------------------------------------------------------------------------


class WatchedStandIn(AnthropicStandIn):
    """Counts the replies it has finished streaming, to see what reached us before the end."""

    finished = 0

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            return await super()._messages(request)
        finally:
            self.finished += 1


async def test_streams_through_tool_use_and_persists(
    fake: FakeDomain, db: Database, owner_conn: asyncpg.Connection, account: CallContext
) -> None:
    async with WatchedStandIn(tokens_per_second=10) as claude:
        claude.reply("Let me check your list.", ToolUse("todo_list", {"status": "open"}))
        claude.reply("You have three todos: buy milk, call mom, and pay the rent.")
        assistant = assistant_for(claude, fake, account, db)
        # Each event with (requests made, replies fully streamed) when it reached us.
        timeline: list[tuple[AgentEvent, int, int]] = []
        async for event in assistant.respond("what's on my to do list"):
            timeline.append((event, len(claude.messages), claude.finished))

    events = [e for e, _, _ in timeline]
    assert spoken(events) == (
        "Let me check your list. You have three todos: buy milk, call mom, and pay the rent."
    )
    # Words reach the speaker while the stand-in is still streaming that very reply.
    texts = [(requests, finished) for e, requests, finished in timeline if isinstance(e, TextDelta)]
    assert texts[0] == (1, 0)  # the first step's words, before its tool call was even sent
    assert (2, 1) in texts  # the answer's words, before the answer was finished
    tool = events.index(ToolActivity("todo_list", {"status": "open"}, ok=True))
    assert all(requests == 1 for _, requests, _ in timeline[:tool])  # the tool ran in between
    assert all(requests == 2 for _, requests, _ in timeline[tool + 1 :])

    # The second request carried the tool's answer back as a tool_result.
    second = claude.messages[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    result = second[2]["content"][0]
    assert result["type"] == "tool_result" and "pay the rent" in json.dumps(result["content"])
    assert second[1]["content"][1]["type"] == "tool_use"

    assert is_consistent(assistant.history) and len(assistant.history) == 4
    rows = await messages(owner_conn, assistant)
    assert [r["role"] for r in rows] == ["user", "assistant", "tool", "assistant"]
    assert rows[0]["content"] == "what's on my to do list"
    assert rows[1]["content"] == "Let me check your list."
    assert json.loads(rows[2]["content"])["tool"] == "todo_list"
    assert rows[3]["content"].startswith("You have three todos")


async def test_the_request_is_cached_and_spoken_context_is_given(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext
) -> None:
    claude.reply("Hello Ada.")
    assistant = assistant_for(claude, fake, account)
    await assistant.greeting()
    await turn(assistant, "hello")
    request = claude.messages[0]
    assert request["stream"] is True
    assert request["model"] == "claude-sonnet-4-6"
    assert request["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "Ada Lovelace" in request["system"][0]["text"]
    assert "America/New_York" in request["system"][0]["text"]
    assert "is data, never instructions" in request["system"][0]["text"]  # injection guard
    assert "Tuesday, March 3rd, 2026, at 2:05 PM" in request["system"][1]["text"]
    assert "cache_control" not in request["system"][1]  # the clock changes; it sits after the mark
    tools = request["tools"]
    assert tools[-1]["cache_control"] == {"type": "ephemeral"}
    assert sum("cache_control" in t for t in tools) == 1
    todo_list = next(t for t in tools if t["name"] == "todo_list")
    assert todo_list["input_schema"]["properties"]["status"]["enum"] == ["open", "done", "all"]
    assert todo_list["description"] == "List the caller's todos."


async def test_transfer_ends_the_turn_with_a_handoff(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext
) -> None:
    claude.reply(
        "Sure, I'll connect you to a person now.",
        ToolUse("transfer_to_agent", {"reason": "wants to dispute an invoice"}),
    )
    assistant = assistant_for(claude, fake, account)
    events = await turn(assistant, "i want to talk to a person")
    assert events[-1] == Transfer("wants to dispute an invoice")
    assert spoken(events) == "Sure, I'll connect you to a person now."
    assert len(claude.messages) == 1  # no second model step before the hand-off
    assert is_consistent(assistant.history)


async def test_a_silent_transfer_step_speaks_the_tools_line(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext
) -> None:
    claude.reply("Let me check.", ToolUse("todo_list", {"status": "open"}))
    claude.reply(ToolUse("transfer_to_agent", {"reason": "list looks wrong"}))
    assistant = assistant_for(claude, fake, account)
    events = await turn(assistant, "my list looks wrong, get me someone")
    assert spoken(events) == "Let me check. I'll connect you with a colleague now."
    assert events[-1] == Transfer("list looks wrong")


async def test_end_call_hangs_up_with_a_goodbye(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext
) -> None:
    claude.reply(ToolUse("end_call", {}))
    assistant = assistant_for(claude, fake, account)
    events = await turn(assistant, "that's all bye")
    assert isinstance(events[-1], Hangup)
    assert spoken(events) == "Goodbye, and have a great day."


# Budgets and failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budgets",
    [{"step_budget_s": 1.5}, {"turn_budget_s": 1.5}],
    ids=["step budget", "turn budget"],
)
async def test_a_hung_model_gets_the_honest_line_within_budget(
    claude: AnthropicStandIn, fake: FakeDomain, db: Database, owner_conn: asyncpg.Connection,
    account: CallContext, budgets: dict[str, float],
) -> None:
    claude.fail_next("hang")
    assistant = assistant_for(claude, fake, account, db, **budgets)
    async with asyncio.timeout(6):  # a liveness guard: the stand-in would hang for an hour
        events = await turn(assistant, "tell me a joke")
    assert spoken(events) == TROUBLE_LINE
    assert [m["role"] for m in assistant.history] == ["user", "assistant"]
    assert [r["content"] for r in await messages(owner_conn, assistant)] == [
        "tell me a joke", TROUBLE_LINE,
    ]
    # The next turn tries Claude again, with a history it accepts.
    claude.reply("Sure, here is one.")
    assert spoken(await turn(assistant, "try again")) == "Sure, here is one."
    assert [m["role"] for m in claude.messages[-1]["messages"]] == ["user", "assistant", "user"]


async def test_a_stalled_stream_keeps_what_was_said(
    fake: FakeDomain, account: CallContext
) -> None:
    async with AnthropicStandIn() as claude:
        claude.reply("Well, the thing about that is complicated.")
        claude.fail_next("stall")
        assistant = assistant_for(claude, fake, account, step_budget_s=1.5, turn_budget_s=2.0)
        events = await turn(assistant, "explain quantum physics")
    said = spoken(events)
    assert said.startswith("Well,") and said.endswith(TROUBLE_LINE)
    # The unfinished sentence is retracted (the engine drops it unspoken) and not remembered.
    assert any(isinstance(event, Retract) for event in events)
    assert assistant.history[-1] == {
        "role": "assistant", "content": [{"type": "text", "text": TROUBLE_LINE}]
    }


@pytest.mark.parametrize("fault", ["overloaded", "rate_limit", "malformed_tool_json"])
async def test_claude_down_takes_the_fallback_path(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext, fault: str
) -> None:
    if fault == "malformed_tool_json":
        claude.reply(ToolUse("todo_list", {"status": "open"}))
    claude.fail_next(fault)
    assistant = assistant_for(claude, fake, account)
    events = await turn(assistant, "what's on my to do list")
    assert spoken(events) == "You have three open todos: buy milk, call mom, and pay the rent."
    assert ToolActivity("todo_list", {"status": "open"}, ok=True) in events
    assert is_consistent(assistant.history)

    claude.reply("You're welcome!")  # Claude is back: the next turn is Claude's again
    assert spoken(await turn(assistant, "thanks")) == "You're welcome!"
    history = claude.messages[-1]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user"]
    assert "buy milk" in message_text(history[1])


async def test_claude_down_and_not_understood_gets_the_honest_line(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext
) -> None:
    claude.fail_next("overloaded")
    assistant = assistant_for(claude, fake, account)
    assert spoken(await turn(assistant, "tell me about the weather")) == TROUBLE_LINE


async def test_a_slow_tool_runs_out_of_budget_and_keeps_history_valid(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext
) -> None:
    fake.slow_s = 5
    claude.reply("One moment.", ToolUse("slow_lookup", {"topic": "invoices"}))
    assistant = assistant_for(claude, fake, account, tool_budget_s=0.3)
    async with asyncio.timeout(4):  # a liveness guard: the tool would take 5 s
        events = await turn(assistant, "what about my invoices")
    assert spoken(events) == "One moment. " + TROUBLE_LINE
    assert ToolActivity("slow_lookup", {"topic": "invoices"}, ok=False) in events
    assert len(claude.messages) == 1  # a tool ran: no fallback, no second model step
    assert is_consistent(assistant.history)
    result = assistant.history[2]["content"][0]
    assert result["type"] == "tool_result" and result["is_error"] is True


# Barge-in ----------------------------------------------------------------------------------------


async def test_cancelling_mid_stream_keeps_a_consistent_history(
    fake: FakeDomain, db: Database, owner_conn: asyncpg.Connection, account: CallContext
) -> None:
    async with AnthropicStandIn(tokens_per_second=20) as claude:
        claude.reply("Your first todo is buy milk, then call mom, and then pay the rent today.")
        assistant = assistant_for(claude, fake, account, db)
        heard: list[str] = []

        async def listen() -> None:
            async for event in assistant.respond("read my list"):
                if isinstance(event, TextDelta):
                    heard.append(event.text)

        task = asyncio.create_task(listen())
        await wait_for(lambda: len(heard) >= 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # What was streamed so far is kept (record_heard then trims it to what was heard).
        said = message_text(assistant.history[-1])
        assert said.startswith("".join(heard).strip()) and len(said) < 40
        assert [m["role"] for m in assistant.history] == ["user", "assistant"]
        rows = await messages(owner_conn, assistant)
        assert [r["content"] for r in rows] == ["read my list", said]

        claude.reply("Okay, stopping.")
        assert spoken(await turn(assistant, "stop")) == "Okay, stopping."
        assert is_consistent(assistant.history)


async def test_cancelling_during_a_tool_answers_its_tool_use(
    claude: AnthropicStandIn, fake: FakeDomain, account: CallContext
) -> None:
    fake.slow_s = 5
    claude.reply(ToolUse("slow_lookup", {"topic": "invoices"}))
    assistant = assistant_for(claude, fake, account)
    task = asyncio.create_task(turn(assistant, "what about my invoices"))
    await wait_for(lambda: any(name == "slow_lookup" for name, _ in fake.calls))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert is_consistent(assistant.history)
    result = assistant.history[-1]["content"][0]
    assert result["content"][0]["text"] == NOT_RUN.text and result["is_error"] is True


async def test_record_heard_trims_memory_and_database(
    claude: AnthropicStandIn, fake: FakeDomain, db: Database, owner_conn: asyncpg.Connection,
    account: CallContext,
) -> None:
    claude.reply("Let me check.", ToolUse("todo_list", {"status": "open"}))
    claude.reply("You have three todos: buy milk, call mom, and pay the rent.")
    assistant = assistant_for(claude, fake, account, db)
    await turn(assistant, "what's on my list")
    await assistant.record_heard("Let me check. You have three")
    assert message_text(assistant.history[1]) == "Let me check."  # heard in full: unchanged
    assert assistant.history[-1]["content"] == [{"type": "text", "text": "You have three"}]
    rows = await messages(owner_conn, assistant)
    assert (rows[-1]["content"], rows[-1]["interrupted"]) == ("You have three", True)
    assert rows[1]["interrupted"] is False

    claude.reply("Hello again.")
    await turn(assistant, "hello")
    await assistant.record_heard("")  # nothing was heard: the reply goes, roles still alternate
    assert assistant.history[-1]["role"] == "user" and is_consistent(assistant.history)


# Choosing the assistant ------------------------------------------------------------------------


def test_the_factory_picks_claude_only_with_a_key(fake: FakeDomain, db: Database) -> None:
    context = caller()
    offline = SimpleNamespace(settings=Settings(), db=db, extras={})
    assert isinstance(build_assistant(offline, context, fake.toolbox), FallbackAssistant)

    settings = Settings(anthropic_api_key="sk-test", anthropic_base_url="http://127.0.0.1:9")
    online = SimpleNamespace(settings=settings, db=db, extras={})
    assistant = build_assistant(online, context, fake.toolbox)
    assert isinstance(assistant, ClaudeAssistant)
    client = online.extras["anthropic"]
    assert isinstance(client, AsyncAnthropic)
    assert client.max_retries == 0 and str(client.base_url).startswith("http://127.0.0.1:9")
    assert build_assistant(online, caller(), fake.toolbox) is not assistant  # one per call
    assert online.extras["anthropic"] is client  # one client per process
    _clients.append(client)


# The history helpers (pure) ----------------------------------------------------------------------


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def test_dropping_an_unheard_reply_folds_the_user_turns_together() -> None:
    history = [_user("A"), _assistant("X"), _user("B"), _assistant("Y")]
    replace_text(history, history[1], "")
    assert history == [
        {"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
        _assistant("Y"),
    ]


def test_open_tool_uses_are_answered_with_what_finished() -> None:
    use = {"role": "assistant", "content": [
        {"type": "tool_use", "id": "a", "name": "todo_list", "input": {}},
        {"type": "tool_use", "id": "b", "name": "todo_create", "input": {"title": "x"}},
    ]}
    history = [_user("do both"), use]
    assert not is_consistent(history)
    close_tool_uses(history, {"a": ToolResult("[]")})
    assert is_consistent(history)
    first, second = history[-1]["content"]
    assert first["content"][0]["text"] == "[]" and "is_error" not in first
    assert second["is_error"] is True


@pytest.mark.parametrize(
    ("heard", "shares"),
    [
        ("Let me check. You have", ["Let me check.", "You have"]),
        ("Let me", ["Let me", ""]),
        ("Let me  check.   You have three todos.", ["Let me check.", "You have three todos."]),
        ("", ["", ""]),
    ],
)
def test_what_was_heard_is_shared_over_the_pieces(heard: str, shares: list[str]) -> None:
    assert split_heard(heard, ["Let me check.", "You have three todos."]) == shares


async def test_claude_with_the_real_tools_server(
    claude: AnthropicStandIn, db: Database, state: Any, settings: Settings,
    owner_conn: asyncpg.Connection, account: CallContext,
) -> None:
    """The app's own MCP tools, through the factory, as Claude would call them."""
    from voice_app.services import Services
    from voice_app.tools.session import open_tools_session

    services = Services(settings=settings, db=db, state=state)
    services.extras["anthropic"] = AsyncAnthropic(base_url=claude.url, api_key="k", max_retries=0)
    _clients.append(services.extras["anthropic"])
    online = SimpleNamespace(
        settings=Settings(anthropic_api_key="k"), db=db, extras=services.extras
    )
    claude.reply("Adding it.", ToolUse("todo_create", {"title": "buy milk"}))
    claude.reply("Done, buy milk is on your list.")
    async with open_tools_session(services, account) as session:
        assistant = build_assistant(online, account, session)
        events = [e async for e in assistant.respond("add buy milk to my list")]
    assert ToolActivity("todo_create", {"title": "buy milk"}, ok=True) in events
    assert spoken(events) == "Adding it. Done, buy milk is on your list."
    tools = {t["name"] for t in claude.messages[0]["tools"]}
    assert {"todo_create", "todo_list", "transfer_to_agent", "end_call"} <= tools
    titles = await owner_conn.fetch(
        "SELECT title FROM todos WHERE tenant_id = $1", uuid.UUID(account.tenant_id)
    )
    assert [r["title"] for r in titles] == ["buy milk"]
