"""The one seam every change of an order's status goes through (shared by several features: live
status, webhooks). Called in the same unit of work, right after the UPDATE or INSERT that changed
the status, so whatever it writes commits or rolls back with the change.

The redemption's own write (services/redemption_store.py) makes the PENDING order in one statement
on PostgreSQL and does not call it; what must happen for a new order is written inside that write.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from models import OrderStatus


async def status_changed(session: AsyncSession, order_id: int, status: OrderStatus) -> None:
    """Order `order_id` has just become `status` in `session`'s transaction. Nothing listens yet on
    this branch: the features that do add their writes here."""
