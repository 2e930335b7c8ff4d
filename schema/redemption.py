"""Redemption in the schema: the preview, redeeming, and the usage log (Redemption)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from models import Redemption
from schema.cards import CardBatchType, CardType
from schema.catalog import OsImageType, ProductConfigType
from schema.common import ProductTypeEnum
from schema.errors import (
    CardCodeErrorType,
    CardUnavailableErrorType,
    IdempotencyConflictErrorType,
    OsSelectionErrorType,
    OutOfStockErrorType,
    RateLimitedErrorType,
)
from schema.orders import OrderType
from schema.pagination import PageInfo, build_connection
from services import redemption as redemption_service
from services import usage_log
from services.paging import Page


@strawberry.type(
    name="RedemptionPreview", description="What a card gives, shown before the member confirms (step 2)."
)
class RedemptionPreviewType:
    product_type: ProductTypeEnum = strawberry.field(description="The product.")
    product_name: str = strawberry.field(description='e.g. "云服务器", "裸金属服务器".')
    quantity: int = strawberry.field(description="Always 1.")
    config: ProductConfigType = strawberry.field(description="The configuration the card gives.")
    months: int = strawberry.field(description="Duration in months.")
    os_required: bool = strawberry.field(
        description="Whether an OS image must be chosen (not for a virtual host)."
    )
    os_images: list[OsImageType] = strawberry.field(
        description="The images to choose from; empty for a virtual host."
    )
    valid_until: date = strawberry.field(description="Last day the card can be redeemed.")
    notices: list[str] = strawberry.field(description="Warnings to show before confirming.")

    @classmethod
    def of(cls, preview: redemption_service.Preview) -> RedemptionPreviewType:
        return cls(
            product_type=preview.product_type,
            product_name=preview.product_name,
            quantity=1,
            config=ProductConfigType.of(preview.config),
            months=preview.months,
            os_required=preview.os_required,
            os_images=[OsImageType.of(image) for image in preview.os_images],
            valid_until=preview.valid_until,
            notices=preview.notices,
        )


@strawberry.input(name="RedeemCardInput", description="A card code and the member's OS choice.")
class RedeemCardInput:
    code: str = strawberry.field(description="The code, any case, with or without dashes or spaces.")
    os_image_id: strawberry.ID | None = strawberry.field(
        default=None, description="An image of the card's line; required except for a virtual host."
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="Same member + key + input → the same result, never a second order. Kept at least 24 hours.",
    )

    def to_service(self) -> redemption_service.RedeemRequest:
        return redemption_service.RedeemRequest(
            code=self.code,
            os_image_id=None if self.os_image_id is None else str(self.os_image_id),
            idempotency_key=self.idempotency_key,
        )


@strawberry.type(
    name="RedeemCardSuccess", description="The card is used and the order placed; provisioning follows."
)
class RedeemCardSuccess:
    order: OrderType = strawberry.field(description="The new order (PENDING at first).")


@strawberry.type(name="Redemption", description="One use of a card (提货卡使用记录).")
class RedemptionType:
    id: strawberry.ID = strawberry.field(description="The record's id.")
    member_id: strawberry.ID = strawberry.field(description="Who redeemed.")
    product_type: ProductTypeEnum = strawberry.field(description="What the card gave.")
    card_name: str = strawberry.field(description="The batch's card name at the time.")
    redeemed_at: datetime = strawberry.field(description="When.")
    row: strawberry.Private[Redemption]

    @classmethod
    def of(cls, row: Redemption) -> RedemptionType:
        return cls(
            id=strawberry.ID(str(row.id)),
            member_id=strawberry.ID(str(row.member_id)),
            product_type=row.product_type,
            card_name=row.card_name,
            redeemed_at=row.redeemed_at,
            row=row,
        )

    @strawberry.field(description="The card's batch.")
    async def batch(self, info: Info) -> CardBatchType:
        return CardBatchType.of(await info.context.loaders.batch.load(self.row.batch_id))

    @strawberry.field(description="The card.")
    async def card(self, info: Info) -> CardType:
        return CardType.of(await info.context.loaders.card.load(self.row.card_id))

    @strawberry.field(description="The order it made.")
    async def order(self, info: Info) -> OrderType:
        return OrderType.of(await info.context.loaders.order.load(self.row.order_id))


@strawberry.type(name="RedemptionEdge", description="A redemption in a list, with its cursor.")
class RedemptionEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this one.")
    node: RedemptionType = strawberry.field(description="The redemption.")


@strawberry.type(name="RedemptionConnection", description="A page of redemptions.")
class RedemptionConnection:
    edges: list[RedemptionEdge] = strawberry.field(description="The redemptions with their cursors.")
    nodes: list[RedemptionType] = strawberry.field(description="The redemptions.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    total_count: int = strawberry.field(description="Redemptions in the whole filtered list.")


def redemption_connection(page: Page[Redemption]) -> RedemptionConnection:
    return build_connection(RedemptionConnection, RedemptionEdge, page, RedemptionType.of)


@strawberry.input(name="RedemptionFilter", description="Narrow the usage log; all given filters apply.")
class RedemptionFilter:
    batch_id: strawberry.ID | None = strawberry.field(default=None, description="Only this batch.")
    member_id: strawberry.ID | None = strawberry.field(default=None, description="Only this member.")
    product_type: ProductTypeEnum | None = strawberry.field(default=None, description="Only this product.")
    from_: date | None = strawberry.field(
        default=None, name="from", description="From this day (business time zone), inclusive."
    )
    to: date | None = strawberry.field(
        default=None, description="To this day (business time zone), inclusive."
    )
    keyword: str | None = strawberry.field(
        default=None, description="The card's last 4 symbols, or part of the card name."
    )

    def to_service(self) -> usage_log.RedemptionFilter:
        return usage_log.RedemptionFilter(
            batch_id=None if self.batch_id is None else str(self.batch_id),
            member_id=None if self.member_id is None else str(self.member_id),
            product_type=self.product_type,
            from_day=self.from_,
            to_day=self.to,
            keyword=self.keyword,
        )


RedemptionPreviewResult = Annotated[
    RedemptionPreviewType
    | CardCodeErrorType
    | CardUnavailableErrorType
    | RateLimitedErrorType
    | OutOfStockErrorType,
    strawberry.union(
        "RedemptionPreviewResult", description="What the card gives, or why it cannot be redeemed."
    ),
]
RedeemCardResult = Annotated[
    RedeemCardSuccess
    | CardCodeErrorType
    | CardUnavailableErrorType
    | RateLimitedErrorType
    | OsSelectionErrorType
    | OutOfStockErrorType
    | IdempotencyConflictErrorType,
    strawberry.union(
        "RedeemCardResult", description="The order, or why the card was not redeemed (nothing changed)."
    ),
]
