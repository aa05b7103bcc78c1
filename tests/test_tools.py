"""The MCP tools through a real in-process MCP client session, against the real PostgreSQL and
Redis and the Google Calendar stand-in.

The matrix runs every tool, as a caller in each of two tenants, four ways: success, arguments
out of range, something that does not exist, and something that exists only in the other tenant
(which must look exactly like "does not exist", or simply not show up). Each call's audit row is
checked too. Focused tests follow for permissions, confirmation, identity binding, budgets,
calendar tokens, OAuth linking and the keypad PIN change.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from mcp import Client
from quart import Quart

from voice_app.agent.graph import tool_definitions
from voice_app.agent.toolbox import SessionToolbox
from voice_app.auth.secrets import hash_secret, verify_secret
from voice_app.db import calendar as calendar_db
from voice_app.db import users
from voice_app.services import Services
from voice_app.tools import calendar_oauth
from voice_app.tools.calendar import NOT_LINKED, RELINK, busy_periods, free_slots
from voice_app.tools.core import ToolServices
from voice_app.tools.server import CRASHED, NOT_SIGNED_IN, TOO_SLOW, build_server
from voice_app.tools.session import open_tools_client, open_tools_session
from voice_app.tools.users import change_pin

pytest.register_assert_rewrite("tests.tools_fixtures")
from tests.tools_fixtures import (  # noqa: E402
    Tenant,
    ToolWorld,
    audit_rows,
    call_tool,
    text_of,
    unique,
)

pytest_plugins = ["tests.tools_fixtures"]

# The matrix -------------------------------------------------------------------------------


@dataclass
class Act:
    """Arguments, and who calls (default: the tenant's caller)."""

    args: dict[str, Any]
    user: users.User | None = None


Make = Callable[[Tenant], Awaitable[dict[str, Any] | Act]]
MakeForeign = Callable[[Tenant, Tenant, str], Awaitable[dict[str, Any] | Act]]
Check = Callable[[dict[str, Any], Tenant], Awaitable[None]]


@dataclass
class Case:
    tool: str
    ok: Make
    invalid: dict[str, Any]
    missing: Make | None = None  # None: the tool names nothing that could be missing
    foreign: MakeForeign | None = None  # None: call `ok` and check the marker stays absent
    foreign_finds: Literal["not_found", "absent"] = "not_found"
    check: Check | None = None

    def __str__(self) -> str:
        return self.tool


def _id(value: Any) -> str:
    return str(value)


def _nobody() -> str:
    return str(uuid.uuid4())


def _expect(**fields: Any) -> Check:
    """Check values at dotted paths of the structured result."""

    async def check(data: dict[str, Any], t: Tenant) -> None:
        for path, expected in fields.items():
            value: Any = data
            for part in path.split("__"):
                value = value[part]
            assert value == expected, (path, value, expected)

    return check


def _monday_far_ahead() -> date:
    start = date(2040, 1, 2)  # a Monday
    return start + timedelta(weeks=random.randrange(1, 2000))


async def _todo_args(t: Tenant, **extra: Any) -> dict[str, Any]:
    return {"todo_id": _id(await t.todo()), **extra}


async def _team_args(t: Tenant, **extra: Any) -> dict[str, Any]:
    return {"team_id": _id(await t.team()), **extra}


def _local_iso(moment: datetime, t: Tenant) -> str:
    return moment.astimezone(ZoneInfo(t.caller.timezone)).isoformat(timespec="minutes")


async def _listed_team_todo(t: Tenant) -> dict[str, Any]:
    team = await t.team()
    await t.todo(team=team, title="team todo")
    return {"team_id": _id(team), "status": "open"}


async def _calendar_window(t: Tenant) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=30)
    t.event(start=start, title="window event")
    return {
        "start": _local_iso(start - timedelta(minutes=5), t),
        "end": _local_iso(start + timedelta(hours=3), t),
    }


async def _free_day(t: Tenant) -> dict[str, Any]:
    day = _monday_far_ahead()
    tz = ZoneInfo(t.caller.timezone)
    t.event(start=datetime.combine(day, time(10), tzinfo=tz), minutes=60, title="busy")
    return {
        "start": datetime.combine(day, time(0)).isoformat(),
        "end": datetime.combine(day, time(23)).isoformat(),
        "duration_minutes": 45,
    }


async def _check_free_day(data: dict[str, Any], t: Tenant) -> None:
    slots = [(s["start"][11:16], s["end"][11:16]) for s in data["slots"]]
    assert slots == [("09:00", "10:00"), ("11:00", "17:00")]


async def _check_todo_gone(data: dict[str, Any], t: Tenant) -> None:
    assert data["status"] == "deleted"


async def _check_count_one(data: dict[str, Any], t: Tenant) -> None:
    assert data["count"] == 1, data


async def _check_transfer(data: dict[str, Any], t: Tenant) -> None:
    assert data["status"] == "transferring" and data["say"]


def _unlinked(args: dict[str, Any]) -> Make:
    async def make(t: Tenant) -> Act:
        return Act(args, user=t.admin)  # the admin never linked a calendar

    return make


async def _old_overdue(t: Tenant) -> dict[str, Any]:
    due = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=random.randrange(10**6))
    todo = await t.todo(title="very overdue", due=due)
    return {"limit": 50, "_expect_id": _id(todo)}


async def _due_today(t: Tenant) -> dict[str, Any]:
    tz = ZoneInfo(t.caller.timezone)
    noon = datetime.combine(datetime.now(tz).date(), time(12), tzinfo=tz)
    todo = await t.todo(title="due today", due=noon)
    return {"limit": 50, "_expect_id": _id(todo)}


