"""When a card may be redeemed (RULES §3): until the end of its batch's validity day in the business
time zone. One rule, for Python dates and for SQL columns alike (the claim asks it in SQL)."""

from __future__ import annotations

from typing import Any


def still_valid(valid_until: Any, today: Any) -> Any:
    """True (or the SQL condition) while `today` is not past `valid_until`."""
    return valid_until >= today
