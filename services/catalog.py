"""The catalog as the GraphQL layer reads it: regions, their lines, the lines' images, bare-metal models
and hosting plans, by id for the DataLoaders, and the browsing fields with their permission check.
The file format is services/catalog_file.py; loading it, services/catalog_loading.py."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from core.db import Database
from core.ids import parse_id
from models.base import ProductType
from models.catalog import HostingPlan, Line, OsImage, ProductModel, Region, line_os_images
from services.runtime import Caller, Runtime


def _offers(line: Line, product_type: ProductType | None) -> bool:
    # product_types is a JSON list; the catalog is small, so filtering here beats two JSON dialects
    return product_type is None or product_type.value in line.product_types


async def list_regions(db: Database, product_type: ProductType | None = None) -> list[Region]:
    """All regions, or those with at least one line offering `product_type`; by id."""
    async with db.read() as session:
        if product_type is None:
            return list(await session.scalars(select(Region).order_by(Region.id)))
        lines = await session.scalars(select(Line))
        region_ids = {line.region_id for line in lines if _offers(line, product_type)}
        if not region_ids:
            return []
        return list(
            await session.scalars(select(Region).where(Region.id.in_(region_ids)).order_by(Region.id))
        )


async def lines_for_regions(
    db: Database, region_ids: Iterable[int], product_type: ProductType | None = None
) -> dict[int, list[Line]]:
    """Lines of each region (every id given is a key), offering `product_type` if given; by position, id."""
    ids = list(dict.fromkeys(region_ids))
    found: dict[int, list[Line]] = {region_id: [] for region_id in ids}
    if not ids:
        return found
    async with db.read() as session:
        lines = await session.scalars(
            select(Line).where(Line.region_id.in_(ids)).order_by(Line.position, Line.id)
        )
        for line in lines:
            if _offers(line, product_type):
                found[line.region_id].append(line)
    return found


async def os_images_for_lines(db: Database, line_ids: Iterable[int]) -> dict[int, list[OsImage]]:
    """Images of each line (every id given is a key), Linux before Windows, then by name."""
    ids = list(dict.fromkeys(line_ids))
    found: dict[int, list[OsImage]] = {line_id: [] for line_id in ids}
    if not ids:
        return found
    async with db.read() as session:
        rows = await session.execute(
            select(line_os_images.c.line_id, OsImage)
            .join(OsImage, OsImage.id == line_os_images.c.os_image_id)
            .where(line_os_images.c.line_id.in_(ids))
            .order_by(OsImage.family, OsImage.name, OsImage.id)
        )
        for line_id, image in rows:
            found[line_id].append(image)
    return found


async def regions_by_ids(db: Database, ids: Iterable[int]) -> dict[int, Region]:
    """The regions with these ids; ids with no region are simply absent."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    async with db.read() as session:
        regions = await session.scalars(select(Region).where(Region.id.in_(wanted)))
        return {region.id: region for region in regions}


async def product_models_for_line(db: Database, line_id: int) -> list[ProductModel]:
    """The line's bare-metal models, by id (stock 0 included: the client shows it as sold out)."""
    async with db.read() as session:
        result = await session.scalars(
            select(ProductModel).where(ProductModel.line_id == line_id).order_by(ProductModel.id)
        )
        return list(result)


async def hosting_plans_for_line(db: Database, line_id: int) -> list[HostingPlan]:
    """The line's virtual-host plans, by id."""
    async with db.read() as session:
        result = await session.scalars(
            select(HostingPlan).where(HostingPlan.line_id == line_id).order_by(HostingPlan.id)
        )
        return list(result)


# ---------------------------------------------------------------- reads with their permission check


async def browse_regions(
    rt: Runtime, caller: Caller, product_type: ProductType | None = None
) -> list[Region]:
    """`regions`: anyone signed in."""
    caller.require_signed_in()
    return await list_regions(rt.db, None if product_type is None else ProductType(product_type))


async def browse_product_models(rt: Runtime, caller: Caller, line_id: str) -> list[ProductModel]:
    """`productModels(lineId)`: anyone signed in; an unknown line has none."""
    caller.require_signed_in()
    parsed = parse_id(line_id)
    return [] if parsed is None else await product_models_for_line(rt.db, parsed)


async def browse_hosting_plans(rt: Runtime, caller: Caller, line_id: str) -> list[HostingPlan]:
    """`hostingPlans(lineId)`: anyone signed in; an unknown line has none."""
    caller.require_signed_in()
    parsed = parse_id(line_id)
    return [] if parsed is None else await hosting_plans_for_line(rt.db, parsed)


async def os_images_by_ids(db: Database, ids: Iterable[int]) -> dict[int, OsImage]:
    """For DataLoaders: images by id."""
    async with db.read() as session:
        result = await session.scalars(select(OsImage).where(OsImage.id.in_(list(ids))))
        return {image.id: image for image in result}
