"""The usage log (F6, 提货卡使用记录) and a member's redeemed cards (F7): the redemption rows, filtered
and paged, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Select, or_, select

from core.ids import parse_id
from models import ProductType, Redemption
from services import codes
from services.days import day_after_start, day_start
from services.paging import Page, PageRequest, keyset_page, page_request
from services.runtime import Caller, Runtime


@dataclass(frozen=True)
class RedemptionFilter:
    batch_id: str | None = None
    member_id: str | None = None
    product_type: ProductType | None = None
    from_day: date | None = None
    to_day: date | None = None
    keyword: str | None = None


def _keyword_condition(keyword: str) -> Any:
    typed = keyword.strip()
    symbols = codes.symbols_of(typed)
    conditions = [Redemption.card_name.contains(typed, autoescape=True)]
    if symbols is not None and 1 <= len(symbols) <= 4:
        conditions.append(Redemption.card_last4.endswith(symbols, autoescape=True))
    return or_(*conditions)


def _log_statement(rt: Runtime, filter: RedemptionFilter) -> Select[Any] | None:
    """The filtered log, or None when a filter names nothing that can exist (an empty list)."""
    statement = select(Redemption)
    for text_id, column in ((filter.batch_id, Redemption.batch_id), (filter.member_id, Redemption.member_id)):
        if text_id is not None:
            parsed = parse_id(text_id)
            if parsed is None:
                return None
            statement = statement.where(column == parsed)
    if filter.product_type is not None:
        statement = statement.where(Redemption.product_type == ProductType(filter.product_type))
    if filter.from_day is not None:
        start = day_start(rt.settings.zone, filter.from_day)
        if start is not None:
            statement = statement.where(Redemption.redeemed_at >= start)
    # `to` 9999-12-31 (date.max) has no next day: it bounds nothing
    if filter.to_day is not None:
        end = day_after_start(rt.settings.zone, filter.to_day)
        if end is not None:
            statement = statement.where(Redemption.redeemed_at < end)
    if filter.keyword and filter.keyword.strip():
        statement = statement.where(_keyword_condition(filter.keyword))
    return statement


async def _log_page(rt: Runtime, statement: Select[Any] | None, request: PageRequest) -> Page[Redemption]:
    if statement is None:
        return Page([], 0, has_next=False, has_previous=request.has_previous)
    async with rt.db.read() as session:
        return await keyset_page(
            session, statement, kind="Redemption", key=Redemption.id, descending=True, request=request
        )


async def list_redemptions(
    rt: Runtime,
    caller: Caller,
    filter: RedemptionFilter,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[Redemption]:
    """`redemptions`: every redemption, newest first (admin)."""
    caller.require_admin()
    request = page_request("Redemption", first, after, offset)
    return await _log_page(rt, _log_statement(rt, filter), request)


async def my_redemptions(
    rt: Runtime,
    caller: Caller,
    keyword: str | None,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[Redemption]:
    """`myRedemptions`: the member's own, newest first; keyword on the card's last 4 symbols or name."""
    viewer = caller.require_member()
    request = page_request("Redemption", first, after, offset)
    statement = _log_statement(rt, RedemptionFilter(keyword=keyword))
    assert statement is not None
    return await _log_page(rt, statement.where(Redemption.member_id == viewer.id), request)
