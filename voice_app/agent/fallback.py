"""The fallback agent: the intent grammar plus an executor that calls the same MCP tools.

It answers when no ANTHROPIC_API_KEY is configured (the offline demo talks only to it) and, turn
by turn, when Claude is down. Replies are one or two short spoken sentences. It remembers just
enough of the conversation for follow-ups: a yes/no question it asked, a title it asked for, and
the todo list it last read (so "the second one" means what the caller heard).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from voice_app.agent.base import AgentEvent, CallContext, Hangup, TextDelta, ToolActivity, Transfer
from voice_app.agent.calllog import CallLog, Entry
from voice_app.agent.intents import Intent, Kind, best_match, clean_title, normalize, parse
from voice_app.agent.prompts import GOODBYE_LINE, TRANSFER_LINE, greeting_for
from voice_app.agent.spoken import (
    count,
    number_word,
    spoken_date,
    spoken_list,
    spoken_time,
    zone,
)
from voice_app.agent.toolbox import Toolbox, ToolResult
from voice_app.db.pool import Database

log = logging.getLogger(__name__)

HELP_LINE = (
    "You can ask what's on your todo list, add a todo, or mark one as done. You can ask what's "
    "on your calendar today or tomorrow, or who is on your team. Say agent to talk to a person."
)
TOOL_TROUBLE = "Sorry, I couldn't do that right now. You can try again, or say agent for a person."
READ_AT_MOST = 5
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# While waiting for a todo's title these still mean what they say, not "add a todo called ...".
_ESCAPES = {Kind.CANCEL, Kind.NO, Kind.GOODBYE, Kind.TRANSFER, Kind.HELP, Kind.REPEAT}


@dataclass(frozen=True, slots=True)
class _Reply:
    text: str
    end: Transfer | Hangup | None = None


class FallbackAgent:
    """Understands a turn and carries it out. No persistence of turns: the assistant does that."""

    def __init__(
        self,
        toolbox: Toolbox,
        context: CallContext,
        log: CallLog | None = None,
        *,
        tool_budget_s: float = 8.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._toolbox = toolbox
        self._context = context
        self._log = log
        self._budget = tool_budget_s
        self._now = now or (lambda: datetime.now(zone(context.timezone)))
        self._pending: Intent | None = None  # what "yes" will do
        self._awaiting_title = False
        self._last_todos: list[dict[str, Any]] = []
        self._last_reply = ""
        self._misses = 0
        self._activity: list[ToolActivity] = []

    def understands(self, text: str) -> bool:
        return self._interpret(text).kind not in (Kind.UNKNOWN, Kind.UNSUPPORTED)

    async def handle(self, text: str) -> AsyncIterator[AgentEvent]:
        intent = self._interpret(text)
        if intent.kind is not Kind.REPEAT:  # a question asked again is still open
            self._pending, self._awaiting_title = None, False
        self._activity = []
        reply = await self._execute(intent)
        for activity in self._activity:
            yield activity
        if intent.kind is not Kind.REPEAT:
            self._last_reply = reply.text
        yield TextDelta(reply.text)
        if reply.end is not None:
            yield reply.end

    # Understanding, in the context of what was just asked --------------------------------------

    def _interpret(self, text: str) -> Intent:
        intent = parse(text)
        if self._awaiting_title and intent.kind not in _ESCAPES:
            title = intent.title if intent.kind is Kind.ADD_TODO else clean_title(normalize(text))
            return Intent(Kind.ADD_TODO, title=title)
        if self._pending is not None and intent.kind is Kind.YES:
            return replace(self._pending, tentative=False)
        if self._pending is not None and intent.kind is Kind.NO:
            return Intent(Kind.CANCEL)
        return intent

    # Doing -----------------------------------------------------------------------------------

    async def _execute(self, intent: Intent) -> _Reply:
        if intent.kind is not Kind.UNKNOWN:
            self._misses = 0
        match intent.kind:
            case Kind.LIST_TODOS:
                return await self._list_todos(intent.status)
            case Kind.ADD_TODO:
                return await self._add_todo(intent)
            case Kind.COMPLETE_TODO:
                return await self._complete_todo(intent)
            case Kind.CALENDAR:
                return await self._calendar(intent.day)
            case Kind.TEAM:
                return await self._team(intent.team)
            case Kind.TRANSFER:
                return await self._transfer()
            case Kind.GOODBYE:
                return _Reply(GOODBYE_LINE, Hangup())
            case Kind.HELP:
                return _Reply(HELP_LINE)
            case Kind.YES:
                return _Reply("Okay. What would you like to do?")
            case Kind.NO | Kind.CANCEL:
                return _Reply("Alright. What else can I do for you?")
            case Kind.GREETING:
                return _Reply("Hi! What can I do for you?")
            case Kind.THANKS:
                return _Reply("You're welcome. Anything else?")
            case Kind.REPEAT:
                return _Reply(self._last_reply or "I haven't said anything yet. How can I help?")
            case Kind.CHANGE_PIN:
                result = await self._tool("user_request_pin_change", {})
                if result.is_error:
                    return _Reply(TOOL_TROUBLE)
                return _Reply("Sure. I'll ask you to type your current PIN, then a new one.")
            case Kind.UNSUPPORTED:
                self._pending = Intent(Kind.TRANSFER)
                return _Reply(
                    "I can't do that over the phone right now, but a person can. "
                    "Would you like me to connect you?"
                )
        self._misses += 1
        if self._misses == 1:
            return _Reply("Sorry, I didn't catch that. " + HELP_LINE)
        self._pending = Intent(Kind.TRANSFER)
        return _Reply(
            "Sorry, I still didn't get that. Would you like me to connect you to a person?"
        )

    async def _list_todos(self, status: str) -> _Reply:
        result = await self._tool("todo_list", {"status": status})
        if result.is_error:
            return _Reply(TOOL_TROUBLE)
        todos = _records(result.data, "todos")
        titles = [str(t.get("title", "")) for t in todos]
        if status == "done":
            if not todos:
                return _Reply("You haven't finished any todos yet.")
            done = spoken_list(titles[:READ_AT_MOST])
            return _Reply(f"You've finished {count(len(todos), 'todo')}: {done}.")
        self._last_todos = todos
        if not todos:
            return _Reply("Your todo list is empty. Would you like to add something?")
        if len(todos) <= READ_AT_MOST:
            return _Reply(f"You have {count(len(todos), 'open todo')}: {spoken_list(titles)}.")
        return _Reply(
            f"You have {count(len(todos), 'open todo')}. "
            f"The first {number_word(READ_AT_MOST)} are {spoken_list(titles[:READ_AT_MOST])}."
        )

    async def _add_todo(self, intent: Intent) -> _Reply:
        if not intent.title:
            self._awaiting_title = True
            return _Reply("Sure. What should the todo say?")
        if intent.tentative:
            self._pending = intent
            return _Reply(f"Should I add {intent.title} to your todo list?")
        result = await self._tool("todo_create", {"title": intent.title})
        if result.is_error:
            return _Reply(TOOL_TROUBLE)
        return _Reply(f"Okay, I added {intent.title} to your list.")

    async def _complete_todo(self, intent: Intent) -> _Reply:
        todos = self._last_todos
        if intent.ordinal is None or not todos:
            result = await self._tool("todo_list", {"status": "open"})
            if result.is_error:
                return _Reply(TOOL_TROUBLE)
            todos = _records(result.data, "todos")
            if intent.ordinal is not None:
                self._last_todos = todos
        if not todos:
            return _Reply("You don't have any open todos.")
        titles = [str(t.get("title", "")) for t in todos]
        if intent.ordinal is not None:
            index = len(todos) - 1 if intent.ordinal == -1 else intent.ordinal - 1
            if not 0 <= index < len(todos):
                return _Reply(f"You only have {count(len(todos), 'todo')}. Which one did you mean?")
        else:
            index, score, clear = best_match(intent.title, titles)
            if score < 0.55:
                self._pending = Intent(Kind.LIST_TODOS)
                return _Reply(
                    f"I couldn't find {intent.title} on your list. Shall I read it to you?"
                )
            if score < 0.75 or not clear:  # "yes" then completes exactly this one, by position
                self._last_todos = todos
                self._pending = Intent(Kind.COMPLETE_TODO, ordinal=index + 1)
                return _Reply(f"Did you mean {titles[index]}?")
        todo = todos[index]
        result = await self._tool("todo_complete", {"todo_id": str(todo.get("id", ""))})
        if result.is_error:
            return _Reply(TOOL_TROUBLE)
        if "already" in str((result.data or {}).get("message", "")):
            return _Reply(f"{titles[index]} was already done.")
        return _Reply(f"Done. I marked {titles[index]} as complete.")

    async def _calendar(self, day: str) -> _Reply:
        now = self._now()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        start, days = _window(day, midnight)
        begin = now if day == "next" else start
        result = await self._tool(
            "calendar_list_events",
            {"start": begin.isoformat(), "end": (start + timedelta(days=days)).isoformat()},
        )
        if result.is_error:
            if "link" in result.text.lower():
                return _Reply(
                    "You haven't linked a calendar yet. You can link one from the web page."
                )
            return _Reply("Sorry, I couldn't read your calendar right now.")
        events = _records(result.data, "events")
        when = "this week" if day == "week" else spoken_date(start.date(), now.date())
        if not events:
            return _Reply(
                f"You have nothing on your calendar {'coming up' if day == 'next' else when}."
            )
        spoken = [_event(e, now, with_day=days > 1) for e in events]
        if day == "next":
            return _Reply(f"Your next event is {spoken[0]}.")
        head = f"{when[0].upper()}{when[1:]} you have {count(len(events), 'event')}"
        extra = len(events) - 4
        tail = f", and {number_word(extra)} more" if extra > 0 else ""
        return _Reply(f"{head}: {spoken_list(spoken[:4])}{tail}.")

    async def _team(self, name: str) -> _Reply:
        if name:
            result = await self._tool("team_list", {"name_contains": name})
        else:
            result = await self._tool("user_list_my_teams", {})
        if result.is_error:
            return _Reply(TOOL_TROUBLE)
        teams = _records(result.data, "teams")
        if not teams:
            return _Reply(
                f"I couldn't find a team called {name}." if name else "You're not on a team yet."
            )
        if len(teams) > 2:
            names = spoken_list([str(t.get("name", "")) for t in teams])
            return _Reply(
                f"You're on {count(len(teams), 'team')}: {names}. "
                f"Ask me about one, like who is on the {_team_name(teams[0])}."
            )
        lines = []
        for team in teams:
            members = await self._tool("team_list_members", {"team_id": str(team.get("id", ""))})
            if members.is_error:
                return _Reply(TOOL_TROUBLE)
            people = [str(m.get("name", "")) for m in _records(members.data, "members")]
            lines.append(
                f"The {_team_name(team)} has {count(len(people), 'member')}: "
                f"{spoken_list(people[:8])}."
            )
        return _Reply(" ".join(lines))

    async def _transfer(self) -> _Reply:
        reason = "Caller asked for a person (automated assistant in fallback mode)."
        result = await self._tool("transfer_to_agent", {"reason": reason})
        if result.is_error:
            return _Reply(
                "Sorry, I can't reach a person right now. Please try again in a little while."
            )
        say = (result.data or {}).get("say") if isinstance(result.data, dict) else None
        return _Reply(str(say or TRANSFER_LINE), Transfer(reason))

    async def _tool(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            async with asyncio.timeout(self._budget):
                result = await self._toolbox.call(name, arguments)
        except TimeoutError:
            result = ToolResult("The tool did not answer in time.", is_error=True)
        except Exception:  # a broken session must not end the call: the caller hears a sorry
            log.exception("tool %s failed", name)
            result = ToolResult("The tool failed.", is_error=True)
        self._activity.append(ToolActivity(name, arguments, ok=not result.is_error))
        if self._log is not None:
            self._log.tool(name, arguments, result)
        return result


class FallbackAssistant:
    """`Assistant` backed only by the grammar: for calls without Claude."""

    def __init__(
        self,
        *,
        toolbox: Toolbox,
        context: CallContext,
        db: Database | None = None,
        tool_budget_s: float = 8.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.context = context
        self.call_log = CallLog(db, context)
        self.agent = FallbackAgent(
            toolbox, context, self.call_log, tool_budget_s=tool_budget_s, now=now
        )
        self._last: Entry | None = None

    async def greeting(self) -> str:
        text = greeting_for(self.context)
        self._last = self.call_log.assistant(text)
        return text

    async def respond(self, user_text: str) -> AsyncIterator[AgentEvent]:
        self.call_log.user(user_text)
        async for event in self.agent.handle(user_text):
            if isinstance(event, TextDelta):  # logged before it is spoken: a barge-in trims it
                self._last = self.call_log.assistant(event.text)
            yield event

    async def record_heard(self, heard_text: str) -> None:
        if self._last is not None:
            self.call_log.trim(self._last, heard_text)

    async def aclose(self) -> None:
        await self.call_log.aclose()


# Reading tool results ---------------------------------------------------------------------------


def _records(data: Any, key: str) -> list[dict[str, Any]]:
    """The list under `key` in a tool's JSON answer (or the answer itself, if it is a list)."""
    items = data.get(key) if isinstance(data, dict) else data
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _window(day: str, midnight: datetime) -> tuple[datetime, int]:
    """The local start and the number of days a spoken day asks about."""
    if day == "tomorrow":
        return midnight + timedelta(days=1), 1
    if day == "in two days":
        return midnight + timedelta(days=2), 1
    if day in _WEEKDAYS:
        ahead = (_WEEKDAYS.index(day) - midnight.weekday()) % 7
        return midnight + timedelta(days=ahead), 1
    if day in ("week", "next"):
        return midnight, 7
    return midnight, 1


def _event(event: dict[str, Any], now: datetime, *, with_day: bool) -> str:
    title = str(event.get("title") or "an event")
    try:
        start = datetime.fromisoformat(str(event.get("start")))
    except ValueError:
        return title
    if start.tzinfo is not None:
        start = start.astimezone(now.tzinfo)
    ahead = (start.date() - now.date()).days
    day = ""
    if with_day:
        day = f" on {start:%A}" if 1 < ahead < 7 else f" {spoken_date(start.date(), now.date())}"
    if event.get("all_day"):
        return f"{title}{day}, all day"
    return f"{title}{day} at {spoken_time(start)}"


def _team_name(team: dict[str, Any]) -> str:
    """'Launch team', 'Sales' → 'Launch team', 'Sales team' (never 'Launch team team')."""
    name = str(team.get("name", "")).strip()
    return name if name.lower().endswith("team") else f"{name} team"
