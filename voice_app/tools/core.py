"""What every tool shares: who is calling, the services, the errors the model reads, the
argument types, and how a domain module declares its tools.

Identity is never a tool argument. The server binds it to the MCP connection (in-process: when
the per-call client connects; HTTP: from the bearer token) and the middleware in `server.py`
hands each tool a `ToolCall` through a context variable.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import httpx
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import AfterValidator, Field

from voice_app.config import Settings
from voice_app.db.pool import Database
from voice_app.db.users import User
from voice_app.state.store import StateStore
from voice_app.tools.availability import (
    AgentAvailability,
    HttpAgentAvailability,
    UnknownAvailability,
)

Outcome = Literal["ok", "invalid", "not_found", "error", "denied"]


BACKGROUND_GRACE_S = 5.0  # at shutdown, for audit rows still being written


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the tools act for. Built by the server from the call session or a bearer token."""

    tenant_id: UUID
    user_id: UUID
    call_sid: str | None = None

    @classmethod
    def of(
        cls, tenant_id: str | UUID, user_id: str | UUID, call_sid: str | None = None
    ) -> Identity:
        return cls(UUID(str(tenant_id)), UUID(str(user_id)), call_sid or None)


@dataclass
class ToolServices:
    """The long-lived clients tools use; one per process, shared by every connection."""

    settings: Settings
    db: Database
    state: StateStore
    http: httpx.AsyncClient
    availability: AgentAvailability

    @classmethod
    def create(
        cls,
        settings: Settings,
        db: Database,
        state: StateStore,
        *,
        availability: AgentAvailability | None = None,
    ) -> ToolServices:
        http = httpx.AsyncClient(timeout=httpx.Timeout(6.0, connect=3.0))
        if availability is None:
            availability = (
                HttpAgentAvailability(settings.pbx_availability_url, http)
                if settings.pbx_availability_url
                else UnknownAvailability()
            )
        return cls(settings, db, state, http, availability)

    background: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (an audit write) without making the caller wait; kept until it is done."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def settled(self) -> None:
        """Wait (at most BACKGROUND_GRACE_S) until the background writes so far are done."""
        if self.background:
            await asyncio.wait(set(self.background), timeout=BACKGROUND_GRACE_S)

    async def aclose(self) -> None:
        await self.settled()  # audit rows still being written: give them a moment
        await self.http.aclose()


@dataclass
class ToolCall:
    """One tool invocation: the caller, their user record, and how it ended (for the audit)."""

    tool: str
    identity: Identity
    user: User
    services: ToolServices
    outcome: Outcome | None = None
    detail: str = ""
    entered: bool = field(default=False)  # the tool body ran (so arguments were valid)

    @property
    def tenant_id(self) -> UUID:
        return self.identity.tenant_id

    @property
    def user_id(self) -> UUID:
        return self.identity.user_id

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"

    @property
    def tz(self) -> ZoneInfo:
        return zone_or_utc(self.user.timezone)

    def db(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A transaction that sees only the caller's tenant."""
        return self.services.db.tenant(self.identity.tenant_id)


_current_call: ContextVar[ToolCall | None] = ContextVar("voice_app_tool_call", default=None)
# Set by whoever opens a connection (the per-call session, the stdio runner); read once by the
# server's lifespan when that connection starts, so later changes cannot leak into it.
_connection_identity: ContextVar[Identity | None] = ContextVar(
    "voice_app_tool_identity", default=None
)


def current_call() -> ToolCall:
    call = _current_call.get()
    if call is None:
        raise RuntimeError("tools run only inside the MCP server's tool middleware")
    return call


@contextmanager
def using_call(call: ToolCall) -> Iterator[None]:
    token = _current_call.set(call)
    try:
        yield
    finally:
        _current_call.reset(token)


@contextmanager
def binding_identity(identity: Identity) -> Iterator[None]:
    """Connections opened inside this block act for `identity` for their whole life."""
    token = _connection_identity.set(identity)
    try:
        yield
    finally:
        _connection_identity.reset(token)


def bound_identity() -> Identity | None:
    return _connection_identity.get()


# Errors the model reads. The message is the whole answer: say what to do next.


class ToolFailure(ToolError):
    outcome: Outcome = "error"


class Invalid(ToolFailure):
    outcome = "invalid"


class NotFound(ToolFailure):
    outcome = "not_found"


class Denied(ToolFailure):
    outcome = "denied"


# Argument types shared by several domains.


def _sane_year(value: datetime) -> datetime:
    if not 2000 <= value.year <= 2100:
        raise ValueError("the year must be between 2000 and 2100")
    return value


When = Annotated[
    datetime,
    AfterValidator(_sane_year),
    Field(
        description="ISO 8601 date-time such as 2025-06-03T17:00. Without an offset it is read "
        "in the caller's time zone."
    ),
]
Confirm = Annotated[
    bool,
    Field(
        description="Must be true, and only after the caller clearly said yes to this exact "
        "action. Leave false to get the question to ask them."
    ),
]
Limit = Annotated[int, Field(ge=1, le=50, description="How many results at most (1-50).")]


def zone_or_utc(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def to_utc(value: datetime, tz: ZoneInfo) -> datetime:
    """An aware UTC datetime; a naive one is read in `tz` (the caller's zone)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def local_iso(value: datetime | None, tz: ZoneInfo) -> str | None:
    """How times leave the tools: in the caller's zone, to the minute, with the offset."""
    return None if value is None else value.astimezone(tz).isoformat(timespec="minutes")


# Declaring tools.

ToolFn = Callable[..., Awaitable[Any]]


@dataclass
class ToolSet:
    """A domain module's tools: `@tools()` declares one, `tools.register(server)` adds them all.

    The tool's docstring is its description for the model: say when to use it and what it returns.
    """

    declared: list[tuple[ToolFn, ToolAnnotations]] = field(default_factory=list)

    def __call__(
        self, *, read_only: bool = False, destructive: bool = False
    ) -> Callable[[ToolFn], ToolFn]:
        def declare(fn: ToolFn) -> ToolFn:
            hints = ToolAnnotations(
                read_only_hint=read_only, destructive_hint=destructive, open_world_hint=False
            )
            self.declared.append((fn, hints))
            return fn

        return declare

    def argument_names(self) -> dict[str, frozenset[str]]:
        return {fn.__name__: frozenset(inspect.signature(fn).parameters) for fn, _ in self.declared}

    def register(self, server: MCPServer[Any]) -> None:
        for fn, hints in self.declared:
            server.add_tool(
                _recording_outcome(fn),
                name=fn.__name__,
                description=inspect.cleandoc(fn.__doc__ or ""),
                annotations=hints,
            )


def _recording_outcome(fn: ToolFn) -> ToolFn:
    """Note how the body ended on the current ToolCall; the SDK turns exceptions into text."""

    @functools.wraps(fn)  # keeps the signature, which becomes the input schema
    async def run(*args: Any, **kwargs: Any) -> Any:
        call = current_call()
        call.entered = True
        try:
            result = await fn(*args, **kwargs)
        except ToolFailure as failure:
            call.outcome, call.detail = failure.outcome, str(failure)
            raise
        except Exception as error:
            call.outcome, call.detail = "error", type(error).__name__
            raise
        call.outcome = call.outcome or "ok"
        return result

    return run
