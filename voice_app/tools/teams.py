"""Team tools. Anyone in the tenant may see teams; only a team's owners (or a tenant admin)
rename or delete it and manage its members. A team always keeps at least one owner.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from pydantic import Field, StringConstraints

from voice_app.db import teams, todos
from voice_app.tools.core import (
    Confirm,
    Denied,
    Invalid,
    Limit,
    NotFound,
    ToolCall,
    ToolSet,
    current_call,
    local_iso,
)
from voice_app.tools.todos import TeamId, UserId, listing, require_team_member, require_user

tools = ToolSet()

TeamName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=80),
    Field(description="The team's name, 1-80 characters."),
]
Role = Annotated[
    Literal["member", "owner"],
    Field(description="owner: may rename/delete the team and manage members; member: may not."),
]


def team_out(team: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(team["id"]),
        "name": team["name"],
        "member_count": team["member_count"],
        "my_role": team["my_role"],  # null when the caller is not a member
    }


def members_out(members: list[dict[str, Any]], call: ToolCall) -> list[dict[str, Any]]:
    return [
        {
            "user_id": str(m["user_id"]),
            "name": m["display_name"],
            "role": m["role"],
            "added": local_iso(m["added_at"], call.tz),
        }
        for m in members
    ]


async def existing_team(conn: asyncpg.Connection, call: ToolCall, team_id: UUID) -> dict[str, Any]:
    team = await teams.get_team(conn, call.tenant_id, call.user_id, team_id)
    if team is None:
        raise NotFound("No team with that id. Use team_list to find it.")
    return team


async def managed_team(conn: asyncpg.Connection, call: ToolCall, team_id: UUID) -> dict[str, Any]:
    team = await existing_team(conn, call, team_id)
    if team["my_role"] != "owner" and not call.is_admin:
        raise Denied(f'Only an owner of "{team["name"]}" or an admin can do that.')
    return team


async def member_of(
    conn: asyncpg.Connection, call: ToolCall, team: dict[str, Any], user_id: UUID
) -> str:
    role = await teams.member_role(conn, call.tenant_id, team["id"], user_id)
    if role is None:
        raise NotFound(f'That user is not a member of "{team["name"]}".')
    return role


async def keep_an_owner(conn: asyncpg.Connection, call: ToolCall, team: dict[str, Any]) -> None:
    if await teams.count_owners(conn, call.tenant_id, team["id"]) <= 1:
        raise Invalid(
            f'That is the only owner of "{team["name"]}". Make someone else an owner first, '
            "or delete the team."
        )


@tools()
async def team_create(name: TeamName) -> dict[str, Any]:
    """Create a team; the caller becomes its owner. Returns the new team with its id."""
    call = current_call()
    async with call.db() as conn:
        team = await teams.create_team(conn, call.tenant_id, name, call.user_id)
    if team is None:
        raise Invalid(
            f'A team called "{name}" already exists. Pick another name, or use '
            "team_list to find that team."
        )
    return {"message": "Team created.", "team": team_out(team)}


@tools(read_only=True)
async def team_list(
    name_contains: Annotated[
        TeamName | None, Field(description="Only teams whose name contains this text.")
    ] = None,
    mine_only: Annotated[bool, Field(description="Only teams the caller is in.")] = False,
    limit: Limit = 50,
) -> dict[str, Any]:
    """List the company's teams by name, with member counts and the caller's role in each.

    Use it to turn a spoken team name into a team id. Returns {count, teams}.
    """
    call = current_call()
    async with call.db() as conn:
        found = await teams.list_teams(
            conn,
            call.tenant_id,
            call.user_id,
            name_contains=name_contains,
            member_only=mine_only,
            limit=limit,
        )
    return {"count": len(found), "teams": [team_out(t) for t in found]}


@tools(read_only=True)
async def team_get(team_id: TeamId) -> dict[str, Any]:
    """Get one team with its members and their roles. Returns {team, members}."""
    call = current_call()
    async with call.db() as conn:
        team = await existing_team(conn, call, team_id)
        members = await teams.list_members(conn, call.tenant_id, team_id)
    return {"team": team_out(team), "members": members_out(members, call)}


@tools()
async def team_rename(team_id: TeamId, name: TeamName) -> dict[str, Any]:
    """Rename a team (team owners and admins only). Returns the renamed team."""
    call = current_call()
    async with call.db() as conn:
        await managed_team(conn, call, team_id)
        renamed = await teams.rename_team(conn, call.tenant_id, team_id, name)
        if renamed is None:
            raise Invalid(f'Another team is already called "{name}". Pick another name.')
        team = await existing_team(conn, call, team_id)
    return {"message": "Team renamed.", "team": team_out(team)}


@tools(destructive=True)
async def team_delete(team_id: TeamId, confirm: Confirm = False) -> dict[str, Any]:
    """Delete a team (team owners and admins only). Its todos stay, without a team.

    First call without confirm to get the question for the caller; call again with
    confirm=true only after they said yes.
    """
    call = current_call()
    async with call.db() as conn:
        team = await managed_team(conn, call, team_id)
        if not confirm:
            call.detail = "awaiting confirmation"
            return {
                "status": "needs_confirmation",
                "message": f'Ask the caller: delete the team "{team["name"]}" with its '
                f"{team['member_count']} member(s)? Its todos are kept. If they say yes, call "
                "team_delete again with confirm=true.",
            }
        await teams.delete_team(conn, call.tenant_id, team_id)
    return {"status": "deleted", "message": f'Deleted the team "{team["name"]}".'}


@tools()
async def team_add_member(
    team_id: TeamId, user_id: UserId, role: Role = "member"
) -> dict[str, Any]:
    """Add a colleague to a team (team owners and admins only). Returns the members."""
    call = current_call()
    async with call.db() as conn:
        team = await managed_team(conn, call, team_id)
        user = await require_user(conn, call, user_id)
        added = await teams.add_member(conn, call.tenant_id, team_id, user_id, role)
        members = await teams.list_members(conn, call.tenant_id, team_id)
    message = (
        f'Added {user.display_name} to "{team["name"]}" as {role}.'
        if added
        else f'{user.display_name} was already in "{team["name"]}"; use team_set_member_role '
        "to change their role."
    )
    return {"message": message, "members": members_out(members, call)}


@tools(destructive=True)
async def team_remove_member(
    team_id: TeamId, user_id: UserId, confirm: Confirm = False
) -> dict[str, Any]:
    """Remove someone from a team (team owners and admins; anyone may remove themselves).

    First call without confirm to get the question for the caller; call again with
    confirm=true only after they said yes. Returns the remaining members.
    """
    call = current_call()
    async with call.db() as conn:
        team = await (
            existing_team(conn, call, team_id)
            if user_id == call.user_id
            else managed_team(conn, call, team_id)
        )
        user = await require_user(conn, call, user_id)
        if await member_of(conn, call, team, user_id) == "owner":
            await keep_an_owner(conn, call, team)
        if not confirm:
            call.detail = "awaiting confirmation"
            return {
                "status": "needs_confirmation",
                "message": f'Ask the caller: remove {user.display_name} from "{team["name"]}"? '
                "If they say yes, call team_remove_member again with confirm=true.",
            }
        await teams.remove_member(conn, call.tenant_id, team_id, user_id)
        members = await teams.list_members(conn, call.tenant_id, team_id)
    return {
        "status": "removed",
        "message": f'Removed {user.display_name} from "{team["name"]}".',
        "members": members_out(members, call),
    }


@tools(read_only=True)
async def team_list_members(team_id: TeamId) -> dict[str, Any]:
    """List a team's members with their roles, owners first. Returns {team, members}."""
    call = current_call()
    async with call.db() as conn:
        team = await existing_team(conn, call, team_id)
        members = await teams.list_members(conn, call.tenant_id, team_id)
    return {"team": team["name"], "members": members_out(members, call)}