CASES: list[Case] = [
    # Todos
    Case(
        "todo_create",
        ok=lambda t: _team_args(t, title="Buy milk", priority="high", due="2030-01-02T17:00"),
        invalid={"title": "", "priority": "super"},
        missing=lambda t: _async({"title": "x", "team_id": _nobody()}),
        foreign=lambda t, o, m: _team_args(o, title="x"),
        check=_expect(todo__title="Buy milk", todo__priority="high"),
    ),
    Case(
        "todo_get",
        ok=lambda t: _todo_args(t),
        invalid={"todo_id": "not-a-uuid"},
        missing=lambda t: _async({"todo_id": _nobody()}),
        foreign=lambda t, o, m: _todo_args(o),
    ),
    Case(
        "todo_list",
        ok=_listed_team_todo,
        invalid={"status": "pending", "limit": 0},
        foreign_finds="absent",
        check=_check_count_one,
    ),
    Case(
        "todo_search",
        ok=lambda t: _search_own(t),
        invalid={"text": "a"},
        foreign=lambda t, o, m: _async({"text": m}),
        foreign_finds="absent",
        check=_check_count_one,
    ),
    Case(
        "todo_update",
        ok=lambda t: _todo_args(t, title="New title", notes="n"),
        invalid={"todo_id": _nobody(), "title": "x" * 201},
        missing=lambda t: _async({"todo_id": _nobody(), "title": "x"}),
        foreign=lambda t, o, m: _todo_args(o, title="x"),
        check=_expect(todo__title="New title", todo__notes="n"),
    ),
    Case(
        "todo_complete",
        ok=lambda t: _todo_args(t),
        invalid={"todo_id": "123"},
        missing=lambda t: _async({"todo_id": _nobody()}),
        foreign=lambda t, o, m: _todo_args(o),
        check=_expect(todo__status="done"),
    ),
    Case(
        "todo_reopen",
        ok=lambda t: _done_todo(t),
        invalid={"todo_id": ""},
        missing=lambda t: _async({"todo_id": _nobody()}),
        foreign=lambda t, o, m: _done_todo(o),
        check=_expect(todo__status="open"),
    ),
    Case(
        "todo_delete",
        ok=lambda t: _todo_args(t, confirm=True),
        invalid={"todo_id": _nobody(), "confirm": "maybe"},
        missing=lambda t: _async({"todo_id": _nobody(), "confirm": True}),
        foreign=lambda t, o, m: _todo_args(o, confirm=True),
        check=_check_todo_gone,
    ),
    Case(
        "todo_set_due",
        ok=lambda t: _todo_args(t, due="2031-03-04T09:30"),
        invalid={"todo_id": _nobody(), "due": "next tuesday"},
        missing=lambda t: _async({"todo_id": _nobody(), "due": None}),
        foreign=lambda t, o, m: _todo_args(o, due=None),
    ),
    Case(
        "todo_set_priority",
        ok=lambda t: _todo_args(t, priority="urgent"),
        invalid={"todo_id": _nobody(), "priority": "p1"},
        missing=lambda t: _async({"todo_id": _nobody(), "priority": "low"}),
        foreign=lambda t, o, m: _todo_args(o, priority="low"),
        check=_expect(todo__priority="urgent"),
    ),
    Case(
        "todo_assign",
        ok=lambda t: _todo_args(t, assignee_user_id=_id(t.admin.id)),
        invalid={"todo_id": _nobody(), "assignee_user_id": "bob"},
        missing=lambda t: _async({"todo_id": _nobody(), "assignee_user_id": None}),
        foreign=lambda t, o, m: _todo_args(t, assignee_user_id=_id(o.caller.id)),
    ),
    Case("todo_list_overdue", ok=_old_overdue, invalid={"limit": 500}, foreign_finds="absent"),
    Case("todo_list_due_today", ok=_due_today, invalid={"limit": -1}, foreign_finds="absent"),
    Case(
        "todo_add_note",
        ok=lambda t: _todo_args(t, note="Called them"),
        invalid={"todo_id": _nobody(), "note": ""},
        missing=lambda t: _async({"todo_id": _nobody(), "note": "x"}),
        foreign=lambda t, o, m: _todo_args(o, note="x"),
    ),
    # Teams
    Case(
        "team_create",
        ok=lambda t: _async({"name": unique("Crew")}),
        invalid={"name": "x" * 81},
        foreign_finds="absent",
        check=_expect(team__my_role="owner", team__member_count=1),
    ),
    Case(
        "team_list",
        ok=lambda t: _named_team(t),
        invalid={"limit": 51},
        foreign=lambda t, o, m: _async({"name_contains": m}),
        foreign_finds="absent",
        check=_check_count_one,
    ),
    Case(
        "team_get",
        ok=lambda t: _team_args(t),
        invalid={"team_id": "abc"},
        missing=lambda t: _async({"team_id": _nobody()}),
        foreign=lambda t, o, m: _team_args(o),
        check=_expect(team__my_role="owner"),
    ),
    Case(
        "team_rename",
        ok=lambda t: _team_args(t, name="Renamed " + unique()),
        invalid={"team_id": _nobody(), "name": ""},
        missing=lambda t: _async({"team_id": _nobody(), "name": "x"}),
        foreign=lambda t, o, m: _team_args(o, name="x"),
    ),
    Case(
        "team_delete",
        ok=lambda t: _team_args(t, confirm=True),
        invalid={"team_id": _nobody(), "confirm": "yes please"},
        missing=lambda t: _async({"team_id": _nobody(), "confirm": True}),
        foreign=lambda t, o, m: _team_args(o, confirm=True),
        check=_expect(status="deleted"),
    ),
    Case(
        "team_add_member",
        ok=lambda t: _team_args(t, user_id=_id(t.admin.id)),
        invalid={"team_id": _nobody(), "user_id": _nobody(), "role": "boss"},
        missing=lambda t: _team_args(t, user_id=_nobody()),
        foreign=lambda t, o, m: _team_args(t, user_id=_id(o.caller.id)),
    ),
    Case(
        "team_remove_member",
        ok=lambda t: _team_with_admin(t, confirm=True),
        invalid={"team_id": _nobody(), "user_id": _nobody(), "confirm": []},
        missing=lambda t: _async(
            {"team_id": _nobody(), "user_id": _id(t.admin.id), "confirm": True}
        ),
        foreign=lambda t, o, m: _team_args(t, user_id=_id(o.caller.id), confirm=True),
        check=_expect(status="removed"),
    ),
    Case(
        "team_list_members",
        ok=lambda t: _team_args(t),
        invalid={"team_id": 7},
        missing=lambda t: _async({"team_id": _nobody()}),
        foreign=lambda t, o, m: _team_args(o),
    ),
    Case(
        "team_set_member_role",
        ok=lambda t: _team_with_admin(t, role="owner"),
        invalid={"team_id": _nobody(), "user_id": _nobody(), "role": "chief"},
        missing=lambda t: _team_args(t, user_id=_nobody(), role="owner"),
        foreign=lambda t, o, m: _team_args(t, user_id=_id(o.caller.id), role="owner"),
    ),
    Case(
        "team_list_todos",
        ok=_listed_team_todo,
        invalid={"team_id": _nobody(), "status": "x"},
        missing=lambda t: _async({"team_id": _nobody()}),
        foreign=lambda t, o, m: _team_args(o),
        check=_check_count_one,
    ),
    # Users
    Case(
        "user_get_my_profile",
        ok=lambda t: _async({}),
        invalid={"user_id": _nobody()},
        foreign_finds="absent",
    ),
    Case(
        "user_update_my_profile",
        ok=lambda t: _async({"display_name": unique("Caller"), "phone": "+442071234567"}),
        invalid={"email": "not-an-email"},
        foreign_finds="absent",
        check=_expect(profile__phone="+442071234567"),
    ),
    Case(
        "user_set_my_timezone",
        ok=lambda t: _async({"timezone": t.caller.timezone}),
        invalid={"timezone": "Mars/Olympus_Mons"},
        foreign_finds="absent",
    ),
    Case(
        "user_find_by_name",
        ok=lambda t: _async({"name": t.admin.display_name}),
        invalid={"name": ""},
        foreign=lambda t, o, m: _async({"name": m}),
        foreign_finds="absent",
        check=_check_count_one,
    ),
    Case(
        "user_get",
        ok=lambda t: _async({"user_id": _id(t.admin.id)}),
        invalid={"user_id": "x"},
        missing=lambda t: _async({"user_id": _nobody()}),
        foreign=lambda t, o, m: _async({"user_id": _id(o.admin.id)}),
    ),
    Case(
        "user_list",
        ok=lambda t: _async({"limit": 50}),
        invalid={"offset": -1},
        foreign_finds="absent",
    ),
    Case(
        "user_list_my_teams",
        ok=lambda t: _aaa_team(t),
        invalid={"tenant_id": _nobody()},
        foreign_finds="absent",
    ),
    Case(
        "user_request_pin_change",
        ok=lambda t: _async({}),
        invalid={"pin": "1234"},
        foreign_finds="absent",
        check=_expect(status="keypad_entry_requested"),
    ),
    # Calendar
    Case(
        "calendar_list_events",
        ok=_calendar_window,
        invalid={"limit": 0, "start": "soon"},
        missing=_unlinked({}),
        foreign_finds="absent",
    ),
    Case(
        "calendar_create_event",
        ok=lambda t: _async(
            {"title": "Dentist", "start": "2035-05-05T10:00", "duration_minutes": 30}
        ),
        invalid={"title": "x", "start": "2035-01-01T10:00", "duration_minutes": 2},
        missing=_unlinked({"title": "x", "start": "2035-01-01T10:00"}),
        foreign_finds="absent",
        check=_expect(event__title="Dentist"),
    ),
    Case(
        "calendar_update_event",
        ok=lambda t: _async({"event_id": t.event(), "title": "Moved"}),
        invalid={"event_id": "bad id!", "title": "x"},
        missing=lambda t: _async({"event_id": "nosuchevent123", "title": "x"}),
        foreign=lambda t, o, m: _async({"event_id": o.event(), "title": "x"}),
        check=_expect(event__title="Moved"),
    ),
    Case(
        "calendar_delete_event",
        ok=lambda t: _async({"event_id": t.event(), "confirm": True}),
        invalid={"event_id": "", "confirm": True},
        missing=lambda t: _async({"event_id": "nosuchevent123", "confirm": True}),
        foreign=lambda t, o, m: _async({"event_id": o.event(), "confirm": True}),
        check=_expect(status="deleted"),
    ),
    Case(
        "calendar_find_free_slots",
        ok=_free_day,
        invalid={"duration_minutes": 1000},
        missing=_unlinked({}),
        foreign_finds="absent",
        check=_check_free_day,
    ),
    # Transfer
    Case(
        "transfer_to_agent",
        ok=lambda t: _async({"reason": "wants to talk to a person"}),
        invalid={"reason": "x"},
        foreign_finds="absent",
        check=_check_transfer,
    ),
    Case(
        "check_agent_availability",
        ok=lambda t: _async({}),
        invalid={"department": "sales"},
        foreign_finds="absent",
        check=_expect(available=True),
    ),
]


