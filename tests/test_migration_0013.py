"""Migration 0013 (CANCELLED among the attempt outcomes) on data: down and up again keeps every
attempt; before it a CANCELLED outcome is refused by the CHECK constraint, after it stored, and
going down keeps a cancel's row as REFUSED with its detail."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from models import ProvisioningAttempt
from tests.provisioning_helpers import place_order
from tests.test_migration_0010 import downgrade
from tihuo.migrate import migrate

pytestmark = pytest.mark.usefixtures("catalog")

AT = datetime(2027, 3, 1, 2, 0, tzinfo=UTC)
ATTEMPTS = ProvisioningAttempt.__table__


def _attempt(order_id: int, number: int, outcome: str, detail: str) -> dict[str, object]:
    return {
        "order_id": order_id,
        "number": number,
        "started_at": AT,
        "finished_at": AT,
        "outcome": outcome,
        "detail": detail,
    }


async def _rows(rt) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    async with rt.db.read() as session:
        found = await session.execute(
            select(ATTEMPTS.c.number, ATTEMPTS.c.outcome, ATTEMPTS.c.detail).order_by(ATTEMPTS.c.number)
        )
        return [tuple(row) for row in found.all()]


async def test_0013_lets_an_attempt_be_cancelled_and_going_down_keeps_it_as_refused(rt, member):
    # given an order whose create was accepted and whose task was then cancelled, at the latest version
    placed = await place_order(rt, member.id)
    async with rt.db.write() as session:
        await session.execute(insert(ATTEMPTS).values(_attempt(placed.order_id, 1, "ACCEPTED", "task-1")))
        await session.execute(
            insert(ATTEMPTS).values(
                _attempt(placed.order_id, 2, "CANCELLED", "DELETE of task task-1: cancelled")
            )
        )

    # when the database goes down to 0012
    await downgrade(rt.db.write_engine, "0012")

    # then the cancel's row is kept as REFUSED, with its detail, and 0012 refuses CANCELLED
    down = [(1, "ACCEPTED", "task-1"), (2, "REFUSED", "DELETE of task task-1: cancelled")]
    assert await _rows(rt) == down
    with pytest.raises(IntegrityError):
        async with rt.db.write_engine.begin() as connection:
            await connection.execute(insert(ATTEMPTS).values(_attempt(placed.order_id, 3, "CANCELLED", "x")))
    assert await _rows(rt) == down

    # and back at the latest version every row is there and CANCELLED is stored
    await migrate(rt.db.write_engine)
    async with rt.db.write() as session:
        await session.execute(insert(ATTEMPTS).values(_attempt(placed.order_id, 3, "CANCELLED", "again")))
    assert await _rows(rt) == [*down, (3, "CANCELLED", "again")]
