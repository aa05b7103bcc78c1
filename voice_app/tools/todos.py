"""Todo tools. A caller sees todos they own, are assigned, or that belong to one of their teams;
anything else answers "not found", exactly like a todo that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import Field, StringConstraints

from voice_app.db import teams, todos, users
from voice_app.tools.core import (
    Confirm,
    Denied,
    Invalid,
    Limit,
    NotFound,
    ToolCall,
    ToolSet,
    When,
    current_call,
    local_iso,
    to_utc,
)

tools = ToolSet()

Priority = Literal["low", "normal", "high", "urgent"]
TodoId = Annotated[UUID, Field(description="The todo's id, as returned by todo_list/todo_search.")]
UserId = Annotated[UUID, Field(description="A user's id, as returned by user_find_by_name.")]
TeamId = Annotated[UUID, Field(description="A team's id, as returned by team_list.")]
Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    Field(description="A short title, 1-200 characters."),
]
Notes = Annotated[str, Field(max_length=4000, description="Free text, up to 4000 characters.")]

NOTES_LIMIT = 4000


def todo_out(todo: dict[str, Any], tz: ZoneInfo, *, brief: bool = False) -> dict[str, Any]:
    notes: str = todo["notes"]
    return {
        "id": str(todo["id"]),
        "title": todo["title"],
        "status": todo["status"],
        "priority": todo["priority"],
        "due": local_iso(todo["due_at"], tz),
        "notes": notes[:200] + "…" if brief and len(notes) > 200 else notes,
        "owner": todo["owner_name"],
        "assignee": todo["assignee_name"],
        "assignee_id": str(todo["assignee_id"]) if todo["assignee_id"] else None,
        "team": todo["team_name"],
        "team_id": str(todo["team_id"]) if todo["team_id"] else None,
        "completed_at": local_iso(todo["completed_at"], tz),
    }


def listing(found: list[dict[str, Any]], call: ToolCall) -> dict[str, Any]:
    return {
        "count": len(found),
        "timezone": str(call.tz),
        "todos": [todo_out(t, call.tz, brief=True) for t in found],
    }


async def visible_todo(conn: asyncpg.Connection, call: ToolCall, todo_id: UUID) -> dict[str, Any]:
    todo = await todos.get_todo(conn, call.tenant_id, call.user_id, todo_id)
    if todo is None:
        raise NotFound(
            "No todo with that id is visible to you. Use todo_list or todo_search to find it."
        )
    return todo


async def require_user(conn: asyncpg.Connection, call: ToolCall, user_id: UUID) -> users.User:
    user = await users.get_user(conn, call.tenant_id, user_id)
    if user is None:
        raise NotFound("No user with that id. Use user_find_by_name to look them up.")
    return user


async def require_team_member(conn: asyncpg.Connection, call: ToolCall, team_id: UUID) -> None:
    if await teams.get_team(conn, call.tenant_id, call.user_id, team_id) is None:
        raise NotFound("No team with that id. Use team_list to find it.")
    if await teams.member_role(conn, call.tenant_id, team_id, call.user_id) is None:
        raise Denied("You are not a member of that team, so you cannot use its todos.")


async def _change(todo_id: UUID, changes: dict[str, Any], message: str) -> dict[str, Any]:
    call = current_call()
    async with call.db() as conn:
        await visible_todo(conn, call, todo_id)
        await todos.update_todo(conn, call.tenant_id, todo_id, changes)
        todo = await visible_todo(conn, call, todo_id)
    return {"message": message, "todo": todo_out(todo, call.tz)}


@tools()
async def todo_create(
    title: Title,
    notes: Notes = "",
    priority: Priority = "normal",
    due: When | None = None,
    assignee_user_id: UserId | None = None,
    team_id: TeamId | None = None,
) -> dict[str, Any]:
    """Create a todo owned by the caller.

    Optionally set notes, a priority, a due date-time, an assignee (a user id from
    user_find_by_name) and a team (a team id from team_list; the caller must be a member).
    If the caller gives only a day, use 17:00 that day. Returns the new todo with its id.
    """
    call = current_call()
    async with call.db() as conn:
        if team_id is not None:
            await require_team_member(conn, call, team_id)
        if assignee_user_id is not None:
            await require_user(conn, call, assignee_user_id)
        todo = await todos.create_todo(
            conn,
            call.tenant_id,
            call.user_id,
            title=title,
            notes=notes,
            priority=priority,
            due_at=None if due is None else to_utc(due, call.tz),
            assignee_id=assignee_user_id,
            team_id=team_id,
        )
    return {"message": "Todo created.", "todo": todo_out(todo, call.tz)}


@tools(read_only=True)
async def todo_get(todo_id: TodoId) -> dict[str, Any]:
    """Get one todo by id, with its full notes. Returns the todo, times in the caller's zone."""
    call = current_call()
    async with call.db() as conn:
        todo = await visible_todo(conn, call, todo_id)
    return {"todo": todo_out(todo, call.tz)}


