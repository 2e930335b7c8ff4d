"""Orders: the admin's actions on an order that failed to open or waits on the platform (R7: failed
provisioning must be visible to the admin and recoverable by them; RULES-v2 §3), and the reads of
orders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.ids import parse_id
from models import (
    AttemptOutcome,
    BatchRedemptionDay,
    Card,
    CardBatch,
    CardStatus,
    ChannelShare,
    Instance,
    JobStatus,
    MemberBatchRedemptions,
    Order,
    OrderStatus,
    ProductModel,
    ProductType,
    ProgrammeRedemptionDay,
    ProvisioningJob,
    Redemption,
    Role,
)
from services import audit, order_events
from services.errors import InvalidState, NotFound
from services.login_passwords import draw_password
from services.paging import Page, keyset_page, page_request
from services.provisioners import Refused, TransientFailure, provisioner_from_settings
from services.provisioning_attempts import finish_attempt, open_attempt
from services.redemption_store import cents, programme_shard
from services.runtime import Caller, Runtime

log = logging.getLogger("tihuo.orders")

# ---- admin actions


def _recoverable() -> Any:
    """FAILED, or waiting on a platform task (PROVISIONING with `external_task_id`, RULES-v2 §3):
    the orders an admin may retry or cancel (RULES §5)."""
    return or_(
        Order.status == OrderStatus.FAILED,
        and_(Order.status == OrderStatus.PROVISIONING, Order.external_task_id.is_not(None)),
    )


async def _recoverable_order(session: AsyncSession, order_id: str) -> Order:
    """The order, locked, if it exists and may be retried or cancelled: NotFound / InvalidState otherwise."""
    parsed = parse_id(order_id)
    order = None if parsed is None else await session.get(Order, parsed, with_for_update=True)
    if order is None:
        raise NotFound()
    if not (
        order.status is OrderStatus.FAILED
        or (order.status is OrderStatus.PROVISIONING and order.external_task_id is not None)
    ):
        raise InvalidState(key="INVALID_STATE.order_not_failed")
    return order


async def _leave(session: AsyncSession, order: Order, status: OrderStatus, **values: Any) -> None:
    # conditional on what was read, so of two admins (or an admin and a worker) acting on one order
    # at once only one changes it
    changed = await session.execute(
        update(Order)
        .where(
            Order.id == order.id,
            Order.status == order.status,
            _recoverable(),
            Order.external_task_id.is_(None)
            if order.external_task_id is None
            else Order.external_task_id == order.external_task_id,
        )
        .values(status=status, **values)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:
        raise InvalidState(key="INVALID_STATE.order_not_failed")
    await order_events.status_changed(session, order.id, status)


async def retry_provisioning(rt: Runtime, caller: Caller, order_id: str) -> Order:
    """`retryProvisioning`: a FAILED order goes back to PENDING and its job to the queue with fresh
    attempts (a task it had is forgotten: the create is asked again, under the same idempotency
    key); an order waiting on a platform task has the task looked at now, with a fresh deadline.
    The worker is woken after the commit."""
    caller.require_admin()
    now = rt.now()
    async with rt.db.write() as session:
        order = await _recoverable_order(session, order_id)
        retried = audit.ProvisioningRetried(order.id, order.status, order.failure_reason)
        job_values: dict[str, Any] = {
            "status": JobStatus.QUEUED,
            "run_after": now,
            "lease_until": None,
            "worker_id": None,
            "last_error": None,
            "updated_at": now,
            "polls": 0,
        }
        if order.status is OrderStatus.FAILED:
            await _leave(session, order, OrderStatus.PENDING, failure_reason=None, external_task_id=None)
            job_values |= {"attempts": 0, "accepted_at": None, "deadline_at": None, "reported": None}
        else:
            job_values["deadline_at"] = now + timedelta(seconds=rt.settings.provision_deadline_seconds)
        requeued = await session.execute(
            update(ProvisioningJob)
            .where(ProvisioningJob.order_id == order.id)
            .values(**job_values)
            .execution_options(synchronize_session=False)
        )
        if requeued.rowcount == 0:
            # every order is created with its job; should one be missing, the retry makes it
            sealed = rt.password_keys.seal(draw_password(), order.order_no)
            await session.execute(
                insert(ProvisioningJob).values(
                    order_id=order.id,
                    status=JobStatus.QUEUED,
                    attempts=0,
                    polls=0,
                    run_after=now,
                    created_at=now,
                    updated_at=now,
                    password_cipher=sealed.cipher,
                    password_key_version=sealed.key_version,
                )
            )
        await audit.record(session, rt, caller, retried)
        await session.refresh(order)
    rt.jobs_ready.set()
    return order


async def _cancel_platform_task(rt: Runtime, order_id: int, task_id: str) -> None:
    """DELETE the platform's running task before anything is given back: a card must not return
    while the platform may still open its product. The call is one of the order's attempts:
    CANCELLED, or TRANSIENT / REFUSED as it failed (and the cancel with it)."""
    async with rt.db.write() as session:
        # the job's row held, as a worker's claim holds it, so the attempt's number is not raced
        await session.execute(
            select(ProvisioningJob.id).where(ProvisioningJob.order_id == order_id).with_for_update()
        )
        attempt_id = await open_attempt(session, order_id, rt.now())
    outcome, detail = AttemptOutcome.TRANSIENT, f"DELETE of task {task_id}: no answer"
    provisioner = provisioner_from_settings(rt)
    try:
        await provisioner.cancel(task_id)
        outcome, detail = AttemptOutcome.CANCELLED, f"DELETE of task {task_id}: cancelled"
    except (TransientFailure, Refused) as exc:
        outcome = AttemptOutcome.REFUSED if isinstance(exc, Refused) else AttemptOutcome.TRANSIENT
        detail = f"DELETE of task {task_id}: {exc}"
        log.warning(
            "platform task %s not cancelled: %s", task_id, exc, extra={"event": "provisioning.cancel_failed"}
        )
        raise InvalidState(key="INVALID_STATE.platform_cancel_failed") from None
    finally:
        await provisioner.aclose()
        async with rt.db.write() as session:
            await finish_attempt(session, attempt_id, rt.now(), outcome, detail)


async def cancel_order(rt: Runtime, caller: Caller, order_id: str) -> Order:
    """`cancelOrder`: a FAILED order, or one waiting on a platform task (which the platform is asked
    to cancel first), is CANCELLED and everything its redemption took is given back, in one
    transaction: the card is UNUSED again, the batch's used count and a bare-metal model's stock go
    back, and the redemption is marked cancelled (so the card can be redeemed anew)."""
    caller.require_admin()
    async with rt.db.read() as session:
        parsed = parse_id(order_id)
        seen = None if parsed is None else await session.get(Order, parsed)
    if seen is not None and seen.status is OrderStatus.PROVISIONING and seen.external_task_id is not None:
        await _cancel_platform_task(rt, seen.id, seen.external_task_id)
    now = rt.now()
    async with rt.db.write() as session:
        order = await _recoverable_order(session, order_id)
        if order.status is OrderStatus.PROVISIONING and (
            seen is None or seen.external_task_id != order.external_task_id
        ):
            # the task changed since the platform was asked to drop it: ask again
            raise InvalidState(key="INVALID_STATE.order_not_failed")
        await _leave(session, order, OrderStatus.CANCELLED)
        # the job ends with the order: a worker holding it records nothing, its password goes
        await session.execute(
            update(ProvisioningJob)
            .where(ProvisioningJob.order_id == order.id)
            .values(
                status=JobStatus.FAILED,
                lease_until=None,
                worker_id=None,
                password_cipher=None,
                password_key_version=None,
                reported=None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        card_back = (
            await session.execute(
                update(Card)
                .where(
                    Card.id == order.card_id,
                    Card.status == CardStatus.USED,
                    Card.member_id == order.member_id,
                )
                .values(status=CardStatus.UNUSED, used_at=None, member_id=None)
                .returning(Card.channel_id)
                .execution_options(synchronize_session=False)
            )
        ).one_or_none()
        if card_back is None:
            # the card is not the one this order used up: give nothing back (rolled back whole)
            raise InvalidState()
        await _uncount(session, rt, order, channel_id=card_back.channel_id)
        await session.execute(
            update(CardBatch)
            .where(CardBatch.id == order.batch_id)
            .values(used_count=CardBatch.used_count - 1)
            .execution_options(synchronize_session=False)
        )

        # the model whose stock the redemption took: its batch's, as the redemption's write reads it
        model_id = await session.scalar(
            select(CardBatch.product_model_id).where(CardBatch.id == order.batch_id)
        )
        if model_id is not None:
            await session.execute(
                update(ProductModel)
                .where(ProductModel.id == model_id)
                .values(stock=ProductModel.stock + 1)
                .execution_options(synchronize_session=False)
            )
        await audit.record(session, rt, caller, audit.OrderCancelled(order.id, order.card_id))
        await session.refresh(order)
    return order


async def _uncount(session: AsyncSession, rt: Runtime, order: Order, *, channel_id: int | None) -> None:
    """Everything the redemption counted, counted back: the redemption is cancelled, its day's
    count, the member's count of the batch (where it has a limit) and the channel's used count go
    down by one."""
    now = rt.now()
    redeemed_at = (
        await session.execute(
            update(Redemption)
            .where(Redemption.order_id == order.id, Redemption.cancelled_at.is_(None))
            .values(cancelled_at=now)
            .returning(Redemption.redeemed_at)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if redeemed_at is not None:
        day = redeemed_at.astimezone(rt.settings.zone).date()
        await session.execute(
            update(BatchRedemptionDay)
            .where(
                BatchRedemptionDay.batch_id == order.batch_id,
                BatchRedemptionDay.day == day,
                BatchRedemptionDay.redeemed > 0,
            )
            .values(redeemed=BatchRedemptionDay.redeemed - 1)
            .execution_options(synchronize_session=False)
        )
        price = await session.scalar(select(CardBatch.reference_price).where(CardBatch.id == order.batch_id))
        await session.execute(
            update(ProgrammeRedemptionDay)
            .where(
                ProgrammeRedemptionDay.day == day,
                ProgrammeRedemptionDay.shard == programme_shard(order.card_id),
                ProgrammeRedemptionDay.redeemed > 0,
            )
            .values(
                redeemed=ProgrammeRedemptionDay.redeemed - 1,
                redeemed_cents=ProgrammeRedemptionDay.redeemed_cents - cents(price),
            )
            .execution_options(synchronize_session=False)
        )
    await session.execute(
        update(MemberBatchRedemptions)
        .where(
            MemberBatchRedemptions.member_id == order.member_id,
            MemberBatchRedemptions.batch_id == order.batch_id,
            MemberBatchRedemptions.live_count > 0,
        )
        .values(live_count=MemberBatchRedemptions.live_count - 1)
        .execution_options(synchronize_session=False)
    )
    if channel_id is not None:
        await session.execute(
            update(ChannelShare)
            .where(ChannelShare.batch_id == order.batch_id, ChannelShare.channel_id == channel_id)
            .values(used_count=ChannelShare.used_count - 1)
            .execution_options(synchronize_session=False)
        )


# ---------------------------------------------------------------- reads


@dataclass(frozen=True)
class OrderFilter:
    status: OrderStatus | None = None
    member_id: str | None = None
    product_type: ProductType | None = None


async def get_order(rt: Runtime, caller: Caller, order_id: str) -> Order | None:
    """`order(id)`: admins see any order; a member only their own (anything else is null)."""
    viewer = caller.require_signed_in()
    parsed = parse_id(order_id)
    if parsed is None:
        return None
    async with rt.db.read() as session:
        order = await session.get(Order, parsed)
    if order is None or (viewer.role is not Role.ADMIN and order.member_id != viewer.id):
        return None
    return order


async def list_orders(
    rt: Runtime,
    caller: Caller,
    filter: OrderFilter,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[Order]:
    """`orders`: newest first (admin)."""
    caller.require_admin()
    request = page_request("Order", first, after, offset)
    statement = select(Order)
    if filter.status is not None:
        statement = statement.where(Order.status == OrderStatus(filter.status))
    if filter.product_type is not None:
        statement = statement.where(Order.product_type == ProductType(filter.product_type))
    if filter.member_id is not None:
        member = parse_id(filter.member_id)
        if member is None:
            return Page([], 0, has_next=False, has_previous=request.has_previous)
        statement = statement.where(Order.member_id == member)
    async with rt.db.read() as session:
        return await keyset_page(
            session, statement, kind="Order", key=Order.id, descending=True, request=request
        )


async def my_instances(
    rt: Runtime, caller: Caller, *, first: int | None, after: str | None, offset: int | None
) -> Page[Instance]:
    """`myInstances`: the member's products, newest first."""
    viewer = caller.require_member()
    request = page_request("Instance", first, after, offset)
    statement = select(Instance).where(Instance.member_id == viewer.id)
    async with rt.db.read() as session:
        return await keyset_page(
            session, statement, kind="Instance", key=Instance.id, descending=True, request=request
        )


async def orders_by_ids(rt: Runtime, ids: list[int]) -> dict[int, Order]:
    """For DataLoaders (callers passed their permission check already)."""
    async with rt.db.read() as session:
        return {order.id: order for order in await session.scalars(select(Order).where(Order.id.in_(ids)))}


async def live_orders_by_card(rt: Runtime, card_ids: list[int]) -> dict[int, Order]:
    """Each card's order that is not cancelled (at most one, by a unique index)."""
    async with rt.db.read() as session:
        rows = await session.scalars(
            select(Order).where(Order.card_id.in_(card_ids), Order.status != OrderStatus.CANCELLED)
        )
        return {order.card_id: order for order in rows}


async def instances_by_order(rt: Runtime, order_ids: list[int]) -> dict[int, Instance]:
    async with rt.db.read() as session:
        rows = await session.scalars(select(Instance).where(Instance.order_id.in_(order_ids)))
        return {instance.order_id: instance for instance in rows}
