"""The fallback agent: the intent grammar on a table of spoken phrasings, then the executor
talking to a real in-process MCP server (fake domain tools) and, once, to the app's own tools.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from voice_app.agent.base import AgentEvent, CallContext, Hangup, TextDelta, ToolActivity, Transfer
from voice_app.agent.fallback import HELP_LINE, TOOL_TROUBLE, FallbackAgent, FallbackAssistant
from voice_app.agent.intents import Intent, Kind, best_match, normalize, parse
from voice_app.agent.toolbox import McpToolbox, Toolbox, as_toolbox
from voice_app.db import calls, users
from voice_app.db.pool import Database
from voice_app.speech.phrases import corpus

NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 3, 3, 14, 5, tzinfo=NEW_YORK)  # a Tuesday afternoon


# The grammar -------------------------------------------------------------------------------------

it = Intent  # short, to keep the table one line a row
PHRASINGS: list[tuple[str, Intent]] = [
    # list todos
    ("what is on my todo list", it(Kind.LIST_TODOS)),
    ("um uh what's on my to-do list", it(Kind.LIST_TODOS)),
    ("whats on my two do list", it(Kind.LIST_TODOS)),
    ("whats on my 2 do list", it(Kind.LIST_TODOS)),
    ("read me my to dos please", it(Kind.LIST_TODOS)),
    ("can you tell me what are my todo's", it(Kind.LIST_TODOS)),
    ("how many things are on my list", it(Kind.LIST_TODOS)),
    ("what do i have to do today", it(Kind.LIST_TODOS)),
    ("i want to hear my todos", it(Kind.LIST_TODOS)),
    ("what todos are done", it(Kind.LIST_TODOS, status="done")),
    # add a todo
    ("add a todo to buy milk", it(Kind.ADD_TODO, title="buy milk")),
    ("um can you uh add a to do to buy milk please", it(Kind.ADD_TODO, title="buy milk")),
    ("at a to do to call mom", it(Kind.ADD_TODO, title="call mom")),  # "add" misheard
    ("add wash the car to my todo list", it(Kind.ADD_TODO, title="wash the car")),
    ("put go to the gym on my list", it(Kind.ADD_TODO, title="go to the gym")),
    ("create a new to do called order new chairs", it(Kind.ADD_TODO, title="order new chairs")),
    ("new todo pay the phone bill", it(Kind.ADD_TODO, title="pay the phone bill")),
    ("remind me to feed the cat", it(Kind.ADD_TODO, title="feed the cat")),
    (
        "I'd like to add a to-do for me to renew my passport.",
        it(Kind.ADD_TODO, title="renew my passport"),
    ),
    ("add a todo", it(Kind.ADD_TODO)),
    ("i need to call the plumber", it(Kind.ADD_TODO, title="call the plumber", tentative=True)),
    ("i need to do the laundry", it(Kind.ADD_TODO, title="do the laundry", tentative=True)),
    # complete a todo
    ("mark buy milk as done", it(Kind.COMPLETE_TODO, title="buy milk")),
    ("mark call my mom as complete", it(Kind.COMPLETE_TODO, title="call my mom")),
    ("i finished the laundry", it(Kind.COMPLETE_TODO, title="the laundry")),
    ("i already did take out the trash", it(Kind.COMPLETE_TODO, title="take out the trash")),
    ("check off buy milk", it(Kind.COMPLETE_TODO, title="buy milk")),
    ("buy milk is done", it(Kind.COMPLETE_TODO, title="buy milk")),
    ("mark the first one as done", it(Kind.COMPLETE_TODO, ordinal=1)),
    ("mark to do number two as done", it(Kind.COMPLETE_TODO, ordinal=2)),
    ("mark the third one as complete", it(Kind.COMPLETE_TODO, ordinal=3)),
    ("complete the last one", it(Kind.COMPLETE_TODO, ordinal=-1)),
    ("check off the second item", it(Kind.COMPLETE_TODO, ordinal=2)),
    # calendar
    ("what's on my calendar", it(Kind.CALENDAR, day="today")),
    ("hey could you uh tell me what's on my calendar tomorrow", it(Kind.CALENDAR, day="tomorrow")),
    ("what meetings do i have today", it(Kind.CALENDAR, day="today")),
    ("am i free tomorrow afternoon", it(Kind.CALENDAR, day="tomorrow")),
    ("do i have any meetings on friday", it(Kind.CALENDAR, day="friday")),
    ("what's on my schedule next week", it(Kind.CALENDAR, day="week")),
    ("when is my next meeting", it(Kind.CALENDAR, day="next")),
    # team
    ("who is on my team", it(Kind.TEAM)),
    ("whose on my team", it(Kind.TEAM)),  # how a recogniser spells "who's"
    ("who are my team members", it(Kind.TEAM)),
    ("who is on the sales team", it(Kind.TEAM, team="sales")),
    ("how many people are on my team", it(Kind.TEAM)),
    ("who do i work with", it(Kind.TEAM)),
    # a person
    ("talk to a person", it(Kind.TRANSFER)),
    ("i want to speak to a human", it(Kind.TRANSFER)),
    ("agent", it(Kind.TRANSFER)),
    ("operator please", it(Kind.TRANSFER)),
    ("representative", it(Kind.TRANSFER)),
    ("can i talk to someone", it(Kind.TRANSFER)),
    ("put me through to customer service", it(Kind.TRANSFER)),
    ("i need to speak with someone", it(Kind.TRANSFER)),
    # help, goodbye and the small words
    ("help", it(Kind.HELP)),
    ("what can you do", it(Kind.HELP)),
    ("goodbye", it(Kind.GOODBYE)),
    ("okay thank you goodbye", it(Kind.GOODBYE)),
    ("no that's it", it(Kind.GOODBYE)),
    ("i have to go", it(Kind.GOODBYE)),
    ("yes", it(Kind.YES)),
    ("yeah sure", it(Kind.YES)),
    ("yes please", it(Kind.YES)),
    ("uh okay", it(Kind.YES)),
    ("no", it(Kind.NO)),
    ("nope", it(Kind.NO)),
    ("no thank you", it(Kind.NO)),
    ("thanks", it(Kind.THANKS)),
    ("hello", it(Kind.GREETING)),
    ("say that again", it(Kind.REPEAT)),
    ("sorry what", it(Kind.REPEAT)),
    ("never mind", it(Kind.CANCEL)),
    # understood, but not for the grammar: offer a person
    ("delete the todo buy milk", it(Kind.UNSUPPORTED)),
    ("add sarah to the sales team", it(Kind.UNSUPPORTED)),
    ("schedule a meeting tomorrow at ten am", it(Kind.UNSUPPORTED)),
    ("my pin is one two three four", it(Kind.UNSUPPORTED)),
    ("tell me a joke", it(Kind.UNKNOWN)),
    ("", it(Kind.UNKNOWN)),
]


@pytest.mark.parametrize(("said", "expected"), PHRASINGS, ids=[p[0] or "-" for p in PHRASINGS])
def test_phrasings(said: str, expected: Intent) -> None:
    intent = parse(said)
    assert intent.kind == expected.kind
    if expected.kind in (Kind.ADD_TODO, Kind.COMPLETE_TODO):
        assert (intent.title, intent.ordinal, intent.tentative) == (
            expected.title, expected.ordinal, expected.tentative
        )
    if expected.kind is Kind.CALENDAR:
        assert intent.day == expected.day
    if expected.kind is Kind.TEAM:
        assert intent.team == expected.team
    if expected.kind is Kind.LIST_TODOS:
        assert intent.status == expected.status


@pytest.mark.parametrize(
    ("heard", "normal"),
    [
        ("What's on my To-Do list?", "what is on my todo list"),
        ("add a to do to buy milk", "add a todo to buy milk"),
        ("i need to do the laundry", "i need to do the laundry"),  # the phrase, not the noun
        ("read my two do list", "read my todo list"),
        ("um, uh, my to-dos", "my todos"),
    ],
)
def test_normalize(heard: str, normal: str) -> None:
    assert normalize(heard) == normal


def test_best_match_prefers_the_title_the_caller_named() -> None:
    titles = ["buy milk", "buy oat milk", "call mom", "pay the rent", "call the doctor"]
    assert best_match("call my mom", titles)[0] == 2
    assert best_match("the rent", titles)[:1] == (3,)
    index, _, clear = best_match("milk", titles)  # two candidates: not clear
    assert titles[index] in ("buy milk", "buy oat milk") and not clear
    assert best_match("walk the dog", titles)[1] < 0.55


def test_the_recogniser_corpus_is_understood() -> None:
    """Sentences the offline recogniser is trained on; bare answers ('ten am') need context."""
    sentences = corpus()
    understood = [s for s in sentences if parse(s).kind is not Kind.UNKNOWN]
    assert len(understood) / len(sentences) >= 0.95


# A small MCP server with the real tools' names and shapes -----------------------------------------


class FakeDomain:
    """In-memory todos, a calendar, teams and the transfer tool, served over real MCP."""

    def __init__(self) -> None:
        self.todos: list[dict[str, Any]] = [
            {"id": "t1", "title": "buy milk", "status": "open"},
            {"id": "t2", "title": "call mom", "status": "open"},
            {"id": "t3", "title": "pay the rent", "status": "open"},
        ]
        self.events = [
            {"title": "Standup", "start": "2026-03-03T09:00-05:00", "all_day": False},
            {"title": "Lunch with Sam", "start": "2026-03-03T12:00-05:00", "all_day": False},
        ]
        self.teams = [{"id": "team-1", "name": "Sales", "member_count": 3}]
        self.members = {"team-1": ["Ada Lovelace", "Grace Hopper", "Alan Turing"]}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: set[str] = set()
        self.slow_s = 0.0
        self.toolbox: Toolbox

    def server(self) -> MCPServer:
        server = MCPServer("fake-domain")
        domain = self

        def called(name: str, **arguments: Any) -> None:
            domain.calls.append((name, arguments))
            if name in domain.fail:
                raise ToolError(f"{name} is broken today")

        @server.tool()
        async def todo_list(status: Literal["open", "done", "all"] = "open") -> dict[str, Any]:
            """List the caller's todos."""
            called("todo_list", status=status)
            found = [t for t in domain.todos if status == "all" or t["status"] == status]
            return {"count": len(found), "timezone": "America/New_York", "todos": found}

        @server.tool()
        async def todo_create(title: str) -> dict[str, Any]:
            """Create a todo owned by the caller."""
            called("todo_create", title=title)
            todo = {"id": f"t{len(domain.todos) + 1}", "title": title, "status": "open"}
            domain.todos.append(todo)
            return {"message": "Todo created.", "todo": todo}

        @server.tool()
        async def todo_complete(todo_id: str) -> dict[str, Any]:
            """Mark a todo as done."""
            called("todo_complete", todo_id=todo_id)
            todo = next(t for t in domain.todos if t["id"] == todo_id)
            todo["status"] = "done"
            return {"message": "Marked as done.", "todo": todo}

        @server.tool()
        async def calendar_list_events(
            start: str | None = None, end: str | None = None
        ) -> dict[str, Any]:
            """List events between start and end."""
            called("calendar_list_events", start=start, end=end)
            return {"count": len(domain.events), "events": domain.events}

        @server.tool()
        async def user_list_my_teams() -> dict[str, Any]:
            """List the caller's teams."""
            called("user_list_my_teams")
            return {"count": len(domain.teams), "teams": domain.teams}

        @server.tool()
        async def team_list(name_contains: str | None = None) -> dict[str, Any]:
            """List teams by name."""
            called("team_list", name_contains=name_contains)
            found = [t for t in domain.teams if (name_contains or "").lower() in t["name"].lower()]
            return {"count": len(found), "teams": found}

        @server.tool()
        async def team_list_members(team_id: str) -> dict[str, Any]:
            """List a team's members."""
            called("team_list_members", team_id=team_id)
            people = [{"name": n, "role": "member"} for n in domain.members[team_id]]
            return {"team": team_id, "members": people}

        @server.tool()
        async def transfer_to_agent(reason: str) -> dict[str, Any]:
            """Hand the caller to a human agent."""
            called("transfer_to_agent", reason=reason)
            return {"status": "transferring", "say": "I'll connect you with a colleague now."}

        @server.tool()
        async def slow_lookup(topic: str) -> dict[str, Any]:
            """A tool that takes its time."""
            called("slow_lookup", topic=topic)
            await asyncio.sleep(domain.slow_s)
            return {"topic": topic}

        return server


