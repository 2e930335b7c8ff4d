"""When a card may be redeemed (RULES §3, RULES-v2 §5): from the start of its batch's first day, if it
has one, until the end of its validity day, both in the business time zone. One rule each, for Python
dates and for SQL columns alike (the claim asks them in SQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, or_


def still_valid(valid_until: Any, today: Any) -> Any:
    """True (or the SQL condition) while `today` is not past `valid_until`."""
    return valid_until >= today


def already_valid(valid_from: Any, today: Any) -> Any:
    """True (or the SQL condition) once `today` has reached `valid_from`; always, when it is null."""
    if isinstance(valid_from, ColumnElement):
        return or_(valid_from.is_(None), valid_from <= today)
    return valid_from is None or valid_from <= today
