"""Test helpers for provisioning: orders placed the way a redemption leaves them (card claimed, order
PENDING, redemption logged, job QUEUED), written straight through the ORM, and readers of the result."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from models import (
    AuditEntry,
    BatchStatus,
    Card,
    CardBatch,
    CardStatus,
    HostingPlan,
    Instance,
    JobStatus,
    Line,
    Order,
    OrderStatus,
    OsImage,
    ProductModel,
    ProductType,
    ProvisioningJob,
    Redemption,
    Region,
)
from services.provisioning import ProvisionRequest, ProvisionResult
from services.runtime import Runtime

CARD_NAME = "测试提货卡"


@dataclass(frozen=True)
class PlacedOrder:
    order_id: int
    order_no: str
    card_id: int
    batch_id: int
    job_id: int
    line_id: int
    product_model_id: int | None


def with_settings(rt: Runtime, **changes: Any) -> Runtime:
    """The same database and clock under changed settings."""
    return dataclasses.replace(rt, settings=rt.settings.model_copy(update=changes))


async def place_order(
    rt: Runtime,
    member_id: int,
    *,
    product_type: ProductType = ProductType.CLOUD_SERVER,
    line_code: str = "sh-bgp",
    months: int = 1,
    os_code: str | None = "ubuntu-22.04",
    model_code: str = "bm-e5-2650",
    plan_code: str = "vh-basic",
) -> PlacedOrder:
    """What `redeemCard` commits: a used card of a one-card batch, its PENDING order with the batch's
    frozen config, the redemption row, a bare-metal model's stock taken, and a QUEUED job due now."""
    now = rt.now()
    async with rt.db.write() as session:
        line, region = (
            await session.execute(
                select(Line, Region).join(Region, Region.id == Line.region_id).where(Line.code == line_code)
            )
        ).one()
        model = plan = None
        if product_type is ProductType.BARE_METAL:
            model = await session.scalar(select(ProductModel).where(ProductModel.code == model_code))
        if product_type is ProductType.VIRTUAL_HOST:
            plan = await session.scalar(select(HostingPlan).where(HostingPlan.code == plan_code))
            os_code = None
        os_image_id = (
            None
            if os_code is None
            else await session.scalar(select(OsImage.id).where(OsImage.code == os_code))
        )
        config = {
            "productType": product_type.value,
            "regionName": region.name,
            "lineName": line.name,
            "lineId": str(line.id),
            "months": months,
            "cpuCores": 1 if product_type is ProductType.CLOUD_SERVER else None,
            "memoryGb": 1 if product_type is ProductType.CLOUD_SERVER else None,
            "diskGb": 10 if product_type is ProductType.CLOUD_SERVER else None,
            "bandwidthMbps": None if plan else 10,
            "defenseGbps": None if plan else 0,
            "ipCount": 1 if model else None,
            "productModelId": str(model.id) if model else None,
            "productModelName": model.name if model else None,
            "planId": str(plan.id) if plan else None,
            "planName": plan.name if plan else None,
            "summary": f"{line.name} {product_type.value}",
        }
        batch = CardBatch(
            batch_no="B" + secrets.token_hex(6),
            name=CARD_NAME,
            product_type=product_type,
            line_id=line.id,
            product_model_id=model.id if model else None,
            hosting_plan_id=plan.id if plan else None,
            months=months,
            config=config,
            reference_price=Decimal("83.66"),
            windows_price=None,
            quantity=1,
            used_count=1,
            valid_until=date(2099, 12, 31),
            status=BatchStatus.ACTIVE,
            created_by=member_id,
            created_at=now,
        )
        session.add(batch)
        await session.flush()
        card = Card(
            batch_id=batch.id,
            seq=1,
            code_hash=secrets.token_bytes(32),
            code_cipher=secrets.token_bytes(48),
            key_version=1,
            last4="T8HR",
            status=CardStatus.USED,
            used_at=now,
            member_id=member_id,
        )
        session.add(card)
        await session.flush()
        order = Order(
            order_no="T" + secrets.token_hex(8).upper(),
            member_id=member_id,
            card_id=card.id,
            batch_id=batch.id,
            product_type=product_type,
            config=config,
            os_image_id=os_image_id,
            list_price=Decimal("83.66"),
            status=OrderStatus.PENDING,
            created_at=now,
        )
        session.add(order)
        await session.flush()
        session.add(
            Redemption(
                card_id=card.id,
                batch_id=batch.id,
                member_id=member_id,
                order_id=order.id,
                product_type=product_type,
                card_name=CARD_NAME,
                card_last4="T8HR",
                redeemed_at=now,
            )
        )
        if model is not None:
            await session.execute(
                update(ProductModel).where(ProductModel.id == model.id).values(stock=ProductModel.stock - 1)
            )
        job = ProvisioningJob(
            order_id=order.id,
            status=JobStatus.QUEUED,
            attempts=0,
            run_after=now,
            created_at=now,
            updated_at=now,
        )
        session.add(job)
        await session.flush()
        placed = PlacedOrder(
            order_id=order.id,
            order_no=order.order_no,
            card_id=card.id,
            batch_id=batch.id,
            job_id=job.id,
            line_id=line.id,
            product_model_id=model.id if model else None,
        )
    rt.jobs_ready.set()
    return placed


@dataclass(frozen=True)
class OrderState:
    order: Order
    job: ProvisioningJob
    instances: list[Instance]


async def order_state(rt: Runtime, order_id: int) -> OrderState:
    async with rt.db.read() as session:
        order = await session.get(Order, order_id)
        job = await session.scalar(select(ProvisioningJob).where(ProvisioningJob.order_id == order_id))
        instances = list(await session.scalars(select(Instance).where(Instance.order_id == order_id)))
    assert order is not None and job is not None
    return OrderState(order, job, instances)


async def all_instances(rt: Runtime) -> list[Instance]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(Instance).order_by(Instance.id)))


async def audit_rows(rt: Runtime) -> list[AuditEntry]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


async def wait_until(check: Callable[[], Awaitable[bool]], *, seconds: float = 10.0) -> None:
    """Poll `check` until it holds; fail the test after `seconds`."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 (the state is in the database, not in an Event)
            await asyncio.sleep(0.02)


class RecordingProvisioner:
    """A real provisioner for tests: passes every request on to `inner` and keeps it, password and all."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: list[ProvisionRequest] = []

    async def provision(self, request: ProvisionRequest) -> ProvisionResult:
        self.requests.append(request)
        return await self.inner.provision(request)


@dataclass(frozen=True)
class Sms:
    phone: str | None
    text: str
    secret: str


class RecordingNotifier:
    """A notifier for tests that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[Sms] = []

    async def send_sms(self, phone: str | None, text: str, *, secret: str) -> None:
        self.sent.append(Sms(phone, text, secret))
