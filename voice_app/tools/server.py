"""The MCP server: every domain's tools, identity bound per connection, and one middleware that
gives each tool call its caller, a time budget, a model-readable error, and an audit row.

Identity, in order:
* bound at connect time: the lifespan runs once per connection for in-process clients (and once
  per process for stdio) and captures `core.bound_identity()`;
* else the bearer token of this HTTP request (mcp's auth middleware verified it).
A tool call with neither is refused before any tool code runs.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent

from voice_app.db import calls, users
from voice_app.tools import calendar, teams, todos, transfer
from voice_app.tools import users as user_tools
from voice_app.tools.auth import SessionTokenVerifier, identity_from_access_token
from voice_app.tools.core import Identity, ToolCall, ToolServices, bound_identity, using_call

log = logging.getLogger(__name__)

TOOL_TIMEOUT_SECONDS = 8.0  # the design's budget for one tool
DOMAINS = (todos.tools, teams.tools, user_tools.tools, calendar.tools, transfer.tools)

INSTRUCTIONS = (
    "Tools for a caller's todos, teams, profile and calendar, and for handing the call to a "
    "person. They act as the signed-in caller; never ask for or pass anyone's identity, PIN or "
    "account number. Destructive tools need confirm=true after the caller said yes."
)
NOT_SIGNED_IN = "This tool session is not signed in to an account, so no tool can run."
NO_ACCOUNT = "Your account could not be found, so I can't do that. Offer to connect a colleague."
TOO_SLOW = "That took too long and was stopped. Say sorry and offer to try again or to connect "
TOO_SLOW += "a colleague."
CRASHED = "That didn't work because of a problem on our side. Say sorry and offer to try again "
CRASHED += "or to connect a colleague."


@dataclass(frozen=True, slots=True)
class ConnectionState:
    """What the lifespan yields: per connection in-process, per process over stdio and HTTP."""

    services: ToolServices
    identity: Identity | None


def build_server(
    services_factory: Callable[[], ToolServices],
    *,
    tool_timeout: float = TOOL_TIMEOUT_SECONDS,
    issuer_url: str = "http://127.0.0.1:8080",
) -> MCPServer[ConnectionState]:
    """All tools on one MCPServer. `services_factory` is called when a connection starts."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[ConnectionState]) -> AsyncIterator[ConnectionState]:
        yield ConnectionState(services_factory(), bound_identity())

    server: MCPServer[ConnectionState] = MCPServer(
        "voice-app-tools",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        # Used only by the streamable-HTTP app; in-process and stdio connections ignore it.
        token_verifier=SessionTokenVerifier(lambda: services_factory().state),
        auth=AuthSettings(issuer_url=issuer_url, resource_server_url=None),  # type: ignore[arg-type]
        middleware=[ToolCallMiddleware(tool_timeout, _argument_names())],
    )
    for domain in DOMAINS:
        domain.register(server)
    return server


def _argument_names() -> dict[str, frozenset[str]]:
    names: dict[str, frozenset[str]] = {}
    for domain in DOMAINS:
        names |= domain.argument_names()
    return names