async def _async(value: dict[str, Any]) -> dict[str, Any]:
    return value


async def _search_own(t: Tenant) -> dict[str, Any]:
    word = unique("zebra")
    await t.todo(title=f"feed the {word}")
    return {"text": word}


async def _done_todo(t: Tenant) -> dict[str, Any]:
    return {"todo_id": _id(await t.todo(status="done"))}


async def _named_team(t: Tenant) -> dict[str, Any]:
    name = unique("Squad")
    await t.team(name=name)
    return {"name_contains": name}


async def _aaa_team(t: Tenant) -> dict[str, Any]:
    await t.team(name=unique("AAA"))  # sorts first, so it is on the first page
    return {}


async def _team_with_admin(t: Tenant, **extra: Any) -> dict[str, Any]:
    team = await t.team(members=(t.admin,))
    return {"team_id": _id(team), "user_id": _id(t.admin.id), **extra}


async def _resolve(made: dict[str, Any] | Act, t: Tenant) -> tuple[dict[str, Any], users.User]:
    act = made if isinstance(made, Act) else Act(made)
    return act.args, act.user or t.caller


async def _call(
    world: ToolWorld, t: Tenant, user: users.User, tool: str, args: dict[str, Any]
) -> tuple[Any, list[dict[str, Any]]]:
    context = t.context(user)
    result = await call_tool(world.server, context, tool, args)
    await world.services.settled()  # the audit row is written alongside the answer
    return result, await audit_rows(t.owner, context.call_sid)


