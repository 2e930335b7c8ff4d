"""Lists (RULES §7): `first` 1..100, `offset` page jumps, opaque keyset cursors that stay stable
under inserts, and the page type every list returns."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from services.errors import BadRequest

T = TypeVar("T")
DEFAULT_FIRST = 20
MAX_FIRST = 100


@dataclass(frozen=True)
class PageRequest:
    first: int
    after: int | None
    offset: int | None

    @property
    def has_previous(self) -> bool:
        return self.after is not None or bool(self.offset)


def encode_cursor(kind: str, key: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{key}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found_kind, _, key = text.partition(":")
        if found_kind != kind:
            raise ValueError(kind)
        return int(key)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("paging.bad_cursor") from None


def page_request(kind: str, first: int | None, after: str | None, offset: int | None) -> PageRequest:
    """Validate list arguments; a bad combination is a malformed request, not a business answer."""
    first = DEFAULT_FIRST if first is None else first
    if not 1 <= first <= MAX_FIRST:
        raise BadRequest("paging.first_range")
    if offset is not None and offset < 0:
        raise BadRequest("paging.offset_negative")
    if offset is not None and after is not None:
        raise BadRequest("paging.offset_and_after")
    return PageRequest(
        first=first, after=None if after is None else decode_cursor(kind, after), offset=offset
    )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page: the items with their cursors, the whole filtered count, and where it sits."""

    items: list[tuple[str, T]]
    total_count: int
    has_next: bool
    has_previous: bool

    def map(self, convert: Callable[[T], Any]) -> Page[Any]:
        return Page(
            [(cursor, convert(item)) for cursor, item in self.items],
            self.total_count,
            self.has_next,
            self.has_previous,
        )


async def keyset_page(
    session: AsyncSession,
    statement: Select[Any],
    *,
    kind: str,
    key: InstrumentedAttribute[int],
    descending: bool,
    request: PageRequest,
    total_count: int | None = None,
    cursor_key: Callable[[Any], int] | None = None,
) -> Page[Any]:
    """A page of `statement` (filtered, unordered) ordered by the unique integer `key`.

    `total_count` may be given when it is known without counting (per-batch counters)."""
    if total_count is None:
        total_count = (
            await session.scalar(select(func.count()).select_from(statement.order_by(None).subquery())) or 0
        )
    ordered = statement.order_by(key.desc() if descending else key.asc())
    if request.after is not None:
        ordered = ordered.where(key < request.after if descending else key > request.after)
    if request.offset:
        ordered = ordered.offset(request.offset)
    rows: Sequence[Any] = (await session.execute(ordered.limit(request.first + 1))).scalars().all()
    key_of = cursor_key or (lambda row: getattr(row, key.key))
    items = [(encode_cursor(kind, key_of(row)), row) for row in rows[: request.first]]
    return Page(items, total_count, has_next=len(rows) > request.first, has_previous=request.has_previous)
