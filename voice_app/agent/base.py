"""The one small interface between the call engine and the assistant: a turn in, a stream out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is on the call. Bound by the server after the PIN check; never from model output."""

    tenant_id: str
    user_id: str
    call_sid: str
    display_name: str = ""
    timezone: str = "UTC"
    channel: Literal["pstn", "browser", "local", "simulator"] = "pstn"
    caller_number: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Words of the reply, in order, as the model streams them."""

    text: str


@dataclass(frozen=True, slots=True)
class Transfer:
    """The assistant decided to hand the caller to a person."""

    reason: str


@dataclass(frozen=True, slots=True)
class Hangup:
    """The conversation is over (the caller said goodbye)."""

    reason: str = "caller said goodbye"


@dataclass(frozen=True, slots=True)
class Retract:
    """The stream broke mid-sentence: drop whatever words have not been spoken yet."""


@dataclass(frozen=True, slots=True)
class ToolActivity:
    """A tool ran (for the transcript/console; the call engine may ignore it)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    ok: bool = True


AgentEvent = TextDelta | Transfer | Hangup | ToolActivity | Retract


class Assistant(Protocol):
    """One conversation for one call. The history lives inside and is persisted by it."""

    def respond(self, user_text: str) -> AsyncIterator[AgentEvent]:
        """Stream the reply to one user turn. Cancelling the iteration cancels the work."""

    async def record_heard(self, heard_text: str) -> None:
        """After a barge-in: replace the last assistant message with what the caller heard."""

    async def greeting(self) -> str:
        """The first line of the call."""

    async def aclose(self) -> None:
        """The call is over: finish writing its log (bounded), release what it holds."""
