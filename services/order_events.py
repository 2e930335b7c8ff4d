"""What follows an order's change of status, in the same unit of work as the change (RULES-v2
§2 and §4): the ORDER_ACTIVE / ORDER_FAILED / ORDER_CANCELLED webhooks (services.webhook_outbox),
and the announcement to the live subscriptions (services/live.py).

`status_changed` is called right after every statement that changes an order's status (claim →
PROVISIONING, ACTIVE, FAILED, requeue and retry → PENDING, cancel → CANCELLED), so what it writes
commits or rolls back with the change. Webhooks: an outbox message where an enabled endpoint
wants the event. Live status: on PostgreSQL `pg_notify` in the transaction (delivered when it
commits, never when it rolls back) on one channel with a small payload, `order:member:STATUS`;
every API process LISTENs on one connection of its own (`relay`) and fans the notices out
in-process. On SQLite, where the API and its worker share one process, the notice goes to the
process's hub once the transaction has committed.

The redemption's write makes the PENDING order without this function: its PostgreSQL statement
notifies itself (`notify_column`) and writes its card.redeemed message; on SQLite the service
calls `order_placed` after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from core.notify import Hub, Listener
from models import Instance, Order, OrderStatus, WebhookEvent
from models.base import utcnow
from services import webhook_outbox as outbox

WEBHOOK_EVENTS = {
    OrderStatus.ACTIVE: WebhookEvent.ORDER_ACTIVE,
    OrderStatus.FAILED: WebhookEvent.ORDER_FAILED,
    OrderStatus.CANCELLED: WebhookEvent.ORDER_CANCELLED,
}
CHANNEL = "tihuo_orders"
# the LISTEN connection's application_name (pg_stat_activity)
LISTENER_NAME = "tihuo-notices"


@dataclass(frozen=True)
class OrderNotice:
    order_id: int
    member_id: int
    status: OrderStatus

    @property
    def keys(self) -> tuple[tuple[str, int], ...]:
        """Who is waiting for it: watchers of the order, and of its member's orders."""
        return (("order", self.order_id), ("member", self.member_id))

    @classmethod
    def parse(cls, payload: str) -> OrderNotice | None:
        order_id, _, rest = payload.partition(":")
        member_id, _, status = rest.partition(":")
        try:
            return cls(int(order_id), int(member_id), OrderStatus(status))
        except ValueError:
            return None


def notify_column(order_id: Any, member_id: Any, status: OrderStatus) -> Any:
    """PostgreSQL: the `pg_notify` call announcing `status` for the order, for a statement's select
    list (a CTE that only selects would never run). `status` is one of the enum's own values."""
    payload = func.concat_ws(
        literal_column("':'"),
        cast(order_id, String),
        cast(member_id, String),
        literal_column(f"'{OrderStatus(status).value}'"),
    )
    return func.pg_notify(literal_column(f"'{CHANNEL}'"), payload)


async def status_changed(session: AsyncSession, order_id: int, status: OrderStatus) -> None:
    """The order `order_id` now has `status` (written, not yet committed, in `session`): queue its
    webhook, and announce it when the transaction commits."""
    await statuses_changed(session, [order_id], status)


async def statuses_changed(session: AsyncSession, order_ids: list[int], status: OrderStatus) -> None:
    """`status_changed` for several orders at once (a worker's batch of claims): one statement
    announces them all."""
    if not order_ids:
        return
    for order_id in order_ids:
        await _queue_webhook(session, order_id, status)
    database = Database.of(session)
    if not database.is_sqlite:
        await session.execute(
            select(notify_column(Order.id, Order.member_id, status)).where(Order.id.in_(order_ids))
        )
        return
    rows = (await session.execute(select(Order.id, Order.member_id).where(Order.id.in_(order_ids)))).all()
    notices = [OrderNotice(order_id, member_id, OrderStatus(status)) for order_id, member_id in rows]

    def announce() -> None:
        for notice in notices:
            publish(database.hub, notice)

    database.after_commit(session, announce)


async def _queue_webhook(session: AsyncSession, order_id: int, status: OrderStatus) -> None:
    event = WEBHOOK_EVENTS.get(status)
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


def order_placed(database: Database, order: Order) -> None:
    """After the redemption's commit: its new PENDING order (on PostgreSQL the statement said so)."""
    if database.is_sqlite:
        publish(database.hub, OrderNotice(order.id, order.member_id, OrderStatus.PENDING))


def publish(hub: Hub, notice: OrderNotice) -> None:
    hub.publish(notice.keys, notice)


def relay(database: Database) -> Listener:
    """PostgreSQL: the process's one LISTEN connection, feeding its hub; after a reconnect every
    watcher reads its orders again (notices sent meanwhile are lost)."""
    hub = database.hub

    def received(payload: str) -> None:
        notice = OrderNotice.parse(payload)
        if notice is not None:
            publish(hub, notice)

    return Listener(lambda: database.connect_asyncpg(LISTENER_NAME), CHANNEL, received, hub.all_missed)