class ToolCallMiddleware:
    """Wraps every tools/call: who is calling, the time budget, error wording, the audit."""

    def __init__(self, timeout: float, argument_names: dict[str, frozenset[str]]) -> None:
        self.timeout = timeout
        self.argument_names = argument_names

    async def __call__(
        self, ctx: ServerRequestContext[ConnectionState, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        state = ctx.lifespan_context
        params = ctx.params or {}
        name = str(params.get("name", ""))
        arguments = params.get("arguments") or {}
        identity = state.identity or identity_from_access_token(get_access_token())
        if identity is None:
            log.warning("tool %s refused: no identity on the connection", name)
            return _error_result(NOT_SIGNED_IN)

        started = time.monotonic()
        try:
            with anyio.fail_after(self.timeout):
                async with state.services.db.tenant(identity.tenant_id) as conn:
                    user = await users.get_user(conn, identity.tenant_id, identity.user_id)
        except Exception:  # the database is down or slow: nothing can run, say so briefly
            log.exception("tool %s: could not load the caller", name)
            return _error_result(CRASHED)
        if user is None:
            await _audit(
                state.services, identity, name, arguments, "denied", "no such user", started
            )
            return _error_result(NO_ACCOUNT)

        call = ToolCall(name, identity, user, state.services)
        result = await self._run(call, ctx, call_next, arguments)
        # The model waits for the result, not for its audit row: that is written alongside.
        state.services.spawn(
            _audit(
                state.services, identity, name, arguments, call.outcome or "ok", call.detail,
                started,
            )
        )
        return result

    async def _run(
        self,
        call: ToolCall,
        ctx: ServerRequestContext[ConnectionState, Any],
        call_next: CallNext,
        arguments: dict[str, Any],
    ) -> dict[str, Any]:
        # pydantic would ignore unknown arguments; a model sending e.g. user_id or pin to a tool
        # that takes none should hear that it cannot.
        names = self.argument_names.get(call.tool, frozenset(arguments))
        unknown = sorted(set(arguments) - names)
        if unknown:
            call.outcome = "invalid"
            call.detail = f"Unknown argument(s) for {call.tool}: {', '.join(unknown)}. "
            call.detail += f"It takes: {', '.join(sorted(names)) or 'no arguments'}."
            return _error_result(call.detail)
        result: HandlerResult = None
        with using_call(call), anyio.move_on_after(self.timeout):
            result = await call_next(ctx)
        if not isinstance(result, dict):  # the budget ran out (or a result we do not expect)
            call.outcome, call.detail = "error", "timed out"
            return _error_result(TOO_SLOW)
        return _reword(call, result)


def _error_result(text: str) -> dict[str, Any]:
    result = CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    return result.model_dump(by_alias=True, mode="json", exclude_none=True)


# pydantic's "field\n  Problem [type=...]" pairs.
_PYDANTIC_ERROR = re.compile(
    r"^(?P<field>\S[^\n]*)\n  (?P<problem>[^\n]+?)(?: \[type=[^\n]*)?$", re.M
)


def _reword(call: ToolCall, result: dict[str, Any]) -> dict[str, Any]:
    """Settle the outcome and make error text say what to do, without SDK noise."""
    if not result.get("isError"):
        call.outcome = call.outcome or "ok"
        return result
    text = "".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")
    prefix = f"Error executing tool {call.tool}"
    if not call.entered:  # rejected before the body ran: bad arguments or an unknown tool
        call.outcome = "invalid"
        problems = [
            f"{m['field']}: {m['problem'].removeprefix('Value error, ')}"
            for m in _PYDANTIC_ERROR.finditer(text)
        ]
        if problems:
            text = f"Invalid arguments for {call.tool}: {'; '.join(problems)}. Fix and call again."
    elif call.outcome in (None, "error") and text.strip() == prefix:
        call.outcome = "error"
        text = CRASHED
    else:  # one of our own failures: the message is meant for the model as is
        text = text.removeprefix(prefix + ": ")
    call.detail = call.detail or text
    return {**result, "content": [{"type": "text", "text": text}]}


_SECRET_NAME = re.compile(r"pin|password|secret|token|code", re.I)


def _redacted(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as audited: secret-looking names masked, long values cut."""

    def short(value: Any) -> Any:
        return value[:200] if isinstance(value, str) else value

    return {k: "***" if _SECRET_NAME.search(k) else short(v) for k, v in arguments.items()}


async def _audit(
    services: ToolServices,
    identity: Identity,
    tool: str,
    arguments: dict[str, Any],
    outcome: str,
    detail: str,
    started: float,
) -> None:
    try:
        async with services.db.tenant(identity.tenant_id) as conn:
            await calls.audit_tool_call(
                conn,
                identity.tenant_id,
                identity.user_id,
                call_sid=identity.call_sid,
                tool=tool,
                arguments=_redacted(arguments),
                outcome=outcome,
                detail=detail,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
    except Exception:  # the caller's answer matters more than its audit row
        log.exception("could not audit tool call %s", tool)
