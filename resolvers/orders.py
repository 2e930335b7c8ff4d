"""Orders and instances: reads, and the admin's retry and cancel."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from schema.orders import (
    CancelOrderSuccess,
    InstanceConnection,
    OrderConnection,
    OrderFilter,
    OrderType,
    RetryProvisioningSuccess,
    instance_connection,
    order_connection,
)
from schema.pagination import After, First, Offset
from services import orders

OrderId = Annotated[strawberry.ID, strawberry.argument(description="The order.")]


async def order(
    info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The order's id.")]
) -> OrderType | None:
    ctx = info.context
    row = await orders.get_order(ctx.rt, ctx.caller, str(id))
    return None if row is None else OrderType.of(row)


async def order_list(
    info: Info,
    filter: Annotated[OrderFilter | None, strawberry.argument(description="Narrow the list.")] = None,
    first: First = 20,
    after: After = None,
    offset: Offset = None,
) -> OrderConnection:
    ctx = info.context
    wanted = filter.to_service() if filter else orders.OrderFilter()
    return order_connection(
        await orders.list_orders(ctx.rt, ctx.caller, wanted, first=first, after=after, offset=offset)
    )


async def my_instances(
    info: Info, first: First = 20, after: After = None, offset: Offset = None
) -> InstanceConnection:
    ctx = info.context
    return instance_connection(
        await orders.my_instances(ctx.rt, ctx.caller, first=first, after=after, offset=offset)
    )


async def retry_provisioning(info: Info, order_id: OrderId) -> RetryProvisioningSuccess:
    ctx = info.context
    return RetryProvisioningSuccess(
        order=OrderType.of(await orders.retry_provisioning(ctx.rt, ctx.caller, str(order_id)))
    )


async def cancel_order(info: Info, order_id: OrderId) -> CancelOrderSuccess:
    ctx = info.context
    return CancelOrderSuccess(
        order=OrderType.of(await orders.cancel_order(ctx.rt, ctx.caller, str(order_id)))
    )
