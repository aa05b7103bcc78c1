"""ClaudeAssistant: one call's conversation with Claude, streamed, budgeted and persisted.

Each turn runs the graph in a task of its own and passes events to `respond()` through a queue,
so the budgets time only the model and the tools (never the speaker), and cancelling `respond()`
cancels the task at whatever it is doing. However a turn ends (answered, failed, out of time,
barged in), `_settle` leaves the message list valid for the next request: every tool_use answered,
the words already spoken kept. When Claude fails before any tool ran, the fallback grammar gets
the same turn; otherwise the caller hears one honest line and the offer of a person.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from voice_app.agent.base import (
    AgentEvent,
    CallContext,
    Hangup,
    Retract,
    TextDelta,
    ToolActivity,
    Transfer,
)
from voice_app.agent.calllog import CallLog, Entry
from voice_app.agent.fallback import FallbackAgent
from voice_app.agent.graph import (
    MAX_STEPS,
    STEP_BUDGET_S,
    TOOL_BUDGET_S,
    TRANSFER_TOOL,
    TURN_BUDGET_S,
    Budgets,
    ToolRun,
    TurnContext,
    tool_definitions,
    turn_graph,
)
from voice_app.agent.history import (
    Message,
    append,
    close_tool_uses,
    message_text,
    replace_text,
    split_heard,
    text_block,
    tool_uses,
)
from voice_app.agent.prompts import (
    GOODBYE_LINE,
    TRANSFER_LINE,
    TROUBLE_LINE,
    greeting_for,
    system_blocks,
)
from voice_app.agent.spoken import zone
from voice_app.agent.toolbox import Toolbox, ToolResult
from voice_app.db.pool import Database

log = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-6"


@dataclass
class _Spoken:
    """A piece of a reply the caller may have heard: where it lives in memory and in the DB."""

    message: Message | None
    entry: Entry | None
    text: str


class _Turn:
    """What one turn has said and done so far, so it can be settled however it ends."""

    def __init__(self, emit: Callable[[AgentEvent], None]) -> None:
        self.emit = emit
        self.pending = ""  # words streamed by the current model step, not yet in a message
        self.said_any = False
        self.step_said = False  # the latest model step (or the fallback) said something
        self.fresh = True  # the next words start a new piece: keep a space from the last one
        self.finished: dict[str, ToolResult] = {}  # results of the tools step in progress
        self.tools_ran = False
        self.replied = False  # a final answer (no tool_use) is in the history
        self.spoken: list[_Spoken] = []
        self.outcome = "reply"  # reply | transfer | hangup | trouble | failed
        self.reason = ""
        self.tool_say = ""  # the transfer tool's own line, for when the model said nothing

    def speak(self, text: str) -> None:
        if self.fresh and self.said_any and not text[:1].isspace():
            text = " " + text
        self.fresh, self.said_any = False, True
        self.pending += text
        self.emit(TextDelta(text))

    def say(self, line: str) -> None:
        self.fresh = True
        self.speak(line)


class ClaudeAssistant:
    """`Assistant` backed by Claude through the LangGraph graph, with the grammar as a spare."""

    def __init__(
        self,
        *,
        client: AsyncAnthropic,
        toolbox: Toolbox,
        context: CallContext,
        db: Database | None = None,
        model: str = DEFAULT_MODEL,
        max_tokens: int = 300,
        tool_budget_s: float = TOOL_BUDGET_S,
        step_budget_s: float = STEP_BUDGET_S,
        turn_budget_s: float = TURN_BUDGET_S,
        fallback: FallbackAgent | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.context = context
        self.history: list[Message] = []  # the call's Anthropic-format messages
        self._client = client
        self._toolbox = toolbox
        self._model = model
        self._max_tokens = max_tokens
        self._budgets = Budgets(tool_budget_s, step_budget_s, turn_budget_s)
        self.call_log = CallLog(db, context)
        self._now = now or (lambda: datetime.now(zone(context.timezone)))
        self._fallback = fallback or FallbackAgent(
            toolbox, context, self.call_log, tool_budget_s=tool_budget_s, now=self._now
        )
        self._turn_ctx: TurnContext | None = None  # built at the first turn
        self._greeting = ""
        self._last: list[_Spoken] = []  # what the latest turn (or the greeting) said
        self._lock = asyncio.Lock()

    def restore(self, earlier: list[tuple[str, str]]) -> None:
        """Carry on a conversation this call already had (a stream that came back after a
        transfer nobody answered, or after a drop): its spoken turns become the history."""
        for role, text in earlier:
            if role not in ("user", "assistant") or not text.strip():
                continue
            if not self.history and role == "assistant":
                continue  # the API's history starts with the caller
            append(self.history, role, [text_block(text)])

    async def greeting(self) -> str:
        self._greeting = greeting_for(self.context)
        self._last = [_Spoken(None, self.call_log.assistant(self._greeting), self._greeting)]
        return self._greeting

    async def respond(self, user_text: str) -> AsyncIterator[AgentEvent]:
        if not user_text.strip():  # the API refuses empty text; silence needs no answer
            return
        events: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        worker = asyncio.create_task(self._turn(user_text, events.put_nowait))
        worker.add_done_callback(lambda _: events.put_nowait(None))
        try:
            while (event := await events.get()) is not None:
                yield event
            worker.result()  # surface a bug in the turn itself
        finally:
            if not worker.done():
                worker.cancel()
                await asyncio.wait([worker])

    async def record_heard(self, heard_text: str) -> None:
        async with self._lock:
            pieces = self._last
            for piece, heard in zip(
                pieces, split_heard(heard_text, [p.text for p in pieces]), strict=True
            ):
                if heard == piece.text:
                    continue
                if piece.message is not None:
                    replace_text(self.history, piece.message, heard)
                if piece.entry is not None:
                    self.call_log.trim(piece.entry, heard)
                piece.text = heard

    async def aclose(self) -> None:
        await self.call_log.aclose()

    # One turn ------------------------------------------------------------------------------

    async def _turn(self, user_text: str, emit: Callable[[AgentEvent], None]) -> None:
        async with self._lock:
            turn = _Turn(emit)
            self._last = turn.spoken
            append(self.history, "user", [text_block(user_text)])
            self.call_log.user(user_text)  # written in the background: the model goes first
            try:
                try:
                    await self._run_claude(turn)
                except Exception as exc:
                    _report(exc)
                    if not turn.replied:  # a failure after the answer was complete costs nothing
                        turn.outcome = "failed"
                if turn.outcome == "failed":
                    turn.emit(Retract())  # a half-streamed sentence must not be finished
                    turn.fresh = True
                    cut = max(turn.pending.rfind(mark) for mark in ".!?")
                    turn.pending = turn.pending[: cut + 1]  # nor remembered
                if turn.outcome == "failed" and not turn.tools_ran:
                    await self._answer_with_fallback(turn, user_text)
                if turn.outcome in ("failed", "trouble"):
                    turn.say(TROUBLE_LINE)
                elif turn.outcome == "transfer" and not turn.step_said:
                    turn.say(turn.tool_say or TRANSFER_LINE)
                elif turn.outcome == "hangup" and not turn.step_said:
                    turn.say(GOODBYE_LINE)
            finally:  # also on cancellation: the history must stay valid for the next turn
                self._settle(turn)
            if turn.outcome == "transfer":
                emit(Transfer(turn.reason))
            elif turn.outcome == "hangup":
                emit(Hangup())

    async def _run_claude(self, turn: _Turn) -> None:
        async with asyncio.timeout(self._budgets.turn_s):
            stream = turn_graph().astream(
                {"messages": list(self.history)},
                {"recursion_limit": 2 * MAX_STEPS + 1},
                context=await self._turn_context(),
                stream_mode=["custom", "updates"],
            )
            async with aclosing(stream):  # leaving early also stops the graph's running nodes
                await self._consume(turn, stream)

    async def _consume(self, turn: _Turn, stream: AsyncIterator[Any]) -> None:
        async for mode, chunk in stream:
            if mode == "custom":
                await self._on_event(turn, chunk)
            else:
                for node, update in chunk.items():
                    await self._on_update(turn, node, update or {})

    async def _on_event(self, turn: _Turn, event: Any) -> None:
        if isinstance(event, TextDelta):
            turn.speak(event.text)
        elif isinstance(event, ToolRun):
            result = event.result
            turn.finished[event.call_id] = result
            turn.tools_ran = True
            if event.name == TRANSFER_TOOL and isinstance(result.data, dict):
                turn.tool_say = str(result.data.get("say") or "")
            turn.emit(ToolActivity(event.name, event.arguments, ok=not result.is_error))
            self.call_log.tool(event.name, event.arguments, result)

    async def _on_update(self, turn: _Turn, node: str, update: dict[str, Any]) -> None:
        """A node finished: its messages join the history (and the database) now."""
        for message in update.get("messages") or []:
            self.history.append(message)
            if message["role"] == "assistant":
                turn.pending, turn.fresh = "", True
                turn.replied = not tool_uses(message)
                text = message_text(message)
                turn.step_said = bool(text)
                if text:
                    turn.spoken.append(_Spoken(message, self.call_log.assistant(text), text))
        if node == "tools":
            turn.finished = {}
        if "outcome" in update:
            turn.outcome, turn.reason = update["outcome"], update.get("reason", "")

    async def _answer_with_fallback(self, turn: _Turn, user_text: str) -> None:
        if not self._fallback.understands(user_text):
            return
        try:
            async with asyncio.timeout(self._budgets.turn_s):
                async for event in self._fallback.handle(user_text):
                    if isinstance(event, TextDelta):
                        turn.say(event.text)
                        turn.step_said = True
                    elif isinstance(event, Transfer):
                        turn.outcome, turn.reason = "transfer", event.reason
                    elif isinstance(event, Hangup):
                        turn.outcome = "hangup"
                    else:
                        turn.emit(event)
        except Exception:
            log.exception("the fallback agent failed too")
            return
        if turn.outcome == "failed":
            turn.outcome = "reply"

    def _settle(self, turn: _Turn) -> None:
        """Answer any open tool_use and keep (and log) the words already spoken."""
        close_tool_uses(self.history, turn.finished)
        text, turn.pending = turn.pending.strip(), ""
        if text:
            message = append(self.history, "assistant", [text_block(text)])
            turn.spoken.append(_Spoken(message, self.call_log.assistant(text), text))

    async def _turn_context(self) -> TurnContext:
        if self._turn_ctx is None:
            specs = await self._toolbox.list_tools()
            self._turn_ctx = TurnContext(
                client=self._client,
                model=self._model,
                toolbox=self._toolbox,
                tools=tool_definitions(specs),
                system=lambda: system_blocks(self.context, self._now(), self._greeting),
                budgets=self._budgets,
                max_tokens=self._max_tokens,
            )
        return self._turn_ctx


def _report(exc: Exception) -> None:
    if isinstance(exc, anthropic.APIStatusError):
        log.warning("Claude answered %s: %s", exc.status_code, exc.message)
    elif isinstance(exc, TimeoutError | anthropic.APITimeoutError):
        log.warning("Claude ran out of time")
    elif isinstance(exc, anthropic.APIConnectionError):
        log.warning("Claude could not be reached: %s", exc)
    else:
        log.exception("the Claude turn failed", exc_info=exc)