async def _plant_markers(o: Tenant) -> str:
    """Things in the other tenant that must never show up: a todo, a team, a person, an event."""
    marker = unique("secret")
    await o.todo(title=marker, due=datetime.now(UTC) - timedelta(minutes=1))
    await o.team(name=marker)
    await o.user(name=marker)
    o.event(title=marker, start=datetime.now(UTC) + timedelta(hours=1))
    return marker


TENANTS = ["a", "b"]


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_tool_succeeds(case: Case, tenant: str, tool_world: ToolWorld) -> None:
    t = tool_world.tenant(tenant)
    args, user = await _resolve(await case.ok(t), t)
    expect_id = args.pop("_expect_id", None)
    result, audit = await _call(tool_world, t, user, case.tool, args)
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert json.loads(text_of(result)) == data  # the model reads the same thing as JSON text
    if expect_id is not None:
        assert expect_id in [todo["id"] for todo in data["todos"]]
    elif case.check is not None:
        await case.check(data, t)
    assert [(r["tool"], r["outcome"], r["tenant_id"], r["user_id"]) for r in audit] == [
        (case.tool, "ok", t.id, user.id)
    ]


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_tool_rejects_arguments_out_of_range(
    case: Case, tenant: str, tool_world: ToolWorld
) -> None:
    t = tool_world.tenant(tenant)
    result, audit = await _call(tool_world, t, t.caller, case.tool, dict(case.invalid))
    assert result.is_error
    text = text_of(result)
    assert text.startswith(("Invalid arguments for " + case.tool, "Unknown argument(s) for"))
    assert "pydantic" not in text and "[type=" not in text  # what to fix, without SDK noise
    assert any(name in text for name in case.invalid)  # names the argument to fix
    assert [r["outcome"] for r in audit] == ["invalid"]


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_tool_reports_what_is_missing(case: Case, tenant: str, tool_world: ToolWorld) -> None:
    if case.missing is None:
        pytest.skip(f"{case.tool} names nothing that could be missing")
    t = tool_world.tenant(tenant)
    args, user = await _resolve(await case.missing(t), t)
    result, audit = await _call(tool_world, t, user, case.tool, args)
    assert result.is_error
    assert "Error executing" not in text_of(result)
    assert [r["outcome"] for r in audit] == ["not_found"]


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("case", CASES, ids=str)
async def test_tool_finds_nothing_in_the_other_tenant(
    case: Case, tenant: str, tool_world: ToolWorld
) -> None:
    t, o = tool_world.tenant(tenant), tool_world.other(tenant)
    marker = await _plant_markers(o)
    made = await case.foreign(t, o, marker) if case.foreign else await case.ok(t)
    args, user = await _resolve(made, t)
    args.pop("_expect_id", None)
    result, audit = await _call(tool_world, t, user, case.tool, args)
    if case.foreign_finds == "not_found":
        assert result.is_error, text_of(result)
        assert [r["outcome"] for r in audit] == ["not_found"]
    else:
        assert not result.is_error, text_of(result)
        assert marker not in text_of(result)
        assert str(o.id) not in text_of(result)


# Tool definitions -------------------------------------------------------------------------


async def test_tool_definitions_are_complete_and_matrix_covers_them(tool_world: ToolWorld) -> None:
    async with open_tools_session(tool_world.server, tool_world.a.context()) as session:
        specs = {spec.name: spec for spec in session.specs}
    assert len(specs) >= 38
    assert set(specs) == {case.tool for case in CASES}
    for spec in specs.values():
        assert len(spec.description) > 40, spec.name
        assert spec.input_schema["type"] == "object"
        assert not {"tenant_id", "user_id_of_caller", "pin", "account_number"} & set(
            spec.input_schema.get("properties", {})
        ), spec.name
    for name in ("todo_delete", "team_delete", "team_remove_member", "calendar_delete_event"):
        assert specs[name].input_schema["properties"]["confirm"]["default"] is False


