"""Redemption: the preview, redeeming, and the usage log."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from schema.orders import OrderType
from schema.pagination import After, First, Offset
from schema.redemption import (
    RedeemCardInput,
    RedeemCardSuccess,
    RedemptionConnection,
    RedemptionFilter,
    RedemptionPreviewType,
    redemption_connection,
)
from services import redemption, usage_log


async def redemption_preview(
    info: Info, code: Annotated[str, strawberry.argument(description="The card code as typed.")]
) -> RedemptionPreviewType:
    ctx = info.context
    return RedemptionPreviewType.of(await redemption.preview_card(ctx.rt, ctx.caller, code))


async def redeem_card(
    info: Info,
    input: Annotated[RedeemCardInput, strawberry.argument(description="The code and the OS choice.")],
) -> RedeemCardSuccess:
    ctx = info.context
    redeemed = await redemption.redeem_card(ctx.rt, ctx.caller, input.to_service())
    if redeemed.card is not None:
        # the response usually asks for these: show what the redemption just wrote, not a re-read
        ctx.loaders.card.prime(redeemed.card.id, redeemed.card)
        ctx.loaders.order_by_card.prime(redeemed.card.id, redeemed.order)
        ctx.loaders.instance_by_order.prime(redeemed.order.id, None)
        if redeemed.image is not None:
            ctx.loaders.os_image.prime(redeemed.image.id, redeemed.image)
    return RedeemCardSuccess(order=OrderType.of(redeemed.order))


async def redemptions(
    info: Info,
    filter: Annotated[RedemptionFilter | None, strawberry.argument(description="Narrow the log.")] = None,
    first: First = 20,
    after: After = None,
    offset: Offset = None,
) -> RedemptionConnection:
    ctx = info.context
    wanted = filter.to_service() if filter else usage_log.RedemptionFilter()
    page = await usage_log.list_redemptions(
        ctx.rt, ctx.caller, wanted, first=first, after=after, offset=offset
    )
    return redemption_connection(page)


async def my_redemptions(
    info: Info,
    keyword: Annotated[
        str | None, strawberry.argument(description="The card's last 4 symbols, or part of the card name.")
    ] = None,
    first: First = 20,
    after: After = None,
    offset: Offset = None,
) -> RedemptionConnection:
    ctx = info.context
    page = await usage_log.my_redemptions(
        ctx.rt, ctx.caller, keyword, first=first, after=after, offset=offset
    )
    return redemption_connection(page)
