"""Figures in the schema: counts per day, and the whole programme's figures for the dashboard."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

import strawberry
from strawberry.types import Info

from services import figures

FromDay = Annotated[
    date, strawberry.argument(name="from", description="The first day (business time zone), included.")
]
ToDay = Annotated[
    date, strawberry.argument(description="The last day, included; at most 366 days after `from`.")
]


@strawberry.type(name="DailyCount", description="A count for one day of the business time zone.")
class DailyCountType:
    day: date = strawberry.field(description="The day.")
    count: int = strawberry.field(
        description="Redemptions that day that still stand (a cancelled order's is not counted)."
    )


def daily_counts(counts: list[figures.DailyCount]) -> list[DailyCountType]:
    return [DailyCountType(day=item.day, count=item.count) for item in counts]


@strawberry.type(
    name="CardProgrammeStats", description="Figures over all batches, for the dashboard's first page."
)
class CardProgrammeStatsType:
    active_batches: int = strawberry.field(description="Batches that are ACTIVE and not past their last day.")
    cards_issued: int = strawberry.field(description="Cards in every batch.")
    cards_used: int = strawberry.field(description="Cards redeemed (a cancelled order's card is not).")
    outstanding_value: Decimal = strawberry.field(
        description="The liability still out: unused, unexpired cards times their reference price."
    )

    @classmethod
    def of(cls, stats: figures.ProgrammeStats) -> CardProgrammeStatsType:
        return cls(
            active_batches=stats.active_batches,
            cards_issued=stats.cards_issued,
            cards_used=stats.cards_used,
            outstanding_value=stats.outstanding_value,
        )

    @strawberry.field(
        description="The reference value of the redemptions made in these days (that still stand)."
    )
    async def redeemed_value(self, info: Info, from_: FromDay, to: ToDay) -> Decimal:
        ctx = info.context
        return await figures.redeemed_value(ctx.rt, ctx.caller, from_, to)

    @strawberry.field(description="Redemptions per day over all batches, every day of the range.")
    async def redemptions_by_day(self, info: Info, from_: FromDay, to: ToDay) -> list[DailyCountType]:
        ctx = info.context
        return daily_counts(await figures.redemptions_by_day(ctx.rt, ctx.caller, None, from_, to))