async def test_every_call_shares_one_set_of_model_tool_definitions(
    tool_world: ToolWorld,
) -> None:
    """Two callers of different tenants: the same spec objects, so one set of definitions per
    process rather than ~20 KB of schema dicts per live call."""
    async with (
        open_tools_session(tool_world.server, tool_world.a.context()) as first,
        open_tools_session(tool_world.server, tool_world.b.context()) as second,
    ):
        specs_a = await SessionToolbox(first).list_tools()
        specs_b = await SessionToolbox(second).list_tools()
    assert [s.name for s in specs_a] == [s.name for s in specs_b]
    definitions = tool_definitions(specs_a)
    assert tool_definitions(specs_b) is definitions
    assert [d["name"] for d in definitions] == [s.name for s in specs_a] + ["end_call"]
    assert definitions[-1]["cache_control"] == {"type": "ephemeral"}
    assert all("cache_control" not in d for d in definitions[:-1])


async def test_tool_session_returns_text_and_error_flag(tool_world: ToolWorld) -> None:
    async with open_tools_session(tool_world.server, tool_world.a.context()) as session:
        text, is_error = await session.call("user_get_my_profile", {})
        assert not is_error and str(tool_world.a.caller.id) in text
        text, is_error = await session.call("todo_get", {"todo_id": _nobody()})
        assert is_error and text.startswith("No todo with that id")
        text, is_error = await session.call("no_such_tool", {})
        assert is_error and "no_such_tool" in text


# Confirmation and permissions ---------------------------------------------------------------


async def test_destructive_tools_ask_before_acting(tool_world: ToolWorld) -> None:
    t = tool_world.a
    todo = await t.todo(title="precious")
    team = await t.team(members=(t.admin,))
    event = t.event(title="keep me")
    for tool, args in (
        ("todo_delete", {"todo_id": _id(todo)}),
        ("team_delete", {"team_id": _id(team)}),
        ("team_remove_member", {"team_id": _id(team), "user_id": _id(t.admin.id)}),
        ("calendar_delete_event", {"event_id": event}),
    ):
        result, audit = await _call(tool_world, t, t.caller, tool, args)
        assert not result.is_error
        data = result.structured_content
        assert data["status"] == "needs_confirmation" and "confirm=true" in data["message"]
        assert audit[0]["detail"] == "awaiting confirmation"
    assert await t.owner.fetchval("SELECT count(*) FROM todos WHERE id = $1", todo) == 1
    assert await t.owner.fetchval("SELECT count(*) FROM team_members WHERE team_id = $1", team) == 2
    assert event in [e["id"] for e in tool_world.google.events(t.google_user(t.caller))]


async def test_todo_visibility_follows_ownership_assignment_and_teams(
    tool_world: ToolWorld,
) -> None:
    t = tool_world.a
    colleague = await t.user()
    private = await t.todo(owner=colleague, title="colleague's own")
    assigned = await t.todo(owner=colleague, assignee=t.caller.id)
    team = await t.team(owner=colleague, members=(t.caller,))
    shared = await t.todo(owner=colleague, team=team)
    for todo_id, visible in ((private, False), (assigned, True), (shared, True)):
        result, _ = await _call(tool_world, t, t.caller, "todo_get", {"todo_id": _id(todo_id)})
        assert result.is_error is not visible


async def test_only_owner_team_owner_or_admin_may_delete_a_todo(tool_world: ToolWorld) -> None:
    t = tool_world.a
    colleague = await t.user()
    team = await t.team(owner=colleague, members=(t.caller, t.admin))
    for deleter, allowed in ((t.caller, False), (t.admin, True), (colleague, True)):
        todo = await t.todo(owner=colleague, team=team, assignee=t.caller.id)
        args = {"todo_id": _id(todo), "confirm": True}
        result, audit = await _call(tool_world, t, deleter, "todo_delete", args)
        assert result.is_error is not allowed, text_of(result)
        assert audit[0]["outcome"] == ("ok" if allowed else "denied")
    # The team's owner may delete a member's todo in the team.
    todo = await t.todo(owner=t.caller, team=team)
    result, _ = await _call(
        tool_world, t, colleague, "todo_delete", {"todo_id": _id(todo), "confirm": True}
    )
    assert not result.is_error


async def test_team_management_needs_a_team_owner_or_an_admin(tool_world: ToolWorld) -> None:
    t = tool_world.a
    colleague = await t.user()
    team = await t.team(owner=colleague, members=(t.caller,))
    args = {"team_id": _id(team), "name": unique("Taken over")}
    result, audit = await _call(tool_world, t, t.caller, "team_rename", args)
    assert result.is_error and audit[0]["outcome"] == "denied"
    result, _ = await _call(tool_world, t, t.admin, "team_rename", args)
    assert not result.is_error
    # Anyone may leave a team.
    leave = {"team_id": _id(team), "user_id": _id(t.caller.id), "confirm": True}
    result, _ = await _call(tool_world, t, t.caller, "team_remove_member", leave)
    assert not result.is_error, text_of(result)


async def test_a_team_keeps_at_least_one_owner(tool_world: ToolWorld) -> None:
    t = tool_world.a
    team = await t.team(members=(t.admin,))
    only_owner = {"team_id": _id(team), "user_id": _id(t.caller.id)}
    result, audit = await _call(
        tool_world, t, t.caller, "team_set_member_role", {**only_owner, "role": "member"}
    )
    assert result.is_error and "only owner" in text_of(result)
    assert audit[0]["outcome"] == "invalid"
    result, _ = await _call(
        tool_world, t, t.caller, "team_remove_member", {**only_owner, "confirm": True}
    )
    assert result.is_error and "only owner" in text_of(result)


