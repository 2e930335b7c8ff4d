"""Every call to the platform and every answer from it, as a row on the order (RULES-v2 §3,
v2/provisioning.graphql `ProvisioningAttempt`): opened when a worker makes the call, finished with
its outcome in the same transaction that records what the answer changed, so the list never says
more or less than happened. Details are cut and carry no password.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import AttemptOutcome, ProvisioningAttempt
from services.access import Audience, allows
from services.runtime import Caller, Runtime
from services.signed_http import redact

DETAIL_MAX = 500  # provisioning_attempts.detail is VARCHAR(500)


def cut(detail: str | None, *secrets: str | None) -> str | None:
    """The detail as it may be kept: passwords blanked out first, then cut, so no part survives."""
    return None if detail is None else redact(" ".join(detail.split()), *secrets)[:DETAIL_MAX]


async def _next_number(session: AsyncSession, order_id: int) -> int:
    """The order's next attempt number; the caller holds the order's job row, so it is not raced."""
    last = await session.scalar(
        select(func.max(ProvisioningAttempt.number)).where(ProvisioningAttempt.order_id == order_id)
    )
    return (last or 0) + 1


async def open_attempt(session: AsyncSession, order_id: int, now: datetime) -> int:
    """A call begins: its row, with no outcome yet; returns its id."""
    return (await open_attempts(session, [order_id], now))[order_id]


async def open_attempts(session: AsyncSession, order_ids: list[int], now: datetime) -> dict[int, int]:
    """`open_attempt` for several orders at once (a worker's batch of claims, whose job rows the
    caller holds): two statements whatever their number. Returns each order's new attempt id."""
    if not order_ids:
        return {}
    last = dict(
        (
            await session.execute(
                select(ProvisioningAttempt.order_id, func.max(ProvisioningAttempt.number))
                .where(ProvisioningAttempt.order_id.in_(order_ids))
                .group_by(ProvisioningAttempt.order_id)
            )
        ).all()
    )
    result = await session.execute(
        insert(ProvisioningAttempt).returning(
            ProvisioningAttempt.order_id, ProvisioningAttempt.id, sort_by_parameter_order=True
        ),
        [
            {"order_id": order_id, "number": last.get(order_id, 0) + 1, "started_at": now}
            for order_id in order_ids
        ],
    )
    return {order_id: attempt_id for order_id, attempt_id in result.all()}


async def finish_attempt(
    session: AsyncSession, attempt_id: int, now: datetime, outcome: AttemptOutcome, detail: str | None
) -> None:
    await session.execute(
        update(ProvisioningAttempt)
        .where(ProvisioningAttempt.id == attempt_id)
        .values(finished_at=now, outcome=outcome, detail=cut(detail))
        .execution_options(synchronize_session=False)
    )


async def record_answer(
    session: AsyncSession, order_id: int, now: datetime, outcome: AttemptOutcome, detail: str
) -> None:
    """An answer that came without a call of ours (the platform's callback): started and finished now."""
    await session.execute(
        insert(ProvisioningAttempt).values(
            order_id=order_id,
            number=await _next_number(session, order_id),
            started_at=now,
            finished_at=now,
            outcome=outcome,
            detail=cut(detail),
        )
    )


async def lose_open_attempts(
    session: AsyncSession, order_id: int, now: datetime, worker_id: str | None
) -> None:
    """The worker that made these calls died or lost its lease: they end as LEASE_LOST."""
    await session.execute(
        update(ProvisioningAttempt)
        .where(ProvisioningAttempt.order_id == order_id, ProvisioningAttempt.finished_at.is_(None))
        .values(
            finished_at=now,
            outcome=AttemptOutcome.LEASE_LOST,
            detail=cut(f"worker {worker_id or '?'} lost the job before the answer was recorded"),
        )
        .execution_options(synchronize_session=False)
    )


async def attempts_by_order(
    rt: Runtime, caller: Caller, order_ids: list[int]
) -> dict[int, list[ProvisioningAttempt]]:
    """Each order's attempts in order, for a DataLoader; a caller who is not an admin gets none."""
    if not allows(caller, Audience.ADMIN):
        return {order_id: [] for order_id in order_ids}
    found: dict[int, list[ProvisioningAttempt]] = {order_id: [] for order_id in order_ids}
    async with rt.db.read() as session:
        rows = await session.scalars(
            select(ProvisioningAttempt)
            .where(ProvisioningAttempt.order_id.in_(order_ids))
            .order_by(ProvisioningAttempt.order_id, ProvisioningAttempt.number)
        )
        for row in rows:
            found[row.order_id].append(row)
    return found
