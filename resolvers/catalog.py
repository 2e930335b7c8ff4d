"""Catalog reads and quotes: read the arguments, call the service, map to schema types."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types import Info

from schema.catalog import HostingPlanType, ProductConfigInput, ProductModelType, QuoteType, RegionType
from schema.common import ProductTypeEnum
from services import catalog, pricing


async def regions(
    info: Info,
    product_type: Annotated[
        ProductTypeEnum | None,
        strawberry.argument(description="Only regions with a line offering this product."),
    ] = None,
) -> list[RegionType]:
    ctx = info.context
    rows = await catalog.browse_regions(ctx.rt, ctx.caller, product_type)
    return [RegionType.of(row) for row in rows]


async def product_models(
    info: Info, line_id: Annotated[strawberry.ID, strawberry.argument(description="The line.")]
) -> list[ProductModelType]:
    ctx = info.context
    rows = await catalog.browse_product_models(ctx.rt, ctx.caller, str(line_id))
    return [ProductModelType.of(row) for row in rows]


async def hosting_plans(
    info: Info, line_id: Annotated[strawberry.ID, strawberry.argument(description="The line.")]
) -> list[HostingPlanType]:
    ctx = info.context
    rows = await catalog.browse_hosting_plans(ctx.rt, ctx.caller, str(line_id))
    return [HostingPlanType.of(row) for row in rows]


async def quote(
    info: Info,
    config: Annotated[ProductConfigInput, strawberry.argument(description="The configuration to price.")],
) -> QuoteType:
    ctx = info.context
    return QuoteType.of(await pricing.quote(ctx.rt, ctx.caller, config.to_service()))