async def test_team_names_are_unique_per_tenant_only(tool_world: ToolWorld) -> None:
    name = unique("Shared name")
    await tool_world.b.team(name=name)
    result, _ = await _call(
        tool_world, tool_world.a, tool_world.a.caller, "team_create", {"name": name}
    )
    assert not result.is_error
    result, audit = await _call(
        tool_world, tool_world.a, tool_world.a.caller, "team_create", {"name": name.upper()}
    )
    assert result.is_error and "already exists" in text_of(result)
    assert audit[0]["outcome"] == "invalid"


async def test_times_are_read_and_shown_in_the_callers_zone(tool_world: ToolWorld) -> None:
    t = tool_world.b  # America/New_York
    result, _ = await _call(
        tool_world, t, t.caller, "todo_create", {"title": "zone check", "due": "2030-07-01T17:00"}
    )
    data = result.structured_content
    assert data["todo"]["due"] == "2030-07-01T17:00-04:00"
    stored = await t.owner.fetchval(
        "SELECT due_at FROM todos WHERE id = $1", uuid.UUID(data["todo"]["id"])
    )
    assert stored == datetime(2030, 7, 1, 21, 0, tzinfo=UTC)


# Identity ---------------------------------------------------------------------------------


async def test_concurrent_sessions_never_see_each_others_identity(tool_world: ToolWorld) -> None:
    async def profile_ids(t: Tenant) -> set[str]:
        seen = set()
        async with open_tools_client(tool_world.server, t.context()) as client:
            for _ in range(5):
                result = await client.call_tool("user_get_my_profile", {})
                seen.add(result.structured_content["profile"]["id"])
                await asyncio.sleep(0)  # interleave with the other session
        return seen

    a, b = await asyncio.gather(profile_ids(tool_world.a), profile_ids(tool_world.b))
    assert a == {str(tool_world.a.caller.id)} and b == {str(tool_world.b.caller.id)}


async def test_identity_is_fixed_when_the_session_connects(tool_world: ToolWorld) -> None:
    from voice_app.tools.core import Identity, binding_identity

    async with open_tools_client(tool_world.server, tool_world.a.context()) as client:
        intruder = Identity(tool_world.b.id, tool_world.b.caller.id)
        with binding_identity(intruder):  # a later binding in the same task changes nothing
            result = await client.call_tool("user_get_my_profile", {})
    assert result.structured_content["profile"]["id"] == str(tool_world.a.caller.id)


async def test_legacy_handshake_clients_are_bound_too(tool_world: ToolWorld) -> None:
    from voice_app.tools.core import Identity, binding_identity

    with binding_identity(Identity(tool_world.b.id, tool_world.b.caller.id)):
        client = Client(tool_world.server, mode="legacy")
        await client.__aenter__()
    try:
        result = await client.call_tool("user_get_my_profile", {})
        assert result.structured_content["profile"]["id"] == str(tool_world.b.caller.id)
    finally:
        await client.__aexit__(None, None, None)


async def test_a_connection_without_identity_runs_nothing(tool_world: ToolWorld) -> None:
    async with Client(tool_world.server) as client:
        result = await client.call_tool("user_get_my_profile", {})
    assert result.is_error and text_of(result) == NOT_SIGNED_IN


async def test_identity_arguments_are_refused(tool_world: ToolWorld) -> None:
    t, o = tool_world.a, tool_world.b
    result, audit = await _call(
        tool_world, t, t.caller, "todo_list", {"tenant_id": str(o.id), "user_id": str(o.caller.id)}
    )
    assert result.is_error and "Unknown argument(s) for todo_list: tenant_id, user_id" in text_of(
        result
    )
    assert audit[0]["outcome"] == "invalid"


async def test_a_deleted_user_is_denied(tool_world: ToolWorld) -> None:
    t = tool_world.a
    ghost = await t.user()
    await t.owner.execute("DELETE FROM users WHERE id = $1", ghost.id)
    result, audit = await _call(tool_world, t, ghost, "user_get_my_profile", {})
    assert result.is_error and audit[0]["outcome"] == "denied"


# Audit, budgets and failures ----------------------------------------------------------------


async def test_audit_masks_secret_looking_arguments(tool_world: ToolWorld) -> None:
    t = tool_world.a
    result, audit = await _call(
        tool_world, t, t.caller, "user_request_pin_change", {"pin": "4826", "new_pin": "1357"}
    )
    assert result.is_error
    assert audit[0]["arguments"] == {"pin": "***", "new_pin": "***"}
    assert "4826" not in json.dumps(audit, default=str)


async def test_audit_records_duration_and_call(tool_world: ToolWorld) -> None:
    t = tool_world.a
    context = t.context()
    await call_tool(tool_world.server, context, "todo_list", {"limit": 5})
    await tool_world.services.settled()
    (row,) = await audit_rows(t.owner, context.call_sid)
    assert row["arguments"] == {"limit": 5} and row["duration_ms"] >= 0


class SlowAvailability:
    async def is_available(self) -> bool | None:
        await asyncio.sleep(5)
        return True


class BrokenAvailability:
    async def is_available(self) -> bool | None:
        raise RuntimeError("pbx password=hunter2 rejected")


