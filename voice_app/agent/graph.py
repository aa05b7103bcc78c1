"""The conversation graph of one turn: model ⇄ tools, ending in a reply, a transfer or a hangup.

    START → model ─(tool_use)→ tools ─(transfer / hangup / trouble)→ END
              ↑ └─(end_turn)→ END     │
              └──────(results)────────┘

The model node streams Claude's words into LangGraph's custom stream as `TextDelta`s while the
reply is still being generated; the tools node reports each finished tool as a `ToolRun`. Both
nodes return only what they add to the message list, so the caller can commit each step as it
completes and knows exactly what is left open when a turn is cut short.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Annotated, Any, Literal, NotRequired, TypedDict, cast

from anthropic import AsyncAnthropic
from anthropic.types import Message as ApiMessage
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from voice_app.agent.base import TextDelta
from voice_app.agent.history import Message, tool_result_block, tool_uses
from voice_app.agent.schemas import compact_schema
from voice_app.agent.toolbox import Toolbox, ToolResult, ToolSpec

log = logging.getLogger(__name__)

Outcome = Literal["reply", "transfer", "hangup", "trouble"]

TRANSFER_TOOL = "transfer_to_agent"
END_CALL_TOOL = "end_call"
END_CALL: dict[str, Any] = {
    "name": END_CALL_TOOL,
    "description": "Hang up. Call this only after the caller said goodbye and you said goodbye.",
    "input_schema": {"type": "object", "properties": {}},
}
MAX_STEPS = 8  # model calls per turn; a loop beyond this is a bug, not a conversation


TOOL_BUDGET_S = 8.0  # one tool call
STEP_BUDGET_S = 10.0  # one model request, first byte to last
TURN_BUDGET_S = 12.0  # everything Claude does for one user turn


@dataclass(frozen=True, slots=True)
class Budgets:
    """Seconds each kind of work may take before the caller hears the honest line."""

    tool_s: float = TOOL_BUDGET_S
    step_s: float = STEP_BUDGET_S
    turn_s: float = TURN_BUDGET_S


@dataclass(frozen=True, slots=True)
class ToolRun:
    """Custom-stream event: one tool call finished (successfully or not)."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    result: ToolResult


class TurnState(TypedDict):
    messages: Annotated[list[Message], operator.add]
    outcome: NotRequired[Outcome]
    reason: NotRequired[str]


def tool_definitions(specs: Sequence[ToolSpec]) -> tuple[dict[str, Any], ...]:
    """MCP tools as Anthropic tools (plus end_call); the last one carries the cache breakpoint.

    Built once per set of specs (they compare by identity) and shared by every call that lists
    the same ones: about 20 KB of dicts per live call saved. Read-only: the SDK copies it."""
    return _definitions(tuple(specs))


@lru_cache(maxsize=8)  # one entry per tools server in practice; bounded for remote toolboxes
def _definitions(specs: tuple[ToolSpec, ...]) -> tuple[dict[str, Any], ...]:
    tools = [
        {
            "name": s.name,
            "description": s.description,
            "input_schema": compact_schema(s.input_schema),
        }
        for s in specs
    ]
    tools.append(dict(END_CALL))
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    return tuple(tools)


def assistant_message(final: ApiMessage) -> Message | None:
    """The API's reply as a request-ready message; a truncated tool_use is dropped, not run."""
    blocks: list[dict[str, Any]] = []
    for block in final.content:
        if block.type == "text" and block.text:
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use" and final.stop_reason == "tool_use":
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
    return {"role": "assistant", "content": blocks} if blocks else None


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What one call's turns run with. The graph itself is compiled once per process; a call's
    client, tools and prompt arrive as LangGraph run context."""

    client: AsyncAnthropic
    model: str
    toolbox: Toolbox
    tools: Sequence[dict[str, Any]]
    system: Callable[[], list[dict[str, Any]]]
    budgets: Budgets
    max_tokens: int = 300


async def _model_node(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx, write = runtime.context, runtime.stream_writer
    async with (
        asyncio.timeout(ctx.budgets.step_s),
        ctx.client.messages.stream(
            model=ctx.model,
            max_tokens=ctx.max_tokens,
            system=cast(Any, ctx.system()),
            tools=cast(Any, ctx.tools),
            messages=cast(Any, state["messages"]),
        ) as stream,
    ):
        async for event in stream:
            if event.type == "text" and event.text:
                write(TextDelta(event.text))
        final = await stream.get_final_message()
    reply = assistant_message(final)
    return {"messages": [reply] if reply else []}


async def _tools_node(state: TurnState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
    ctx, write = runtime.context, runtime.stream_writer
    outcome: Outcome = "reply"
    reason = ""
    results = []
    for call in tool_uses(state["messages"][-1]):
        name, arguments = call["name"], call["input"]
        if outcome == "trouble":
            result = ToolResult("Not run: an earlier tool did not answer.", is_error=True)
        elif name == END_CALL_TOOL:
            result, outcome = ToolResult("The call will end after your goodbye."), "hangup"
        else:
            result = await _run_tool(ctx.toolbox, name, arguments, ctx.budgets.tool_s)
            if result is TIMED_OUT:
                outcome = "trouble"
            elif name == TRANSFER_TOOL and not result.is_error:
                outcome = "transfer"
                reason = str(arguments.get("reason") or "caller asked for a person")
        write(ToolRun(call["id"], name, arguments, result))
        results.append(tool_result_block(call["id"], result))
    return {
        "messages": [{"role": "user", "content": results}],
        "outcome": outcome,
        "reason": reason,
    }


def _after_model(state: TurnState) -> str:
    return "tools" if tool_uses(state["messages"][-1]) else END


def _after_tools(state: TurnState) -> str:
    return "model" if state.get("outcome", "reply") == "reply" else END


@cache
def turn_graph() -> Any:
    """The compiled graph, shared by every call (compiling costs milliseconds; a turn must not)."""
    graph = StateGraph(TurnState, context_schema=TurnContext)
    graph.add_node("model", _model_node)
    graph.add_node("tools", _tools_node)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", _after_model, ["tools", END])
    graph.add_conditional_edges("tools", _after_tools, ["model", END])
    return graph.compile()


TIMED_OUT = ToolResult("The tool did not answer in time.", is_error=True)


async def _run_tool(
    toolbox: Toolbox, name: str, arguments: dict[str, Any], budget: float
) -> ToolResult:
    try:
        async with asyncio.timeout(budget):
            return await toolbox.call(name, arguments)
    except TimeoutError:
        return TIMED_OUT
    except Exception:  # a broken session: the model hears the tool failed and can say so
        log.exception("tool %s failed", name)
        return ToolResult(f"The {name} tool failed.", is_error=True)
