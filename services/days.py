"""Days of the business time zone (RULES §7): where one starts as an instant, and the ranges of days
the figures are asked for."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.errors import BadRequest

MAX_DAYS = 366


def day_start(zone: ZoneInfo, day: date) -> datetime | None:
    """Midnight of `day` in `zone`, as an instant; None when that instant lies outside what a
    datetime can hold (the calendar's first or last day), so it bounds nothing."""
    try:
        return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
    except OverflowError:
        return None


def day_after_start(zone: ZoneInfo, day: date) -> datetime | None:
    """Midnight after `day` (the end of a range that includes it); None for the calendar's last day."""
    if day >= date.max:
        return None
    return day_start(zone, day + timedelta(days=1))


def checked_span(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included: at most MAX_DAYS, `first` not after `last`;
    anything else is a malformed request (a top-level INVALID_INPUT)."""
    if first > last or (last - first).days >= MAX_DAYS:
        raise BadRequest("days.range", max=MAX_DAYS)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