@pytest.mark.parametrize(
    ("availability", "expected", "timeout"),
    [
        (SlowAvailability(), TOO_SLOW, 0.2),
        (BrokenAvailability(), CRASHED, 8.0),
    ],
)
async def test_slow_or_broken_tools_answer_briefly_and_honestly(
    tool_world: ToolWorld, availability: Any, expected: str, timeout: float
) -> None:
    base = tool_world.services
    services = ToolServices(base.settings, base.db, base.state, base.http, availability)
    server = build_server(lambda: services, tool_timeout=timeout)
    t = tool_world.a
    context = t.context()
    result = await call_tool(server, context, "check_agent_availability", {})
    assert result.is_error and text_of(result) == expected
    assert "hunter2" not in text_of(result)
    await services.settled()
    (row,) = await audit_rows(t.owner, context.call_sid)
    assert row["outcome"] == "error"


@pytest.mark.parametrize(("answer", "said"), [(False, "busy"), (None, "can't tell")])
async def test_availability_answers(tool_world: ToolWorld, answer: bool | None, said: str) -> None:
    tool_world.availability.answer = answer
    try:
        result, _ = await _call(
            tool_world, tool_world.a, tool_world.a.caller, "check_agent_availability", {}
        )
    finally:
        tool_world.availability.answer = True
    assert result.structured_content["available"] is answer
    assert said in result.structured_content["say"]


# Transfer and PIN ---------------------------------------------------------------------------


async def test_transfer_is_claimed_once_per_call(tool_world: ToolWorld) -> None:
    t = tool_world.a
    context = t.context()
    first = await call_tool(
        tool_world.server, context, "transfer_to_agent", {"reason": "billing question"}
    )
    second = await call_tool(
        tool_world.server, context, "transfer_to_agent", {"reason": "asked again"}
    )
    assert first.structured_content["status"] == "transferring"
    assert second.structured_content["status"] == "already_transferring"
    state = await tool_world.services.state.get_call_state(context.call_sid)
    assert state["transfer_requested"] == "billing question"


async def test_transfer_and_pin_change_need_a_call(tool_world: ToolWorld) -> None:
    t = tool_world.a
    for tool, args in (
        ("transfer_to_agent", {"reason": "help me"}),
        ("user_request_pin_change", {}),
    ):
        result = await call_tool(tool_world.server, t.context(call_sid=""), tool, args)
        assert result.is_error and "call" in text_of(result)


async def test_pin_change_is_requested_for_the_keypad(tool_world: ToolWorld) -> None:
    context = tool_world.a.context()
    result = await call_tool(tool_world.server, context, "user_request_pin_change", {})
    assert "keypad" in result.structured_content["message"]
    state = await tool_world.services.state.get_call_state(context.call_sid)
    assert state["pin_change"] == "requested"


async def test_change_pin_from_the_keypad(tool_world: ToolWorld) -> None:
    t = tool_world.a
    user = await t.user(pin_hash=hash_secret("4826"))
    db = tool_world.services.db
    assert (await change_pin(db, t.id, user.id, "1111", "7391")).result == "wrong_pin"
    assert (await change_pin(db, t.id, user.id, "4826", "4826")).result == "same_pin"
    assert (await change_pin(db, t.id, user.id, "4826", "1234")).result == "weak_pin"
    changed = await change_pin(db, t.id, user.id, "4826", "7391")
    assert changed.ok and changed.message
    stored = await t.owner.fetchval("SELECT pin_hash FROM users WHERE id = $1", user.id)
    assert verify_secret(stored, "7391") and not verify_secret(stored, "4826")
    kinds = [
        r["kind"]
        for r in await t.owner.fetch(
            "SELECT kind FROM security_events WHERE user_id = $1 ORDER BY id", user.id
        )
    ]
    assert kinds == ["pin_change_failed", "pin_changed"]
    # Another tenant's id for the same user changes nothing.
    other = await change_pin(db, tool_world.b.id, user.id, "7391", "2580")
    assert other.result == "wrong_pin"


# Calendar ---------------------------------------------------------------------------------


async def test_unlinked_calendar_answers_how_to_link(tool_world: ToolWorld) -> None:
    t = tool_world.a
    result, _ = await _call(tool_world, t, t.admin, "calendar_list_events", {})
    assert text_of(result) == NOT_LINKED


async def test_expired_access_token_is_refreshed_and_saved(tool_world: ToolWorld) -> None:
    t = tool_world.a
    user = await t.user()
    await t.link_calendar(user)
    before = await t.owner.fetchval(
        "SELECT token_ciphertext FROM calendar_accounts WHERE user_id = $1", user.id
    )
    tool_world.google.expire_tokens()
    result, _ = await _call(tool_world, t, user, "calendar_list_events", {})
    assert not result.is_error, text_of(result)
    after = await t.owner.fetchval(
        "SELECT token_ciphertext FROM calendar_accounts WHERE user_id = $1", user.id
    )
    assert after != before
    # Refreshed once; the next call uses the saved token without refreshing again.
    refreshes = len([r for r in tool_world.google.requests if r.path == "/token"])
    result, _ = await _call(tool_world, t, user, "calendar_list_events", {})
    assert not result.is_error
    assert len([r for r in tool_world.google.requests if r.path == "/token"]) == refreshes


async def test_revoked_link_asks_to_link_again(tool_world: ToolWorld) -> None:
    t = tool_world.b
    user = await t.user()
    await t.link_calendar(user)
    tool_world.google.expire_tokens()
    saved = dict(tool_world.google.refresh_tokens)
    tool_world.google.revoke_refresh_tokens()
    try:
        result, audit = await _call(tool_world, t, user, "calendar_list_events", {})
    finally:
        tool_world.google.refresh_tokens.update(saved)
    assert text_of(result) == RELINK and audit[0]["outcome"] == "denied"