async def _hold(client: Client, ready: asyncio.Future[Client], done: asyncio.Event) -> None:
    async with client:
        ready.set_result(client)
        await done.wait()


async def serve_fake_domain() -> AsyncIterator[FakeDomain]:
    """The domain and a connected client. The client lives in a task of its own: anyio wants a
    connection closed by the task that opened it, and fixture teardown runs in another."""
    domain = FakeDomain()
    ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()
    holder = asyncio.create_task(_hold(Client(domain.server()), ready, done))
    domain.toolbox = McpToolbox(await ready)
    yield domain
    done.set()
    await holder


fake = pytest.fixture(serve_fake_domain)


def caller(tenant_id: str = "", user_id: str = "") -> CallContext:
    return CallContext(
        tenant_id=tenant_id or str(uuid.uuid4()),
        user_id=user_id or str(uuid.uuid4()),
        call_sid=f"CA{uuid.uuid4().hex}",
        display_name="Ada Lovelace",
        timezone="America/New_York",
    )


async def say(agent: FallbackAgent | FallbackAssistant, text: str) -> list[AgentEvent]:
    stream = agent.handle(text) if isinstance(agent, FallbackAgent) else agent.respond(text)
    return [event async for event in stream]


def spoken(events: list[AgentEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.fixture
def agent(fake: FakeDomain) -> FallbackAgent:
    return FallbackAgent(fake.toolbox, caller(), now=lambda: NOW)


# The executor -----------------------------------------------------------------------------------


async def test_lists_todos_through_the_tool(agent: FallbackAgent, fake: FakeDomain) -> None:
    events = await say(agent, "um what's on my to do list")
    assert events[0] == ToolActivity("todo_list", {"status": "open"}, ok=True)
    assert spoken(events) == "You have three open todos: buy milk, call mom, and pay the rent."


async def test_adds_a_todo_with_the_spoken_title(agent: FallbackAgent, fake: FakeDomain) -> None:
    events = await say(agent, "can you add a to do to buy eggs please")
    assert fake.calls == [("todo_create", {"title": "buy eggs"})]
    assert spoken(events) == "Okay, I added buy eggs to your list."


async def test_asks_for_a_missing_title(agent: FallbackAgent, fake: FakeDomain) -> None:
    assert spoken(await say(agent, "add a todo")) == "Sure. What should the todo say?"
    assert "walk the dog" in spoken(await say(agent, "walk the dog"))
    assert fake.todos[-1]["title"] == "walk the dog"


async def test_a_loose_add_waits_for_yes(agent: FallbackAgent, fake: FakeDomain) -> None:
    assert spoken(await say(agent, "i need to call the plumber")) == (
        "Should I add call the plumber to your todo list?"
    )
    assert fake.calls == []
    await say(agent, "no")
    assert fake.calls == []
    await say(agent, "i need to call the plumber")
    await say(agent, "yes please")
    assert fake.calls == [("todo_create", {"title": "call the plumber"})]


async def test_completes_by_position_in_list(agent: FallbackAgent, fake: FakeDomain) -> None:
    await say(agent, "read me my todos")
    events = await say(agent, "mark the second one as done")
    assert ("todo_complete", {"todo_id": "t2"}) in fake.calls
    assert spoken(events) == "Done. I marked call mom as complete."
    await say(agent, "complete the last one")
    assert fake.calls[-1] == ("todo_complete", {"todo_id": "t3"})


async def test_completes_by_a_fuzzy_title(agent: FallbackAgent, fake: FakeDomain) -> None:
    events = await say(agent, "i finished calling my mom")
    assert fake.calls[-1] == ("todo_complete", {"todo_id": "t2"})
    assert "call mom" in spoken(events)


async def test_asks_when_the_title_is_ambiguous(agent: FallbackAgent, fake: FakeDomain) -> None:
    fake.todos.append({"id": "t4", "title": "buy oat milk", "status": "open"})
    assert spoken(await say(agent, "mark milk as done")).startswith("Did you mean buy")
    assert not any(name == "todo_complete" for name, _ in fake.calls)
    await say(agent, "yes")
    assert fake.calls[-1][0] == "todo_complete"


async def test_says_so_when_no_todo_matches(agent: FallbackAgent, fake: FakeDomain) -> None:
    reply = spoken(await say(agent, "mark walk the dog as done"))
    assert reply == "I couldn't find walk the dog on your list. Shall I read it to you?"
    assert "buy milk" in spoken(await say(agent, "yes"))


async def test_reads_the_calendar_for_a_day(agent: FallbackAgent, fake: FakeDomain) -> None:
    events = await say(agent, "what's on my calendar tomorrow")
    name, arguments = fake.calls[-1]
    assert name == "calendar_list_events"
    assert arguments == {"start": "2026-03-04T00:00:00-05:00", "end": "2026-03-05T00:00:00-05:00"}
    assert spoken(events) == (
        "Tomorrow you have two events: Standup at 9 AM and Lunch with Sam at noon."
    )


async def test_names_the_team(agent: FallbackAgent, fake: FakeDomain) -> None:
    events = await say(agent, "who's on my team")
    assert [c[0] for c in fake.calls] == ["user_list_my_teams", "team_list_members"]
    assert spoken(events) == (
        "The Sales team has three members: Ada Lovelace, Grace Hopper, and Alan Turing."
    )


async def test_transfers_to_a_person(agent: FallbackAgent, fake: FakeDomain) -> None:
    events = await say(agent, "i want to talk to a real person")
    assert fake.calls[-1][0] == "transfer_to_agent"
    assert isinstance(events[-1], Transfer)
    assert spoken(events) == "I'll connect you with a colleague now."


async def test_offers_a_person_after_two_misses(agent: FallbackAgent, fake: FakeDomain) -> None:
    assert spoken(await say(agent, "tell me a joke")) == "Sorry, I didn't catch that. " + HELP_LINE
    assert "connect you to a person" in spoken(await say(agent, "blue elephants"))
    assert isinstance((await say(agent, "yes"))[-1], Transfer)


async def test_goodbye_hangs_up(agent: FallbackAgent) -> None:
    events = await say(agent, "okay that's all thanks bye")
    assert isinstance(events[-1], Hangup)


async def test_repeat_says_the_last_reply_again(agent: FallbackAgent, fake: FakeDomain) -> None:
    first = spoken(await say(agent, "i need to buy stamps"))
    assert spoken(await say(agent, "sorry can you repeat that")) == first
    await say(agent, "yes")  # the question is still open after hearing it again
    assert fake.calls == [("todo_create", {"title": "buy stamps"})]


async def test_a_failing_tool_gets_an_honest_line(agent: FallbackAgent, fake: FakeDomain) -> None:
    fake.fail.add("todo_create")
    events = await say(agent, "add a todo to buy bread")
    assert events[0] == ToolActivity("todo_create", {"title": "buy bread"}, ok=False)
    assert spoken(events) == TOOL_TROUBLE


async def test_a_slow_tool_runs_out_of_budget(fake: FakeDomain) -> None:
    class Stuck:
        async def list_tools(self) -> list[Any]:
            return []

        async def call(self, name: str, arguments: dict[str, Any]) -> Any:
            await asyncio.sleep(5)

    agent = FallbackAgent(as_toolbox(Stuck()), caller(), tool_budget_s=0.1)
    assert spoken(await say(agent, "what's on my list")) == TOOL_TROUBLE


# The assistant, persisted ------------------------------------------------------------------------


@pytest.fixture
async def account(owner_conn: asyncpg.Connection) -> CallContext:
    suffix = uuid.uuid4().hex[:8]
    tenant_id = await users.create_tenant(owner_conn, f"fallback-{suffix}", "Fallback Co")
    user = await users.create_user(
        owner_conn, tenant_id, account_number=str(30_000_000 + int(suffix, 16) % 9_000_000),
        display_name="Ada Lovelace", pin_hash="x", timezone="America/New_York",
    )
    return caller(str(tenant_id), str(user.id))


async def test_the_assistant_persists_and_trims(
    fake: FakeDomain, db: Database, owner_conn: asyncpg.Connection, account: CallContext
) -> None:
    assistant = FallbackAssistant(toolbox=fake.toolbox, context=account, db=db, now=lambda: NOW)
    assert await assistant.greeting() == "Hi Ada, how can I help you today?"
    await say(assistant, "what's on my todo list")
    await assistant.record_heard("You have three open todos")
    await assistant.call_log.flush()
    rows = await calls.list_messages(owner_conn, uuid.UUID(account.tenant_id), account.call_sid)
    assert [r["role"] for r in rows] == ["assistant", "user", "tool", "assistant"]
    assert rows[1]["content"] == "what's on my todo list"
    assert '"tool": "todo_list"' in rows[2]["content"]
    assert (rows[3]["content"], rows[3]["interrupted"]) == ("You have three open todos", True)


async def test_against_the_real_tools_server(
    db: Database, state: Any, settings: Any, account: CallContext
) -> None:
    """The grammar's tool names and arguments fit the app's own MCP server."""
    from voice_app.services import Services
    from voice_app.tools.session import open_tools_session

    services = Services(settings=settings, db=db, state=state)
    async with open_tools_session(services, account) as session:
        agent = FallbackAgent(as_toolbox(session), account, now=lambda: NOW)
        assert spoken(await say(agent, "add a to do to water the plants")) == (
            "Okay, I added water the plants to your list."
        )
        assert "water the plants" in spoken(await say(agent, "what's on my to do list"))
        events = await say(agent, "mark the first one as done")
        assert spoken(events) == "Done. I marked water the plants as complete."
        assert all(e.ok for e in events if isinstance(e, ToolActivity))
        assert "team" in spoken(await say(agent, "who is on my team")).lower()
