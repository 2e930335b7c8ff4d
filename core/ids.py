"""Ids as the API sends them: text that must name a row, or nothing."""

from __future__ import annotations

# a BIGINT holds 18 digits safely: a longer text is no id, and never reaches the database as an overflow
MAX_ID_DIGITS = 18


def parse_id(text: str | None) -> int | None:
    """An id as the API sends it ("12") as an int; None for anything else, which then matches no row."""
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > MAX_ID_DIGITS:
        return None
    return int(text)
