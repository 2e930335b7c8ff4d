"""Figures for the dashboard (RULES-v2 §5): a batch's and the whole programme's, exact and cheap:
from the batches' counters, or one indexed query on the per-day counts (batch_redemption_days of a
batch, programme_redemption_days of all), never a count of cards."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import case, func, select

from models import BatchRedemptionDay, BatchStatus, CardBatch, ProgrammeRedemptionDay
from services.days import checked_span
from services.runtime import Caller, Runtime
from services.validity import still_valid

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class BatchFigures:
    unused_count: int
    expired_count: int
    redeemed_value: Decimal
    outstanding_value: Decimal


def of_batch(today: date, batch: CardBatch) -> BatchFigures:
    """From the counters: a batch's UNUSED cards are unused until its last day, expired after it."""
    unused = batch.quantity - batch.used_count - batch.disabled_count
    live = still_valid(batch.valid_until, today)
    unused_count = unused if live else 0
    return BatchFigures(
        unused_count=unused_count,
        expired_count=0 if live else unused,
        redeemed_value=batch.used_count * batch.reference_price,
        outstanding_value=unused_count * batch.reference_price,
    )


@dataclass(frozen=True)
class DailyCount:
    day: date
    count: int


async def redemptions_by_day(
    rt: Runtime, caller: Caller, batch_id: int | None, first: date, last: date
) -> list[DailyCount]:
    """Live redemptions per day of the business time zone, every day of the range (at most 366),
    of one batch (its day rows) or of all (the programme's day rows, 16 a day at most)."""
    caller.require_admin()
    days = checked_span(first, last)
    if batch_id is not None:
        statement = select(BatchRedemptionDay.day, BatchRedemptionDay.redeemed).where(
            BatchRedemptionDay.batch_id == batch_id, BatchRedemptionDay.day.between(first, last)
        )
    else:
        statement = (
            select(ProgrammeRedemptionDay.day, func.sum(ProgrammeRedemptionDay.redeemed))
            .where(ProgrammeRedemptionDay.day.between(first, last))
            .group_by(ProgrammeRedemptionDay.day)
        )
    async with rt.db.read() as session:
        counted = dict((await session.execute(statement)).all())
    return [DailyCount(day, int(counted.get(day) or 0)) for day in days]


@dataclass(frozen=True)
class ProgrammeStats:
    active_batches: int
    cards_issued: int
    cards_used: int
    outstanding_value: Decimal


async def programme_stats(rt: Runtime, caller: Caller) -> ProgrammeStats:
    """`cardProgrammeStats`: over every batch, from their counters, in one query grouped by price
    (money is summed exactly here, never as a float in SQL). An active batch is ACTIVE and not past
    its last day."""
    caller.require_admin()
    today = rt.today()
    live = still_valid(CardBatch.valid_until, today)
    statement = select(
        CardBatch.reference_price,
        func.count(),
        func.sum(case((live & (CardBatch.status == BatchStatus.ACTIVE), 1), else_=0)),
        func.sum(CardBatch.quantity),
        func.sum(CardBatch.used_count),
        func.sum(case((live, CardBatch.quantity - CardBatch.used_count - CardBatch.disabled_count), else_=0)),
    ).group_by(CardBatch.reference_price)
    async with rt.db.read() as session:
        rows = (await session.execute(statement)).all()
    return ProgrammeStats(
        active_batches=sum(int(row[2] or 0) for row in rows),
        cards_issued=sum(int(row[3] or 0) for row in rows),
        cards_used=sum(int(row[4] or 0) for row in rows),
        outstanding_value=sum((int(row[5] or 0) * row[0] for row in rows), ZERO),
    )


async def redeemed_value(rt: Runtime, caller: Caller, first: date, last: date) -> Decimal:
    """The reference value of the live redemptions of every batch in the range of days, summed in
    whole cents (exact on both databases)."""
    caller.require_admin()
    checked_span(first, last)
    statement = select(func.sum(ProgrammeRedemptionDay.redeemed_cents)).where(
        ProgrammeRedemptionDay.day.between(first, last)
    )
    async with rt.db.read() as session:
        total = await session.scalar(statement)
    return (Decimal(int(total or 0)) / 100).quantize(ZERO)
