"""Loading a checked catalog file into the database: an upsert by `code` in one transaction, and what
it did to each kind of row; the bundled demo catalog."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from models.catalog import HostingPlan, Line, OsImage, ProductModel, Region, line_os_images
from services.catalog_file import CatalogData, HostingPlanEntry, LineData, ProductModelEntry, parse_catalog


def demo_catalog_text() -> str:
    """The bundled demo catalog (tihuo/demo_catalog.toml), for `tihuo serve --demo`."""
    return resources.files("tihuo").joinpath("demo_catalog.toml").read_text(encoding="utf-8")


@dataclass(frozen=True)
class KindReport:
    """What loading did to the rows of one kind."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class LoadReport:
    regions: KindReport
    os_images: KindReport
    lines: KindReport
    product_models: KindReport
    hosting_plans: KindReport

    def kinds(self) -> dict[str, KindReport]:
        return {
            "regions": self.regions,
            "os_images": self.os_images,
            "lines": self.lines,
            "product_models": self.product_models,
            "hosting_plans": self.hosting_plans,
        }

    @property
    def changed(self) -> bool:
        return any(kind.inserted or kind.updated for kind in self.kinds().values())

    def summary(self) -> str:
        """One line per kind, for the command line."""
        return "\n".join(
            f"{name}: {kind.inserted} inserted, {kind.updated} updated, {kind.unchanged} unchanged"
            for name, kind in self.kinds().items()
        )


CatalogRow = TypeVar("CatalogRow", Region, OsImage, Line, ProductModel, HostingPlan)


@dataclass
class _Upserted(Generic[CatalogRow]):
    rows: dict[str, CatalogRow]
    inserted: set[str]
    updated: set[str]

    def report(self) -> KindReport:
        return KindReport(
            inserted=len(self.inserted),
            updated=len(self.updated),
            unchanged=len(self.rows) - len(self.inserted) - len(self.updated),
        )


async def load_catalog(db: Database, data: CatalogData) -> LoadReport:
    """Upsert the whole catalog by `code` in one transaction. Rows missing from the file stay as they
    are (batches and orders refer to them); loading the same file again changes nothing."""
    async with db.write() as session:
        regions = await _upsert(session, Region, {r.code: {"name": r.name} for r in data.regions})
        images = await _upsert(
            session, OsImage, {i.code: {"name": i.name, "family": i.family} for i in data.os_images}
        )
        lines = await _upsert(
            session,
            Line,
            {
                line.code: _line_values(line, position, regions.rows[line.region].id)
                for position, line in enumerate(data.lines)
            },
        )
        for code in await _set_line_images(session, lines.rows, images.rows, data.lines):
            if code not in lines.inserted:
                lines.updated.add(code)
        models = await _upsert(
            session,
            ProductModel,
            {m.code: _product_model_values(m, lines.rows[m.line].id) for m in data.product_models},
        )
        plans = await _upsert(
            session,
            HostingPlan,
            {p.code: _hosting_plan_values(p, lines.rows[p.line].id) for p in data.hosting_plans},
        )
    return LoadReport(
        regions=regions.report(),
        os_images=images.report(),
        lines=lines.report(),
        product_models=models.report(),
        hosting_plans=plans.report(),
    )


async def load_catalog_text(db: Database, text: str) -> LoadReport:
    """Check a catalog file and load it: nothing is written unless all of it is acceptable."""
    return await load_catalog(db, parse_catalog(text))


def _line_values(line: LineData, position: int, region_id: int) -> dict[str, Any]:
    # deep copies: the row's JSON must not share mutable lists with the frozen CatalogData
    return {
        "region_id": region_id,
        "name": line.name,
        "position": position,
        "product_types": [t.value for t in line.product_types],
        "ip_pool": line.ip_pool,
        "windows_monthly_surcharge": line.windows_monthly_surcharge,
        "durations": copy.deepcopy(line.durations),
        "options": copy.deepcopy(line.options),
        "pricing": copy.deepcopy(line.pricing),
    }


def _product_model_values(model: ProductModelEntry, line_id: int) -> dict[str, Any]:
    return {
        "line_id": line_id,
        "name": model.name,
        "cpu": model.cpu,
        "memory": model.memory,
        "disks": model.disks,
        "monthly": model.monthly,
        "included_ips": model.included_ips,
        "stock": model.stock,
    }


def _hosting_plan_values(plan: HostingPlanEntry, line_id: int) -> dict[str, Any]:
    return {"line_id": line_id, "name": plan.name, "description": plan.description, "monthly": plan.monthly}


async def _upsert(
    session: AsyncSession, model: type[CatalogRow], wanted: dict[str, dict[str, Any]]
) -> _Upserted[CatalogRow]:
    """Insert the codes not yet stored; on stored rows set only the fields that differ."""
    result = await session.scalars(select(model).where(model.code.in_(list(wanted))))
    existing = {row.code: row for row in result}
    upserted: _Upserted[CatalogRow] = _Upserted(rows={}, inserted=set(), updated=set())
    for code, values in wanted.items():
        row = existing.get(code)
        if row is None:
            row = model(code=code, **values)
            session.add(row)
            upserted.inserted.add(code)
        else:
            changed = {name: value for name, value in values.items() if getattr(row, name) != value}
            for name, value in changed.items():
                setattr(row, name, value)
            if changed:
                upserted.updated.add(code)
        upserted.rows[code] = row
    await session.flush()
    return upserted


async def _set_line_images(
    session: AsyncSession, lines: Mapping[str, Line], images: Mapping[str, OsImage], data: Sequence[LineData]
) -> set[str]:
    """Make each line's images exactly the listed ones; returns the codes of lines whose set changed."""
    current: dict[int, set[int]] = defaultdict(set)
    pairs = await session.execute(
        select(line_os_images.c.line_id, line_os_images.c.os_image_id).where(
            line_os_images.c.line_id.in_([row.id for row in lines.values()])
        )
    )
    for line_id, image_id in pairs:
        current[line_id].add(image_id)
    changed: set[str] = set()
    for line in data:
        line_id = lines[line.code].id
        wanted = {images[code].id for code in line.os_images}
        have = current[line_id]
        if wanted == have:
            continue
        changed.add(line.code)
        if have - wanted:
            await session.execute(
                delete(line_os_images).where(
                    line_os_images.c.line_id == line_id, line_os_images.c.os_image_id.in_(have - wanted)
                )
            )
        if wanted - have:
            await session.execute(
                insert(line_os_images),
                [{"line_id": line_id, "os_image_id": image_id} for image_id in sorted(wanted - have)],
            )
    return changed