async def test_google_errors_become_a_short_retry_line(tool_world: ToolWorld) -> None:
    t = tool_world.a
    tool_world.google.fail_next(503)
    result, audit = await _call(tool_world, t, t.caller, "calendar_list_events", {})
    assert result.is_error and "try again" in text_of(result)
    assert audit[0]["outcome"] == "error"


async def test_calendar_tokens_are_encrypted_at_rest(tool_world: ToolWorld) -> None:
    t = tool_world.a
    account = await calendar_db.get_account(t.owner, t.id, t.caller.id)
    assert account is not None
    raw = bytes(account.token_ciphertext)
    assert b"ya29." not in raw and b"refresh" not in raw


def test_free_slots_respect_busy_times_hours_and_weekends() -> None:
    tz = ZoneInfo("Europe/London")
    friday = datetime(2030, 6, 7, tzinfo=tz)

    def at(day: datetime, hour: int, minute: int = 0) -> datetime:
        return day.replace(hour=hour, minute=minute)

    events = [
        {
            "start": {"dateTime": at(friday, 9, 30).isoformat()},
            "end": {"dateTime": at(friday, 10).isoformat()},
        },
        {
            "start": {"dateTime": at(friday, 9, 45).isoformat()},  # overlaps the first
            "end": {"dateTime": at(friday, 11).isoformat()},
        },
        {
            "start": {"dateTime": at(friday, 13).isoformat()},
            "end": {"dateTime": at(friday, 14).isoformat()},
            "transparency": "transparent",
        },
        {"start": {"date": "2030-06-07"}, "end": {"date": "2030-06-07"}},  # zero-length all-day
    ]
    busy = busy_periods(events, tz)
    assert (at(friday, 9, 30), at(friday, 11)) in busy
    slots = free_slots(
        busy, at(friday, 8, 58), at(friday, 0) + timedelta(days=3, hours=12), minutes=30, tz=tz
    )
    monday = friday + timedelta(days=3)
    assert slots == [
        (at(friday, 9), at(friday, 9, 30)),  # 8:58 rounds up to 9:00: exactly 30 minutes
        (at(friday, 11), at(friday, 17)),  # the "free" (transparent) 13:00 event does not count
        (at(monday, 9), at(monday, 12)),  # the weekend is skipped; the window ends at noon
    ]
    with_weekend = free_slots(
        [],
        at(friday, 18),
        at(friday, 0) + timedelta(days=3),
        minutes=60,
        tz=tz,
        weekends=True,
        day_start=10,
        day_end=12,
    )
    assert [s[0].day for s in with_weekend] == [8, 9]


# OAuth linking ----------------------------------------------------------------------------


async def test_google_oauth_links_a_calendar(tool_world: ToolWorld, tool_settings: Any) -> None:
    t = tool_world.a
    user = await t.user()
    app = Quart(__name__)
    app.register_blueprint(calendar_oauth.blueprint)
    app.extensions["services"] = Services(
        tool_settings,
        tool_world.services.db,
        tool_world.services.state,
        extras={"tool_services": tool_world.services},
    )
    state = tool_world.services.state
    browser = await state.create_session(
        kind="browser", tenant_id=str(t.id), subject_id=str(user.id), ttl_seconds=600
    )
    stranger = await state.create_session(
        kind="browser", tenant_id=str(t.id), subject_id=str(t.admin.id), ttl_seconds=600
    )
    client = app.test_client()

    assert (await client.get("/oauth/google/start")).status_code == 401
    client.set_cookie("localhost", "va_session", browser.token)
    start = await client.get("/oauth/google/start")
    assert start.status_code == 302
    consent = start.headers["Location"]
    assert consent.startswith(tool_world.google.url + "/o/oauth2/v2/auth?")
    assert "calendar.events" in parse_qs(urlsplit(consent).query)["scope"][0]

    async with httpx.AsyncClient() as http:  # the browser at Google: consent is granted
        back = (await http.get(consent)).headers["Location"]
    callback = urlsplit(back)
    assert callback.path == "/oauth/google/callback"

    other = app.test_client()
    other.set_cookie("localhost", "va_session", stranger.token)
    refused = await other.get(f"/oauth/google/callback?{callback.query}")
    assert refused.status_code == 400  # someone else's state

    done = await client.get(f"/oauth/google/callback?{callback.query}")
    assert done.status_code == 302 and done.headers["Location"] == "/?calendar=linked"
    account = await calendar_db.get_account(t.owner, t.id, user.id)
    assert account is not None and account.scopes
    result, _ = await _call(
        tool_world,
        t,
        user,
        "calendar_create_event",
        {"title": "Linked!", "start": "2036-01-01T10:00"},
    )
    assert not result.is_error, text_of(result)

    denied = await client.get(
        f"/oauth/google/callback?error=access_denied&state={parse_qs(callback.query)['state'][0]}"
    )
    assert denied.headers["Location"] == "/?calendar=denied"


def test_oauth_state_is_signed_and_expires() -> None:
    state = calendar_oauth.sign_state("k", "tenant", "user", now=1000)
    assert calendar_oauth.read_state("k", state, now=1100) == ("tenant", "user")
    assert calendar_oauth.read_state("other key", state, now=1100) is None
    assert calendar_oauth.read_state("k", state, now=1000 + 601) is None
    assert calendar_oauth.read_state("k", state[:-2] + "xx", now=1100) is None
    assert calendar_oauth.read_state("k", "!!!", now=1100) is None
