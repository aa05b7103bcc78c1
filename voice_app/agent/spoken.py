"""Words for the ear: dates, times and lists the way a person would say them. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_ORDINAL_SUFFIX = {1: "st", 2: "nd", 3: "rd"}


def zone(name: str) -> ZoneInfo:
    """The caller's timezone; a bad name falls back to UTC rather than failing the call."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else _ORDINAL_SUFFIX.get(n % 10, "th")
    return f"{n}{suffix}"


def spoken_date(day: date, today: date | None = None) -> str:
    """'today', 'tomorrow', or 'Tuesday, March 3rd' (the year only when it is not this year)."""
    if today is not None:
        delta = (day - today).days
        if delta == 0:
            return "today"
        if delta == 1:
            return "tomorrow"
        if delta == -1:
            return "yesterday"
    text = f"{day:%A}, {day:%B} {ordinal(day.day)}"
    if today is not None and day.year != today.year:
        text += f", {day.year}"
    return text


def spoken_time(moment: datetime) -> str:
    """'9 AM', '2:30 PM', 'noon', 'midnight'."""
    if moment.minute == 0 and moment.hour in (0, 12):
        return "midnight" if moment.hour == 0 else "noon"
    hour = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return f"{hour} {half}" if moment.minute == 0 else f"{hour}:{moment.minute:02d} {half}"


def spoken_datetime(moment: datetime) -> str:
    return f"{spoken_date(moment.date())}, {moment.year}, at {spoken_time(moment)}"


def spoken_list(items: Sequence[str]) -> str:
    """'milk', 'milk and eggs', 'milk, eggs, and bread'."""
    items = [i for i in items if i]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


_SMALL = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def number_word(n: int) -> str:
    """'no', 'one' ... 'ten', then digits (the voice reads those well)."""
    return _SMALL[n] if 0 <= n < len(_SMALL) else str(n)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'one todo', 'three todos', 'no todos'."""
    return f"{number_word(n)} {noun if n == 1 else plural or noun + 's'}"