@tools(read_only=True)
async def todo_list(
    status: Literal["open", "done", "all"] = "open",
    priority: Priority | None = None,
    due_from: When | None = None,
    due_before: When | None = None,
    assignee_user_id: UserId | None = None,
    team_id: TeamId | None = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    """List the caller's todos (own, assigned to them, or of their teams), soonest due first.

    Every filter is optional: status (default open), priority, a due range [due_from,
    due_before), an assignee, a team. Returns {count, timezone, todos}; notes are shortened.
    """
    call = current_call()
    if due_from and due_before and to_utc(due_from, call.tz) >= to_utc(due_before, call.tz):
        raise Invalid("due_from must be earlier than due_before.")
    async with call.db() as conn:
        found = await todos.list_todos(
            conn,
            call.tenant_id,
            call.user_id,
            status=None if status == "all" else status,
            priority=priority,
            assignee_id=assignee_user_id,
            team_id=team_id,
            due_from=None if due_from is None else to_utc(due_from, call.tz),
            due_before=None if due_before is None else to_utc(due_before, call.tz),
            limit=limit,
        )
    return listing(found, call)


@tools(read_only=True)
async def todo_search(
    text: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=2, max_length=100),
        Field(description="Words to look for in titles and notes (2-100 characters)."),
    ],
    status: Literal["open", "done", "all"] = "all",
    limit: Limit = 20,
) -> dict[str, Any]:
    """Find the caller's todos whose title or notes contain the text (case-insensitive).

    Use it to turn "the dentist one" into a todo id. Returns {count, timezone, todos}.
    """
    call = current_call()
    async with call.db() as conn:
        found = await todos.list_todos(
            conn,
            call.tenant_id,
            call.user_id,
            status=None if status == "all" else status,
            text=text,
            limit=limit,
        )
    return listing(found, call)


@tools()
async def todo_update(
    todo_id: TodoId, title: Title | None = None, notes: Notes | None = None
) -> dict[str, Any]:
    """Change a todo's title and/or replace its notes entirely (to add a line, use todo_add_note).

    Returns the updated todo.
    """
    changes = {k: v for k, v in (("title", title), ("notes", notes)) if v is not None}
    if not changes:
        raise Invalid("Give a new title, new notes, or both.")
    return await _change(todo_id, changes, "Todo updated.")


@tools()
async def todo_complete(todo_id: TodoId) -> dict[str, Any]:
    """Mark a todo as done. Returns the updated todo."""
    call = current_call()
    async with call.db() as conn:
        todo = await visible_todo(conn, call, todo_id)
    if todo["status"] == "done":
        return {"message": "That todo was already done.", "todo": todo_out(todo, call.tz)}
    return await _change(
        todo_id, {"status": "done", "completed_at": datetime.now(UTC)}, "Marked as done."
    )


@tools()
async def todo_reopen(todo_id: TodoId) -> dict[str, Any]:
    """Mark a done todo as open again. Returns the updated todo."""
    call = current_call()
    async with call.db() as conn:
        todo = await visible_todo(conn, call, todo_id)
    if todo["status"] == "open":
        return {"message": "That todo is already open.", "todo": todo_out(todo, call.tz)}
    return await _change(todo_id, {"status": "open", "completed_at": None}, "Reopened.")


