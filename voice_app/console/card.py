"""The caller card an agent sees before saying hello: a pure function of facts from the database.

The same card is pushed over the console's event socket when a transfer starts and served by
`GET /api/console/context/{token}`, so the popup looks the same whichever arrives first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

SPEAKERS = {"user": "caller", "assistant": "assistant"}


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None


def caller_card(
    *,
    token: str,
    context: Mapping[str, Any],
    caller: Mapping[str, Any] | None,
    messages: Sequence[Mapping[str, Any]],
    todos: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """`context` is the console-context token's data; `caller` is `db.console.caller_facts`."""
    caller = caller or {}
    return {
        "token": token,
        "tenant": {"id": context.get("tenant_id", ""), "name": caller.get("tenant_name") or ""},
        "caller": {
            "name": caller.get("display_name") or "Unknown caller",
            "account": caller.get("account_number") or "",
            "phone": context.get("caller_number") or caller.get("phone_e164") or "",
            "timezone": caller.get("timezone") or "",
        },
        "reason": context.get("reason", ""),
        "started_at": context.get("started_at", ""),
        "conversation": [
            {
                "speaker": SPEAKERS.get(str(m.get("role")), "assistant"),
                "text": m.get("content", ""),
                "interrupted": bool(m.get("interrupted")),
                "at": _iso(m.get("created_at")),
            }
            for m in messages
        ],
        "open_todos": [
            {
                "title": t.get("title", ""),
                "priority": t.get("priority", "normal"),
                "due_at": _iso(t.get("due_at")),
                "team": t.get("team_name"),
            }
            for t in todos
        ],
    }
