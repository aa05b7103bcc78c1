"""Calendar tools over the caller's linked Google Calendar. Times go in and come out in the
caller's time zone; a caller without a linked calendar hears how to link one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import sentry_sdk
from pydantic import Field, StringConstraints

from voice_app.db import calendar as calendar_db
from voice_app.tools.core import (
    Confirm,
    Denied,
    Invalid,
    Limit,
    NotFound,
    ToolCall,
    ToolFailure,
    ToolSet,
    When,
    current_call,
    local_iso,
    to_utc,
)
from voice_app.tools.google import (
    CalendarAuthError,
    CalendarUnavailable,
    GoogleCalendar,
    GoogleTokens,
    rfc3339,
    token_cipher,
)

tools = ToolSet()

NOT_LINKED = "You haven't linked a calendar yet. You can link one from the web page."
RELINK = "Your calendar link has expired. Please link your calendar again from the web page."
UNREACHABLE = "I couldn't reach your calendar just now. Please try again in a moment."
NO_EVENT = "No event with that id in your calendar. Use calendar_list_events to find it."

EventId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9_.@-]{1,1024}$"),
    Field(description="The event's id, as returned by calendar_list_events."),
]
EventTitle = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    Field(description="What the event is, 1-200 characters."),
]
Location = Annotated[str, Field(max_length=200, description="Where, up to 200 characters.")]
Description = Annotated[str, Field(max_length=2000, description="Details, up to 2000 characters.")]


@asynccontextmanager
async def linked_calendar(call: ToolCall) -> AsyncIterator[GoogleCalendar]:
    """The caller's calendar, with Google's failures turned into lines the model can say."""
    async with call.db() as conn:
        account = await calendar_db.get_account(conn, call.tenant_id, call.user_id)
    if account is None:
        raise NotFound(NOT_LINKED)
    cipher = token_cipher(call.services.settings)

    async def save(tokens: GoogleTokens) -> None:
        async with call.db() as conn:
            await calendar_db.update_tokens(
                conn, call.tenant_id, call.user_id, tokens.encrypt(cipher)
            )

    try:
        tokens = GoogleTokens.decrypt(cipher, account.token_ciphertext)
        yield GoogleCalendar(
            call.services.http, call.services.settings, account.calendar_id, tokens, save
        )
    except CalendarAuthError:
        raise Denied(RELINK) from None
    except CalendarUnavailable as error:
        sentry_sdk.capture_exception(error)  # a provider outage must show (once per call)
        raise ToolFailure(UNREACHABLE) from None


# Reading Google's events.


def event_time(part: dict[str, Any], tz: ZoneInfo) -> datetime:
    """An event boundary as an aware datetime; an all-day date starts at local midnight."""
    if "dateTime" in part:
        return datetime.fromisoformat(part["dateTime"])
    return datetime.combine(date.fromisoformat(part["date"]), time(0), tzinfo=tz)


def event_out(event: dict[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    all_day = "dateTime" not in event.get("start", {})

    def when(part: dict[str, Any]) -> str | None:
        return part.get("date") if all_day else local_iso(event_time(part, tz), tz)

    return {
        "id": event.get("id"),
        "title": event.get("summary", ""),
        "start": when(event.get("start", {})),
        "end": when(event.get("end", {})),
        "all_day": all_day,
        "location": event.get("location", ""),
        "description": (event.get("description") or "")[:300],
    }


def busy_periods(events: list[dict[str, Any]], tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """Merged, sorted busy intervals; events marked "free" (transparent) do not count."""
    spans = sorted(
        (event_time(e["start"], tz), event_time(e["end"], tz))
        for e in events
        if e.get("transparency") != "transparent" and "start" in e and "end" in e
    )
    merged: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def free_slots(
    busy: list[tuple[datetime, datetime]],
    start: datetime,
    end: datetime,
    *,
    minutes: int,
    tz: ZoneInfo,
    day_start: int = 9,
    day_end: int = 17,
    weekends: bool = False,
    limit: int = 10,
) -> list[tuple[datetime, datetime]]:
    """Free stretches of at least `minutes` inside working hours between start and end."""
    need = timedelta(minutes=minutes)
    slots: list[tuple[datetime, datetime]] = []
    day = start.astimezone(tz).date()
    while day <= end.astimezone(tz).date() and len(slots) < limit:
        if weekends or day.weekday() < 5:
            opens = datetime.combine(day, time(day_start), tzinfo=tz)
            closes = datetime.combine(day, time(0), tzinfo=tz) + timedelta(hours=day_end)
            cursor, stop = _round_up(max(start, opens)), min(end, closes)
            for busy_from, busy_to in busy:
                if busy_to <= cursor:
                    continue
                if busy_from >= stop:
                    break
                if busy_from - cursor >= need:
                    slots.append((cursor, busy_from))
                cursor = max(cursor, busy_to)
            if stop - cursor >= need:
                slots.append((cursor, stop))
        day += timedelta(days=1)
    return slots[:limit]


def _round_up(moment: datetime, step: int = 5) -> datetime:
    """To the next whole `step` minutes, so "now" becomes a time one can say."""
    floored = moment.replace(second=0, microsecond=0)
    floored -= timedelta(minutes=floored.minute % step)
    return floored if floored == moment else floored + timedelta(minutes=step)


def window(
    call: ToolCall,
    start: datetime | None,
    end: datetime | None,
    *,
    default: timedelta,
    longest: timedelta,
    from_now: bool = False,
) -> tuple[datetime, datetime]:
    """The asked-for [start, end) in UTC, defaulting to today (or now) plus `default`."""
    if start is None:
        now = datetime.now(call.tz)
        start = now if from_now else now.replace(hour=0, minute=0, second=0, microsecond=0)
    begin = to_utc(start, call.tz)
    finish = to_utc(end, call.tz) if end is not None else begin + default
    if finish <= begin:
        raise Invalid("end must be later than start.")
    if finish - begin > longest:
        raise Invalid(f"Ask for at most {longest.days} days at a time.")
    return begin, finish


def timed(moment: datetime, tz: ZoneInfo) -> dict[str, str]:
    return {"dateTime": rfc3339(moment.astimezone(tz)), "timeZone": str(tz)}


# The tools.


@tools(read_only=True)
async def calendar_list_events(
    start: When | None = None, end: When | None = None, limit: Limit = 20
) -> dict[str, Any]:
    """List events in the caller's linked calendar between start and end (default: today).

    Returns {count, timezone, events}; each event has id, title, start, end, all_day,
    location. At most 62 days at a time.
    """
    call = current_call()
    begin, finish = window(call, start, end, default=timedelta(days=1), longest=timedelta(days=62))
    async with linked_calendar(call) as calendar:
        events = await calendar.list_events(begin, finish, limit=limit)
    return {
        "count": len(events),
        "timezone": str(call.tz),
        "events": [event_out(e, call.tz) for e in events],
    }


@tools()
async def calendar_create_event(
    title: EventTitle,
    start: When,
    end: When | None = None,
    duration_minutes: Annotated[
        int | None, Field(ge=5, le=1440, description="Length in minutes (5-1440) if no end.")
    ] = None,
    location: Location = "",
    description: Description = "",
) -> dict[str, Any]:
    """Add an event to the caller's linked calendar. Give end or duration_minutes (default 60).

    Read the day and time back to the caller first. Returns the created event with its id.
    """
    call = current_call()
    if end is not None and duration_minutes is not None:
        raise Invalid("Give either end or duration_minutes, not both.")
    begin = to_utc(start, call.tz)
    finish = to_utc(end, call.tz) if end else begin + timedelta(minutes=duration_minutes or 60)
    if finish <= begin:
        raise Invalid("end must be later than start.")
    body: dict[str, Any] = {
        "summary": title,
        "start": timed(begin, call.tz),
        "end": timed(finish, call.tz),
    }
    if location:
        body["location"] = location
    if description:
        body["description"] = description
    async with linked_calendar(call) as calendar:
        event = await calendar.insert_event(body)
    return {"message": "Event created.", "event": event_out(event, call.tz)}


@tools()
async def calendar_update_event(
    event_id: EventId,
    title: EventTitle | None = None,
    start: When | None = None,
    end: When | None = None,
    location: Location | None = None,
    description: Description | None = None,
) -> dict[str, Any]:
    """Change an event in the caller's calendar. Give only what changes; moving the start
    without an end keeps the event's length. Returns the updated event."""
    call = current_call()
    if all(v is None for v in (title, start, end, location, description)):
        raise Invalid("Nothing to change: give title, start, end, location and/or description.")
    async with linked_calendar(call) as calendar:
        event = await calendar.get_event(event_id)
        if event is None:
            raise NotFound(NO_EVENT)
        patch: dict[str, Any] = {
            k: v
            for k, v in (("summary", title), ("location", location), ("description", description))
            if v is not None
        }
        if start is not None or end is not None:
            old_start = event_time(event["start"], call.tz)
            old_end = event_time(event["end"], call.tz)
            begin = to_utc(start, call.tz) if start else old_start.astimezone(UTC)
            finish = to_utc(end, call.tz) if end else begin + (old_end - old_start)
            if finish <= begin:
                raise Invalid("end must be later than start.")
            patch |= {"start": timed(begin, call.tz), "end": timed(finish, call.tz)}
        updated = await calendar.patch_event(event_id, patch)
        if updated is None:
            raise NotFound(NO_EVENT)
    return {"message": "Event updated.", "event": event_out(updated, call.tz)}


