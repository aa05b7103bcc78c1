"""The agent's view of the tools: list them, call one. An MCP client session sits behind it.

Both agents (Claude and the fallback grammar) use the same `Toolbox`, so they reach the same tools
with the same server-bound identity. Budgets are the caller's job: `call` never times out itself.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import mcp
from mcp import types

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, eq=False)
class ToolSpec:
    """A tool as the model sees it. `input_schema` is the MCP inputSchema (JSON Schema).

    Compared and hashed by identity: an in-process server lists its specs once and every call
    shares those objects, so what is derived from them (the model's tool definitions) is built
    once per process instead of once per call. Treat a spec and its schema as read-only.
    """

    name: str
    description: str
    input_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})

    def param_names(self) -> set[str]:
        return set(self.input_schema.get("properties") or {})


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool said: `text` for the model, `data` (parsed JSON, if any) for code."""

    text: str
    is_error: bool = False
    data: Any = None


@runtime_checkable
class Toolbox(Protocol):
    async def list_tools(self) -> list[ToolSpec]: ...

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult: ...


class McpToolbox:
    """`Toolbox` over an entered mcp 2.x `Client` (in-process, stdio or streamable HTTP)."""

    def __init__(self, client: mcp.Client) -> None:
        self._client = client

    async def list_tools(self) -> list[ToolSpec]:
        specs: list[ToolSpec] = []
        cursor: str | None = None
        while True:
            page = await self._client.list_tools(cursor=cursor)
            specs += [
                ToolSpec(tool.name, tool.description or "", dict(tool.input_schema))
                for tool in page.tools
            ]
            cursor = page.next_cursor
            if cursor is None:
                return specs

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        try:
            result = await self._client.call_tool(name, arguments)
        except mcp.MCPError as exc:  # protocol-level failure: tell the model, don't crash the turn
            log.warning("tool %s failed over MCP: %s", name, exc)
            return ToolResult(f"The {name} tool failed: {exc.error.message}", is_error=True)
        return to_tool_result(result)


class SessionToolbox:
    """`Toolbox` over a session that lists its tools up front (`.specs`) and answers each call
    with `(text, is_error)`: the shape of `voice_app.tools.session.ToolSession`."""

    def __init__(self, session: Any) -> None:
        self._session = session

    async def list_tools(self) -> list[ToolSpec]:
        return list(self._session.specs)  # the session's shared specs, not copies

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolResult:
        text, is_error = await self._session.call(name, arguments)
        return ToolResult(text, bool(is_error), _json(text))


def as_toolbox(tools: Any) -> Toolbox:
    """Whatever the call engine holds (a Toolbox, an mcp Client, a ToolSession) as a Toolbox."""
    if isinstance(tools, Toolbox):
        return tools
    if isinstance(tools, mcp.Client):
        return McpToolbox(tools)
    if hasattr(tools, "specs") and hasattr(tools, "call"):
        return SessionToolbox(tools)
    raise TypeError(f"not a tool session: {type(tools).__name__}")


def to_tool_result(result: types.CallToolResult) -> ToolResult:
    text = "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))
    data = result.structured_content
    if data is None:
        data = _json(text)
    if not text and data is not None:
        text = json.dumps(data)
    return ToolResult(text=text, is_error=bool(result.is_error), data=data)


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
