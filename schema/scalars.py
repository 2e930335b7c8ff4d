"""The contract's scalars: Date (a business-zone day), DateTime (ISO 8601 with offset), Decimal (money)."""

from __future__ import annotations

import datetime as dt
import decimal

import strawberry

TWO_PLACES = decimal.Decimal("0.01")


class InvalidScalarValue(ValueError):
    """An input that is not a Date, DateTime or Decimal: the client's mistake, answered as a validation
    error. (graphql-core keeps it as `original_error` of an inline literal's error; a plain ValueError
    there would look like a bug and be masked.)"""


def _parse_date(value: object) -> dt.date:
    if not isinstance(value, str):
        raise InvalidScalarValue("Date must be a string like 2026-12-31")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidScalarValue("Date must be a day like 2026-12-31") from None


def _serialize_datetime(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def _parse_datetime(value: object) -> dt.datetime:
    if not isinstance(value, str):
        raise InvalidScalarValue("DateTime must be an ISO 8601 string with an offset")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidScalarValue("DateTime must be an ISO 8601 string with an offset") from None
    if parsed.tzinfo is None:
        raise InvalidScalarValue("DateTime needs an offset, e.g. 2026-11-26T06:33:08+00:00")
    return parsed


def _serialize_money(value: decimal.Decimal) -> str:
    return str(decimal.Decimal(value).quantize(TWO_PLACES, rounding=decimal.ROUND_HALF_UP))


def _parse_money(value: object) -> decimal.Decimal:
    if not isinstance(value, str):
        raise InvalidScalarValue("Decimal must be a string like 83.66")
    try:
        parsed = decimal.Decimal(value)
    except decimal.InvalidOperation as exc:
        raise InvalidScalarValue("Decimal must be a string like 83.66") from exc
    if not parsed.is_finite() or parsed.as_tuple().exponent < -2:  # type: ignore[operator]
        raise InvalidScalarValue("Decimal must be finite with at most 2 decimals")
    return parsed


Date = strawberry.scalar(
    name="Date",
    description='A calendar day in the business time zone, e.g. "2026-12-31".',
    serialize=dt.date.isoformat,
    parse_value=_parse_date,
)
DateTime = strawberry.scalar(
    name="DateTime",
    description='An instant in ISO 8601 with its offset (sent in UTC), e.g. "2026-11-26T06:33:08+00:00".',
    serialize=_serialize_datetime,
    parse_value=_parse_datetime,
)
Money = strawberry.scalar(
    name="Decimal",
    description='Money in yuan (CNY) as a string with exactly 2 decimals, e.g. "83.66".',
    serialize=_serialize_money,
    parse_value=_parse_money,
)

SCALAR_MAP = {dt.date: Date, dt.datetime: DateTime, decimal.Decimal: Money}
