"""Live order status: `orderUpdates` and `myOrderUpdates` (services/live.py decides and streams)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated

import strawberry
from strawberry.types import Info

from models import Order
from resolvers.context import Context
from schema.orders import OrderType
from services import live
from services.live import Signin


async def order_updates(
    info: Info, order_id: Annotated[strawberry.ID, strawberry.argument(description="The order.")]
) -> AsyncGenerator[OrderType, None]:
    ctx = info.context
    return _typed(ctx, await live.watch_order(ctx.rt, _signin(ctx), str(order_id)))


async def my_order_updates(info: Info) -> AsyncGenerator[OrderType, None]:
    ctx = info.context
    return _typed(ctx, await live.watch_my_orders(ctx.rt, _signin(ctx)))


def _signin(ctx: Context) -> Signin:
    return Signin.of(ctx.rt, ctx.caller, ctx.token)


async def _typed(ctx: Context, orders: AsyncIterator[Order]) -> AsyncGenerator[OrderType, None]:
    try:
        async for order in orders:
            # every message reads its related rows afresh, not from the last message's loaders
            ctx.renew_loaders()
            yield OrderType.of(order)
    finally:
        await orders.aclose()  # type: ignore[attr-defined]
