"""Which assistant a call gets: Claude when a key is configured, else the offline grammar."""

from __future__ import annotations

from typing import Any, Protocol

from anthropic import AsyncAnthropic

from voice_app.agent.base import Assistant, CallContext
from voice_app.agent.claude import ClaudeAssistant
from voice_app.agent.fallback import FallbackAssistant
from voice_app.agent.toolbox import as_toolbox
from voice_app.config import Settings
from voice_app.db.pool import Database

ANTHROPIC_EXTRA = "anthropic"
CLIENT_TIMEOUT_S = 30.0  # a backstop only: the per-step budget stops a request much sooner


class Services(Protocol):
    """The part of `voice_app.services.Services` an assistant needs."""

    settings: Settings
    db: Database
    extras: dict[str, Any]


def anthropic_client(services: Services) -> AsyncAnthropic:
    """One client per process (it pools connections); closed with the services."""
    client = services.extras.get(ANTHROPIC_EXTRA)
    if not isinstance(client, AsyncAnthropic):
        settings = services.settings
        client = AsyncAnthropic(
            api_key=settings.anthropic_api_key,
            base_url=settings.anthropic_base_url,
            max_retries=0,  # a retry would blow the turn's budget; the fallback path answers
            timeout=CLIENT_TIMEOUT_S,
        )
        services.extras[ANTHROPIC_EXTRA] = client
    return client


def build_assistant(services: Services, call_context: CallContext, tools_session: Any) -> Assistant:
    """The call's assistant. `tools_session`: a Toolbox, an mcp Client, or a ToolSession."""
    toolbox = as_toolbox(tools_session)
    settings = services.settings
    if not settings.anthropic_api_key:
        return FallbackAssistant(toolbox=toolbox, context=call_context, db=services.db)
    return ClaudeAssistant(
        client=anthropic_client(services),
        toolbox=toolbox,
        context=call_context,
        db=services.db,
        model=settings.anthropic_model,
    )