@tools(destructive=True)
async def calendar_delete_event(event_id: EventId, confirm: Confirm = False) -> dict[str, Any]:
    """Delete an event from the caller's calendar.

    First call without confirm to get the question for the caller; call again with
    confirm=true only after they said yes.
    """
    call = current_call()
    async with linked_calendar(call) as calendar:
        event = await calendar.get_event(event_id)
        if event is None:
            raise NotFound(NO_EVENT)
        shown = event_out(event, call.tz)
        if not confirm:
            call.detail = "awaiting confirmation"
            return {
                "status": "needs_confirmation",
                "message": f'Ask the caller: delete "{shown["title"]}" on {shown["start"]}? If '
                "they say yes, call calendar_delete_event again with confirm=true.",
            }
        if not await calendar.delete_event(event_id):
            raise NotFound(NO_EVENT)
    return {"status": "deleted", "message": f'Deleted "{shown["title"]}".'}


@tools(read_only=True)
async def calendar_find_free_slots(
    start: When | None = None,
    end: When | None = None,
    duration_minutes: Annotated[int, Field(ge=5, le=480, description="Minutes needed.")] = 30,
    day_start_hour: Annotated[int, Field(ge=0, le=23, description="Working day starts.")] = 9,
    day_end_hour: Annotated[int, Field(ge=1, le=24, description="Working day ends.")] = 17,
    include_weekends: bool = False,
    limit: Annotated[int, Field(ge=1, le=20, description="How many slots at most (1-20).")] = 10,
) -> dict[str, Any]:
    """Find free stretches in the caller's calendar long enough for duration_minutes, inside
    working hours (default 9-17, weekdays), between start (default now) and end (default a
    week later; at most 31 days). Returns {count, timezone, slots} with start, end, minutes."""
    call = current_call()
    if day_end_hour <= day_start_hour:
        raise Invalid("day_end_hour must be later than day_start_hour.")
    begin, finish = window(
        call, start, end, default=timedelta(days=7), longest=timedelta(days=31), from_now=True
    )
    async with linked_calendar(call) as calendar:
        events = await calendar.list_events(begin, finish, limit=250)
    slots = free_slots(
        busy_periods(events, call.tz),
        begin,
        finish,
        minutes=duration_minutes,
        tz=call.tz,
        day_start=day_start_hour,
        day_end=day_end_hour,
        weekends=include_weekends,
        limit=limit,
    )
    return {
        "count": len(slots),
        "timezone": str(call.tz),
        "slots": [
            {
                "start": local_iso(a, call.tz),
                "end": local_iso(b, call.tz),
                "minutes": int((b - a).total_seconds() // 60),
            }
            for a, b in slots
        ],
    }
