"""User tools (the caller's own profile, the company directory, their teams) and the PIN change.

A PIN never passes through the model: `user_request_pin_change` only flags the call, the call
engine then collects the old and new PIN on the keypad and calls `change_pin` directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import available_timezones

from pydantic import AfterValidator, Field, StringConstraints

from voice_app.auth.secrets import WeakPinError, check_pin_format, hash_secret, verify_secret
from voice_app.db import calls, teams, users
from voice_app.db.pool import Database
from voice_app.tools.core import Invalid, Limit, ToolSet, current_call
from voice_app.tools.teams import team_out
from voice_app.tools.todos import UserId, require_user

tools = ToolSet()


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _iana_zone(name: str) -> str:
    if name not in _zones():
        raise ValueError(
            f"{name!r} is not an IANA time zone name; use one like Europe/London, "
            "America/New_York or Asia/Tokyo"
        )
    return name


TimeZone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_iana_zone),
    Field(description="An IANA time zone name such as Europe/London or America/Chicago."),
]
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=120),
    Field(description="The name colleagues see, 1-120 characters."),
]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    Field(description="An e-mail address such as ada@example.com."),
]
Phone = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^\+[1-9][0-9]{6,14}$"),
    Field(
        description="A phone number in E.164 form: + then country code and number, e.g. "
        "+442071234567."
    ),
]


def colleague_out(user: users.User) -> dict[str, Any]:
    """What anyone in the company may see of a colleague (no phone, no account number)."""
    return {
        "id": str(user.id),
        "name": user.display_name,
        "email": user.email,
        "timezone": user.timezone,
        "role": user.role,
    }


@tools(read_only=True)
async def user_get_my_profile() -> dict[str, Any]:
    """The caller's own profile: name, account number, phone, e-mail, time zone and role."""
    return {"profile": current_call().user.public()}


@tools()
async def user_update_my_profile(
    display_name: DisplayName | None = None,
    email: Email | None = None,
    phone: Phone | None = None,
) -> dict[str, Any]:
    """Change the caller's own name, e-mail and/or phone number. Give only what changes.

    Read the new value back to the caller before calling. Returns the updated profile.
    """
    changes = {
        column: value
        for column, value in (
            ("display_name", display_name),
            ("email", email),
            ("phone_e164", phone),
        )
        if value is not None
    }
    if not changes:
        raise Invalid("Nothing to change: give display_name, email and/or phone.")
    call = current_call()
    async with call.db() as conn:
        user = await users.update_profile(conn, call.tenant_id, call.user_id, changes)
    assert user is not None  # the middleware already found this user
    return {"message": "Profile updated.", "profile": user.public()}


@tools()
async def user_set_my_timezone(timezone: TimeZone) -> dict[str, Any]:
    """Set the caller's time zone; due dates and "today" are read in it. Returns the profile."""
    call = current_call()
    async with call.db() as conn:
        user = await users.update_profile(
            conn, call.tenant_id, call.user_id, {"timezone": timezone}
        )
    assert user is not None
    return {"message": f"Time zone set to {timezone}.", "profile": user.public()}


@tools(read_only=True)
async def user_find_by_name(
    name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=120),
        Field(description="All or part of a colleague's name, e.g. Grace or Hopper."),
    ],
    limit: Annotated[int, Field(ge=1, le=20, description="How many matches at most (1-20).")] = 10,
) -> dict[str, Any]:
    """Find colleagues by (part of) their name, exact matches first. Returns {count, users}.

    Use it to get the user id other tools need; if several match, ask the caller which one.
    """
    call = current_call()
    async with call.db() as conn:
        found = await users.find_users_by_name(conn, call.tenant_id, name, limit=limit)
    return {"count": len(found), "users": [colleague_out(u) for u in found]}


@tools(read_only=True)
async def user_get(user_id: UserId) -> dict[str, Any]:
    """Get a colleague by id: name, e-mail, time zone and role."""
    call = current_call()
    async with call.db() as conn:
        user = await require_user(conn, call, user_id)
    return {"user": colleague_out(user)}


@tools(read_only=True)
async def user_list(
    limit: Limit = 50,
    offset: Annotated[int, Field(ge=0, le=10_000, description="How many to skip (paging).")] = 0,
) -> dict[str, Any]:
    """List the company's people alphabetically, a page at a time. Returns {count, users}."""
    call = current_call()
    async with call.db() as conn:
        found = await users.list_users(conn, call.tenant_id, limit=limit, offset=offset)
    return {"count": len(found), "users": [colleague_out(u) for u in found]}


@tools(read_only=True)
async def user_list_my_teams() -> dict[str, Any]:
    """List the teams the caller belongs to, with their role in each. Returns {count, teams}."""
    call = current_call()
    async with call.db() as conn:
        found = await teams.list_teams(conn, call.tenant_id, call.user_id, member_only=True)
    return {"count": len(found), "teams": [team_out(t) for t in found]}


@tools()
async def user_request_pin_change() -> dict[str, Any]:
    """Start changing the caller's PIN. Never ask for a PIN out loud and never pass one here.

    After this the call engine asks the caller to type their current PIN and then a new one
    on the keypad. Returns the line to tell the caller.
    """
    call = current_call()
    call_sid = call.identity.call_sid
    if not call_sid:
        raise Invalid("A PIN can only be changed during a phone call, on the keypad.")
    await call.services.state.set_call_state(call_sid, pin_change="requested")
    return {
        "status": "keypad_entry_requested",
        "message": "Tell the caller that next they will type their current PIN, then a new "
        "PIN of 4 to 8 digits, on the keypad.",
    }


# The keypad side (not an MCP tool).

PinChangeResult = Literal["changed", "wrong_pin", "weak_pin", "same_pin"]


@dataclass(frozen=True, slots=True)
class PinChange:
    result: PinChangeResult
    message: str  # a line the call engine can speak

    @property
    def ok(self) -> bool:
        return self.result == "changed"


async def change_pin(
    db: Database, tenant_id: UUID | str, user_id: UUID | str, old_pin: str, new_pin: str
) -> PinChange:
    """Change a PIN collected on the keypad. A wrong current PIN is recorded as a security event;
    counting it towards the account lock-out is the keypad flow's job (it knows the account)."""
    tenant, user = UUID(str(tenant_id)), UUID(str(user_id))
    async with db.tenant(tenant) as conn:
        stored = await users.get_pin_hash(conn, tenant, user)
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    if not await asyncio.to_thread(verify_secret, stored, old_pin):
        async with db.tenant(tenant) as conn:
            await calls.add_security_event(conn, tenant, "pin_change_failed", user_id=user)
        return PinChange("wrong_pin", "That is not your current PIN, so it was not changed.")
    if old_pin == new_pin:
        return PinChange("same_pin", "The new PIN must be different from the current one.")
    try:
        check_pin_format(new_pin)
    except WeakPinError as weak:
        return PinChange("weak_pin", f"That new PIN can't be used: {weak}. Choose another.")
    pin_hash = await asyncio.to_thread(hash_secret, new_pin)
    async with db.tenant(tenant) as conn:
        await users.set_pin_hash(conn, tenant, user, pin_hash)
        await calls.add_security_event(conn, tenant, "pin_changed", user_id=user)
    return PinChange("changed", "Your PIN has been changed.")