@tools(destructive=True)
async def todo_delete(todo_id: TodoId, confirm: Confirm = False) -> dict[str, Any]:
    """Delete a todo for good. Only its owner, an owner of its team, or an admin may.

    First call without confirm to get the question for the caller; call again with
    confirm=true only after they said yes. Returns what happened.
    """
    call = current_call()
    async with call.db() as conn:
        todo = await visible_todo(conn, call, todo_id)
        team_role = (
            await teams.member_role(conn, call.tenant_id, todo["team_id"], call.user_id)
            if todo["team_id"]
            else None
        )
        if not (todo["owner_id"] == call.user_id or call.is_admin or team_role == "owner"):
            raise Denied("Only the todo's owner, an owner of its team, or an admin can delete it.")
        if not confirm:
            call.detail = "awaiting confirmation"
            return {
                "status": "needs_confirmation",
                "message": f'Ask the caller: delete the todo "{todo["title"]}"? If they say yes, '
                "call todo_delete again with confirm=true.",
            }
        await todos.delete_todo(conn, call.tenant_id, todo_id)
    return {"status": "deleted", "message": f'Deleted "{todo["title"]}".'}


@tools()
async def todo_set_due(
    todo_id: TodoId,
    due: Annotated[When | None, Field(description="The new due date-time, or null to clear it.")],
) -> dict[str, Any]:
    """Set or clear a todo's due date-time. If the caller gives only a day, use 17:00 that day.

    Returns the updated todo.
    """
    call = current_call()
    due_at = None if due is None else to_utc(due, call.tz)
    return await _change(
        todo_id, {"due_at": due_at}, "Due date cleared." if due is None else "Due date set."
    )


@tools()
async def todo_set_priority(todo_id: TodoId, priority: Priority) -> dict[str, Any]:
    """Set a todo's priority: low, normal, high or urgent. Returns the updated todo."""
    return await _change(todo_id, {"priority": priority}, f"Priority set to {priority}.")


@tools()
async def todo_assign(
    todo_id: TodoId,
    assignee_user_id: Annotated[
        UserId | None,
        Field(description="Who should do it (from user_find_by_name), or null to unassign."),
    ],
) -> dict[str, Any]:
    """Assign a todo to a colleague, or unassign it. Returns the updated todo."""
    call = current_call()
    if assignee_user_id is not None:
        async with call.db() as conn:
            await require_user(conn, call, assignee_user_id)
    return await _change(
        todo_id,
        {"assignee_id": assignee_user_id},
        "Unassigned." if assignee_user_id is None else "Assigned.",
    )


@tools(read_only=True)
async def todo_list_overdue(limit: Limit = 20) -> dict[str, Any]:
    """List the caller's open todos whose due time has passed, most overdue first.

    Returns {count, timezone, todos}.
    """
    call = current_call()
    async with call.db() as conn:
        found = await todos.list_todos(
            conn,
            call.tenant_id,
            call.user_id,
            status="open",
            due_before=datetime.now(UTC),
            limit=limit,
        )
    return listing(found, call)


@tools(read_only=True)
async def todo_list_due_today(limit: Limit = 20) -> dict[str, Any]:
    """List the caller's open todos due today, in the caller's own time zone, earliest first.

    Returns {count, timezone, todos} (overdue ones from earlier days are not included; use
    todo_list_overdue).
    """
    call = current_call()
    start = datetime.now(call.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)  # wall-clock arithmetic: the next local midnight, DST or not
    async with call.db() as conn:
        found = await todos.list_todos(
            conn,
            call.tenant_id,
            call.user_id,
            status="open",
            due_from=start,
            due_before=end,
            limit=limit,
        )
    return listing(found, call)


@tools()
async def todo_add_note(
    todo_id: TodoId,
    note: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=1000),
        Field(description="The line to add, 1-1000 characters."),
    ],
) -> dict[str, Any]:
    """Add a dated line to the end of a todo's notes (keeps what is there). Returns the todo."""
    call = current_call()
    line = f"{datetime.now(call.tz):%Y-%m-%d}: {note}"
    async with call.db() as conn:
        todo = await visible_todo(conn, call, todo_id)
        if len(todo["notes"]) + len(line) + 1 > NOTES_LIMIT:
            raise Invalid("The notes are full (4000 characters). Shorten them with todo_update.")
        await todos.append_note(conn, call.tenant_id, todo_id, line)
        todo = await visible_todo(conn, call, todo_id)
    return {"message": "Note added.", "todo": todo_out(todo, call.tz)}
