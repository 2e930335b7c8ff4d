"""Test helpers for provisioning: orders placed by a real redemption (a batch made by the card
service, one of its cards redeemed by the redemption service, so the order, its card, the log row
and the job are exactly what `redeemCard` writes), and readers of the result."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select

from models import (
    AuditEntry,
    Base,
    Card,
    CardStatus,
    HostingPlan,
    Instance,
    Line,
    Order,
    OsImage,
    ProductModel,
    ProductType,
    ProvisioningAttempt,
    ProvisioningJob,
    Role,
    User,
)
from services import cards, codes, redemption
from services.accounts import create_user
from services.login_passwords import Sealed
from services.notifiers import notifier_from_settings
from services.pricing import ConfigInput
from services.provisioners import Accepted, Active, ProvisionRequest, Running, Task, provisioner_from_settings
from services.provisioning_jobs import claim_job, run_job
from services.runtime import Caller, Runtime, Viewer

CARD_NAME = "测试提货卡"
ISSUER = "provisioning-admin"


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


async def _viewer(rt: Runtime, username: str) -> Viewer | None:
    async with rt.db.read() as session:
        user = await session.scalar(select(User).where(User.username == username))
    return None if user is None else Viewer(id=user.id, username=user.username, role=user.role)


async def _issuer(rt: Runtime) -> Caller:
    """The admin who makes the helpers' batches (made once per database)."""
    viewer = await _viewer(rt, ISSUER) or await create_user(
        rt, username=ISSUER, password="issuer password 1", role=Role.ADMIN
    )
    return Caller(viewer=viewer)


async def _config(
    rt: Runtime, product_type: ProductType, line_code: str, months: int, model_code: str, plan_code: str
) -> ConfigInput:
    async with rt.db.read() as session:
        line = await session.scalar(select(Line.id).where(Line.code == line_code))
        model = await session.scalar(select(ProductModel.id).where(ProductModel.code == model_code))
        plan = await session.scalar(select(HostingPlan.id).where(HostingPlan.code == plan_code))
    if product_type is ProductType.BARE_METAL:
        return ConfigInput(
            product_type, str(line), months, bandwidth_mbps=10, defense_gbps=0, product_model_id=str(model)
        )
    if product_type is ProductType.VIRTUAL_HOST:
        return ConfigInput(product_type, str(line), months, plan_id=str(plan))
    return ConfigInput(
        product_type,
        str(line),
        months,
        cpu_cores=1,
        memory_gb=1,
        disk_gb=10,
        bandwidth_mbps=10,
        defense_gbps=0,
    )


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
    """What `redeemCard` commits, made by it: a one-card batch of the configuration, and its card
    redeemed by the member with the image `os_code` (none for a virtual host)."""
    issuer = await _issuer(rt)
    config = await _config(rt, product_type, line_code, months, model_code, plan_code)
    batch = await cards.create_batch(
        rt,
        issuer,
        cards.NewBatch(
            name=CARD_NAME, batch_no=None, config=config, quantity=1, valid_until=date(2099, 12, 31)
        ),
    )
    async with rt.db.read() as session:
        card = await session.scalar(select(Card).where(Card.batch_id == batch.id))
        image = None
        if product_type is not ProductType.VIRTUAL_HOST and os_code is not None:
            image = await session.scalar(select(OsImage.id).where(OsImage.code == os_code))
        user = await session.get(User, member_id)
    assert card is not None and user is not None
    code = codes.CodeSealer(rt.keys).open(card.code_hash, card.code_cipher, card.key_version)
    member = Caller(viewer=Viewer(id=user.id, username=user.username, role=user.role))
    redeemed = await redemption.redeem_card(
        rt, member, redemption.RedeemRequest(code=code, os_image_id=None if image is None else str(image))
    )
    order = redeemed.order
    async with rt.db.read() as session:
        job_id = await session.scalar(select(ProvisioningJob.id).where(ProvisioningJob.order_id == order.id))
    assert job_id is not None
    return PlacedOrder(
        order_id=order.id,
        order_no=order.order_no,
        card_id=card.id,
        batch_id=batch.id,
        job_id=job_id,
        line_id=batch.line_id,
        product_model_id=batch.product_model_id,
    )


@dataclass(frozen=True)
class OrderState:
    order: Order
    job: ProvisioningJob
    instances: list[Instance]


async def step(rt: Runtime) -> bool:
    """Claim the due job, if any, and run it with the settings' provisioner and notifier: one turn
    of the worker's loop, made by the test when it wants it."""
    job = await claim_job(rt, "w1")
    if job is None:
        return False
    provisioner, notifier = provisioner_from_settings(rt), notifier_from_settings(rt)
    try:
        await run_job(rt, provisioner, notifier, job)
    finally:
        await provisioner.aclose()
        await notifier.aclose()
    return True


async def order_state(rt: Runtime, order_id: int) -> OrderState:
    async with rt.db.read() as session:
        order = await session.get(Order, order_id)
        job = await session.scalar(select(ProvisioningJob).where(ProvisioningJob.order_id == order_id))
        instances = list(await session.scalars(select(Instance).where(Instance.order_id == order_id)))
    assert order is not None and job is not None
    return OrderState(order, job, instances)


async def job_password(rt: Runtime, order_id: int) -> str:
    """The order's login password as its job keeps it, sealed (it fails once the SMS erased it)."""
    async with rt.db.read() as session:
        job = await session.scalar(select(ProvisioningJob).where(ProvisioningJob.order_id == order_id))
        order = await session.get(Order, order_id)
    assert job is not None and order is not None
    assert job.password_cipher is not None and job.password_key_version is not None
    return rt.password_keys.open(Sealed(job.password_cipher, job.password_key_version), order.order_no)


async def attempts_of(rt: Runtime, order_id: int) -> list[ProvisioningAttempt]:
    async with rt.db.read() as session:
        return list(
            await session.scalars(
                select(ProvisioningAttempt)
                .where(ProvisioningAttempt.order_id == order_id)
                .order_by(ProvisioningAttempt.number)
            )
        )


async def card_status(rt: Runtime, card_id: int) -> CardStatus:
    async with rt.db.read() as session:
        card = await session.get(Card, card_id)
    assert card is not None
    return card.status


async def database_holds(rt: Runtime, secret: str) -> bool:
    """Whether any value of any row of any table holds `secret` (as text, or as UTF-8 bytes)."""
    needle = secret.encode()
    async with rt.db.read() as session:
        for table in Base.metadata.sorted_tables:
            for row in await session.execute(select(table)):
                for value in row:
                    if isinstance(value, bytes) and needle in value:
                        return True
                    if value is not None and secret in str(value):
                        return True
    return False


async def all_instances(rt: Runtime) -> list[Instance]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(Instance).order_by(Instance.id)))


async def audit_rows(rt: Runtime, entity: str = "order") -> list[AuditEntry]:
    """The audit rows about `entity` (the helpers' own batches are audited too, as `batch`)."""
    async with rt.db.read() as session:
        return list(
            await session.scalars(
                select(AuditEntry).where(AuditEntry.entity == entity).order_by(AuditEntry.id)
            )
        )


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

    async def provision(self, request: ProvisionRequest) -> Active | Accepted:
        self.requests.append(request)
        return await self.inner.provision(request)

    async def check(self, request: ProvisionRequest, task: Task) -> Active | Running:
        self.requests.append(request)
        return await self.inner.check(request, task)

    async def cancel(self, task_id: str) -> None:
        await self.inner.cancel(task_id)

    async def aclose(self) -> None:
        await self.inner.aclose()


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

    async def aclose(self) -> None:
        pass
