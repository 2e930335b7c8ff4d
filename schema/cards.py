"""Card batches and cards in the schema: the types, their connections, inputs and result unions."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import strawberry
from strawberry.types import Info

from models import Card, CardBatch
from schema.catalog import ProductConfigInput, ProductConfigType
from schema.channels import ChannelShareType, ChannelType
from schema.common import CardBatchStatusEnum, CardStatusEnum, ProductTypeEnum, later
from schema.errors import (
    InvalidInputErrorType,
    InvalidStateErrorType,
    NotFoundErrorType,
    OutOfStockErrorType,
    RateLimitedErrorType,
    WrongPasswordErrorType,
)
from schema.figures import DailyCountType, FromDay, ToDay, daily_counts
from schema.pagination import After, First, Offset, PageInfo, build_connection
from schema.permissions import admin_field
from services import cards, codes, figures
from services.paging import Page

# Orders stand above cards (an order is paid by a card): the link back is lazy, never an import
_ORDER_TYPE = later("schema.orders", "OrderType")
# the password argument of the download mutations (RULES §6, RULES-v2 §1's step-up)
DOWNLOAD_PASSWORD = (
    "The signed-in admin's own password. An admin signed in through the portal with no local password "
    'passes "" instead, and must have signed in there within the last 5 minutes.'
)


@strawberry.type(
    name="CardBatch", description="A batch of one-time pickup cards for one frozen configuration."
)
class CardBatchType:
    id: strawberry.ID = strawberry.field(description="The batch's id.")
    batch_no: str = admin_field(description="Batch number (批次), unique.")
    name: str = strawberry.field(description="Card name (提货卡名称).")
    product_type: ProductTypeEnum = strawberry.field(description="What the cards give.")
    config: ProductConfigType = strawberry.field(
        description="The configuration, frozen when the batch was made."
    )
    reference_price: Decimal = admin_field(
        description="Linux price of the configuration, frozen at creation."
    )
    quantity: int = admin_field(description="Cards in the batch.")
    used_count: int = admin_field(description="Cards redeemed.")
    disabled_count: int = admin_field(
        description="Cards disabled one by one (not counting a disabled batch)."
    )
    valid_until: date = strawberry.field(
        description="Redeemable until the end of this day, business time zone."
    )
    valid_from: date | None = strawberry.field(
        description="Redeemable from the start of this day, business time zone; null: from creation."
    )
    per_member_limit: int | None = strawberry.field(
        description="Live redemptions one member may hold of this batch; null: no limit."
    )
    status: CardBatchStatusEnum = admin_field(description="A DISABLED batch's cards cannot be redeemed.")
    created_at: datetime = strawberry.field(description="When the batch was made.")
    download_count: int = admin_field(description="How many times its codes were downloaded.")
    row: strawberry.Private[CardBatch]

    @classmethod
    def of(cls, batch: CardBatch) -> CardBatchType:
        return cls(
            id=strawberry.ID(str(batch.id)),
            batch_no=batch.batch_no,
            name=batch.name,
            product_type=batch.product_type,
            config=ProductConfigType.of(batch.config),
            reference_price=batch.reference_price,
            quantity=batch.quantity,
            used_count=batch.used_count,
            disabled_count=batch.disabled_count,
            valid_until=batch.valid_until,
            valid_from=batch.valid_from,
            per_member_limit=batch.per_member_limit,
            status=batch.status,
            created_at=batch.created_at,
            download_count=batch.download_count,
            row=batch,
        )

    @admin_field(description="The batch's cards, oldest first.")
    async def cards(
        self,
        info: Info,
        first: First = 20,
        after: After = None,
        offset: Offset = None,
        status: Annotated[
            CardStatusEnum | None, strawberry.argument(description="Only cards in this state.")
        ] = None,
        keyword: Annotated[
            str | None, strawberry.argument(description="The last 4 symbols of a code, or a whole code.")
        ] = None,
    ) -> CardConnection:
        ctx = info.context
        page = await cards.list_cards(
            ctx.rt,
            ctx.caller,
            self.row,
            status=status,
            keyword=keyword,
            first=first,
            after=after,
            offset=offset,
        )
        ctx.loaders.batch.prime(self.row.id, self.row)
        return card_connection(page)

    def _figures(self, info: Info) -> figures.BatchFigures:
        return figures.of_batch(info.context.rt.today(), self.row)

    @admin_field(description="UNUSED cards not past validUntil (from the counters).")
    def unused_count(self, info: Info) -> int:
        return self._figures(info).unused_count

    @admin_field(description="UNUSED cards past validUntil.")
    def expired_count(self, info: Info) -> int:
        return self._figures(info).expired_count

    @admin_field(description="usedCount × referencePrice.")
    def redeemed_value(self, info: Info) -> Decimal:
        return self._figures(info).redeemed_value

    @admin_field(description="unusedCount × referencePrice: the liability still out.")
    def outstanding_value(self, info: Info) -> Decimal:
        return self._figures(info).outstanding_value

    @admin_field(
        description="Redemptions per day (business time zone) that still stand, every day of the range."
    )
    async def redemptions_by_day(self, info: Info, from_: FromDay, to: ToDay) -> list[DailyCountType]:
        ctx = info.context
        return daily_counts(await figures.redemptions_by_day(ctx.rt, ctx.caller, self.row.id, from_, to))

    @admin_field(description="How the batch's cards are split over channels; the share of no channel last.")
    async def channels(self, info: Info) -> list[ChannelShareType]:
        loaders = info.context.loaders
        shares = await loaders.shares_by_batch.load(self.row)
        found = [None if s.channel_id is None else await loaders.channel.load(s.channel_id) for s in shares]
        return [
            ChannelShareType(
                channel=None if view is None else ChannelType.of(view),
                card_count=share.card_count,
                used_count=share.used_count,
            )
            for share, view in zip(shares, found, strict=True)
        ]


@strawberry.type(name="Card", description="One pickup card. Its code is never shown whole after it is made.")
class CardType:
    id: strawberry.ID = strawberry.field(description="The card's id.")
    masked_code: str = strawberry.field(
        description='The code with only its last 4 symbols: "****-****-****-7K3Q".'
    )
    status: CardStatusEnum = strawberry.field(description="UNUSED, USED or DISABLED.")
    remark: str | None = admin_field(description="The admin's note (备注).")
    used_at: datetime | None = strawberry.field(description="When it was redeemed.")
    member_id: strawberry.ID | None = strawberry.field(description="Who redeemed it.")
    seq: int = admin_field(description="1..quantity within the batch: the order of the download.")
    batch_id: strawberry.Private[int]
    channel_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, card: Card) -> CardType:
        return cls(
            id=strawberry.ID(str(card.id)),
            masked_code=codes.masked(card.last4),
            status=card.status,
            remark=card.remark,
            used_at=card.used_at,
            member_id=None if card.member_id is None else strawberry.ID(str(card.member_id)),
            seq=card.seq,
            batch_id=card.batch_id,
            channel_id=card.channel_id,
        )

    @admin_field(description="The channel the card was handed to; null: none.")
    async def channel(self, info: Info) -> ChannelType | None:
        if self.channel_id is None:
            return None
        return ChannelType.of(await info.context.loaders.channel.load(self.channel_id))

    @strawberry.field(description="The batch the card belongs to.")
    async def batch(self, info: Info) -> CardBatchType:
        return CardBatchType.of(await info.context.loaders.batch.load(self.batch_id))

    @strawberry.field(description="The order it paid for, once used (a cancelled order is not shown).")
    async def order(self, info: Info) -> Annotated[OrderType, strawberry.lazy("schema.orders")] | None:  # noqa: F821
        row = await info.context.loaders.order_by_card.load(int(self.id))
        return None if row is None else _ORDER_TYPE().of(row)

    @strawberry.field(description="Past its batch's validity day (business time zone).")
    async def expired(self, info: Info) -> bool:
        batch = await info.context.loaders.batch.load(self.batch_id)
        return cards.is_expired(info.context.rt, batch.valid_until)


@strawberry.type(name="CardBatchEdge", description="A batch in a list, with its cursor.")
class CardBatchEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this batch.")
    node: CardBatchType = strawberry.field(description="The batch.")


@strawberry.type(name="CardBatchConnection", description="A page of batches.")
class CardBatchConnection:
    edges: list[CardBatchEdge] = strawberry.field(description="The batches with their cursors.")
    nodes: list[CardBatchType] = strawberry.field(description="The batches.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    total_count: int = strawberry.field(description="Batches in the whole filtered list.")


@strawberry.type(name="CardEdge", description="A card in a list, with its cursor.")
class CardEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this card.")
    node: CardType = strawberry.field(description="The card.")


@strawberry.type(name="CardConnection", description="A page of cards.")
class CardConnection:
    edges: list[CardEdge] = strawberry.field(description="The cards with their cursors.")
    nodes: list[CardType] = strawberry.field(description="The cards.")
    page_info: PageInfo = strawberry.field(description="Where this page sits.")
    total_count: int = strawberry.field(description="Cards in the whole filtered list.")


def batch_connection(page: Page[CardBatch]) -> CardBatchConnection:
    return build_connection(CardBatchConnection, CardBatchEdge, page, CardBatchType.of)


def card_connection(page: Page[Card]) -> CardConnection:
    return build_connection(CardConnection, CardEdge, page, CardType.of)


@strawberry.input(name="CardBatchFilter", description="Narrow the batch list; all given filters apply.")
class CardBatchFilter:
    product_type: ProductTypeEnum | None = strawberry.field(default=None, description="Only this product.")
    status: CardBatchStatusEnum | None = strawberry.field(default=None, description="Only this status.")
    keyword: str | None = strawberry.field(default=None, description="Part of the card name or batch number.")
    batch_no: str | None = strawberry.field(default=None, description="Exactly this batch number.")
    channel_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only batches with cards in this channel."
    )
    expiring_within_days: int | None = strawberry.field(
        default=None,
        description="ACTIVE batches whose validUntil falls within this many days (0: today), 0..3660.",
    )

    def to_service(self) -> cards.BatchFilter:
        return cards.BatchFilter(
            product_type=self.product_type,
            status=self.status,
            keyword=self.keyword,
            batch_no=self.batch_no,
            channel_id=None if self.channel_id is None else str(self.channel_id),
            expiring_within_days=self.expiring_within_days,
        )


@strawberry.input(
    name="CreateCardBatchInput", description="A new batch: its configuration, how many cards, until when."
)
class CreateCardBatchInput:
    name: str = strawberry.field(description="Card name, 1–100 characters.")
    batch_no: str | None = strawberry.field(
        default=None, description="Batch number (letters, digits, - and _); generated when absent; unique."
    )
    config: ProductConfigInput = strawberry.field(description="What the cards give.")
    quantity: int = strawberry.field(
        description="How many cards, 1 .. the configured maximum (default 100000)."
    )
    valid_until: date = strawberry.field(description="Last day the cards can be redeemed; today or later.")
    status: CardBatchStatusEnum | None = strawberry.field(
        default=CardBatchStatusEnum.ACTIVE, description="Initial status (正常 / 禁用); ACTIVE when null."
    )
    valid_from: date | None = strawberry.field(
        default=None, description="First day the cards can be redeemed; not after validUntil. Null: at once."
    )
    per_member_limit: int | None = strawberry.field(
        default=None,
        description="Live redemptions one member may hold of this batch, 1..1000. Null: no limit.",
    )

    def to_service(self) -> cards.NewBatch:
        return cards.NewBatch(
            name=self.name,
            batch_no=self.batch_no,
            config=self.config.to_service(),
            quantity=self.quantity,
            valid_until=self.valid_until,
            status=self.status or CardBatchStatusEnum.ACTIVE,
            valid_from=self.valid_from,
            per_member_limit=self.per_member_limit,
        )


@strawberry.type(name="CreateCardBatchSuccess", description="The batch was made with all its cards.")
class CreateCardBatchSuccess:
    batch: CardBatchType = strawberry.field(description="The new batch.")


@strawberry.type(name="SetCardBatchStatusSuccess", description="The batch has the asked status.")
class SetCardBatchStatusSuccess:
    batch: CardBatchType = strawberry.field(description="The batch.")


@strawberry.type(name="SetCardStatusSuccess", description="The card has the asked status.")
class SetCardStatusSuccess:
    card: CardType = strawberry.field(description="The card.")


@strawberry.type(name="SetCardRemarkSuccess", description="The card's remark was saved.")
class SetCardRemarkSuccess:
    card: CardType = strawberry.field(description="The card.")


@strawberry.type(
    name="CardBatchDownload",
    description="A single-use link to the batch's codes: TXT (one code per line, XXXX-XXXX-XXXX-XXXX), "
    "CSV or a printable PDF sheet.",
)
class CardBatchDownloadType:
    url: str = strawberry.field(description="GET it once, within 5 minutes.")
    expires_at: datetime = strawberry.field(description="When the link stops working.")


CreateCardBatchResult = Annotated[
    CreateCardBatchSuccess | InvalidInputErrorType | NotFoundErrorType | OutOfStockErrorType,
    strawberry.union(
        "CreateCardBatchResult", description="The new batch, or why it was not made (nothing was)."
    ),
]
SetCardBatchStatusResult = Annotated[
    SetCardBatchStatusSuccess | NotFoundErrorType,
    strawberry.union("SetCardBatchStatusResult", description="The batch, or that there is no such batch."),
]
SetCardStatusResult = Annotated[
    SetCardStatusSuccess | NotFoundErrorType | InvalidStateErrorType,
    strawberry.union("SetCardStatusResult", description="The card, or why its status cannot change."),
]
SetCardRemarkResult = Annotated[
    SetCardRemarkSuccess | NotFoundErrorType | InvalidInputErrorType,
    strawberry.union("SetCardRemarkResult", description="The card, or why the remark was refused."),
]
CreateCardBatchDownloadResult = Annotated[
    CardBatchDownloadType
    | NotFoundErrorType
    | WrongPasswordErrorType
    | RateLimitedErrorType
    | InvalidInputErrorType,
    strawberry.union(
        "CreateCardBatchDownloadResult",
        description="The link, or why none was made (InvalidInputError: a range outside the batch).",
    ),
]