@tools()
async def team_set_member_role(team_id: TeamId, user_id: UserId, role: Role) -> dict[str, Any]:
    """Make a team member an owner or a plain member (team owners and admins only).

    Returns the members.
    """
    call = current_call()
    async with call.db() as conn:
        team = await managed_team(conn, call, team_id)
        user = await require_user(conn, call, user_id)
        current = await member_of(conn, call, team, user_id)
        if current == "owner" and role == "member":
            await keep_an_owner(conn, call, team)
        await teams.set_member_role(conn, call.tenant_id, team_id, user_id, role)
        members = await teams.list_members(conn, call.tenant_id, team_id)
    return {
        "message": f"{user.display_name} is now {'an owner' if role == 'owner' else 'a member'}.",
        "members": members_out(members, call),
    }


@tools(read_only=True)
async def team_list_todos(
    team_id: TeamId,
    status: Literal["open", "done", "all"] = "open",
    limit: Limit = 20,
) -> dict[str, Any]:
    """List a team's todos, soonest due first (the caller must be in the team).

    Returns {count, timezone, todos}.
    """
    call = current_call()
    async with call.db() as conn:
        await require_team_member(conn, call, team_id)
        found = await todos.list_todos(
            conn,
            call.tenant_id,
            call.user_id,
            team_id=team_id,
            status=None if status == "all" else status,
            limit=limit,
        )
    return listing(found, call)
