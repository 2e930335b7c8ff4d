"""Channels in the schema: a place cards are handed to, and a batch's share in one."""

from __future__ import annotations

from datetime import datetime

import strawberry

from services.channels import ChannelView


@strawberry.type(
    name="Channel", description="A place the cards are handed to: a reseller, a partner, a campaign, a shop."
)
class ChannelType:
    id: strawberry.ID = strawberry.field(description="The channel's id.")
    name: str = strawberry.field(description="Its name, unique.")
    remark: str | None = strawberry.field(description="The admin's note.")
    created_at: datetime = strawberry.field(description="When it was made.")
    card_count: int = strawberry.field(
        description="Cards in this channel, over every batch (used ones included)."
    )
    used_count: int = strawberry.field(description="Of those, the cards redeemed.")

    @classmethod
    def of(cls, view: ChannelView) -> ChannelType:
        return cls(
            id=strawberry.ID(str(view.id)),
            name=view.name,
            remark=view.remark,
            created_at=view.created_at,
            card_count=view.card_count,
            used_count=view.used_count,
        )


@strawberry.type(
    name="ChannelShare",
    description="How many of a batch's cards sit in one channel, and how many of those are used.",
)
class ChannelShareType:
    channel: ChannelType | None = strawberry.field(description="The channel; null: cards in no channel.")
    card_count: int = strawberry.field(description="The batch's cards in it.")
    used_count: int = strawberry.field(description="Of those, the cards redeemed.")
