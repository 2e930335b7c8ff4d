"""What follows an order's change of status, in the same unit of work as the change: the
ORDER_ACTIVE / ORDER_FAILED / ORDER_CANCELLED webhooks (services.webhook_outbox).

Called right after every UPDATE or INSERT that changes an order's status (claim → PROVISIONING,
ACTIVE, FAILED, requeue and retry → PENDING, cancel → CANCELLED). The redemption's own write makes
the PENDING order without it: its card.redeemed message is written inside that write.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import Instance, Order, OrderStatus, WebhookEvent
from models.base import utcnow
from services import webhook_outbox as outbox

EVENTS = {
    OrderStatus.ACTIVE: WebhookEvent.ORDER_ACTIVE,
    OrderStatus.FAILED: WebhookEvent.ORDER_FAILED,
    OrderStatus.CANCELLED: WebhookEvent.ORDER_CANCELLED,
}


async def status_changed(session: AsyncSession, order_id: int, status: OrderStatus) -> None:
    """The order `order_id` now has `status` (written, not yet committed, in `session`)."""
    event = EVENTS.get(status)
    if event is None or not await session.scalar(outbox.anyone_wants(event).select()):
        return
    order = await session.scalar(
        select(Order).where(Order.id == order_id).execution_options(populate_existing=True)
    )
    if order is None:
        return
    data = {"order": outbox.order_data(order)}
    if status is OrderStatus.ACTIVE:
        instance = await session.scalar(select(Instance).where(Instance.order_id == order_id))
        data["instance"] = None if instance is None else outbox.instance_data(instance)
    await outbox.emit(session, event, utcnow(), data)
