"""The failed-attempt counters under races: a block that lands between the check and the outcome
still wins, for failures and for successes alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from models import AttemptCounter
from services import ratelimit
from services.errors import RateLimited

KEYS = ["user:alice", "ip:203.0.113.9"]


async def _block(rt, subject: str, seconds: int) -> None:
    async with rt.db.write() as session:
        session.add(
            AttemptCounter(
                scope=ratelimit.LOGIN,
                subject=subject,
                failures=0,
                window_started_at=rt.now(),
                strikes=1,
                blocked_until=rt.now() + timedelta(seconds=seconds),
            )
        )


async def test_a_success_is_refused_when_a_block_landed_after_the_check(rt, clock):
    clock.set(clock())
    async with rt.db.read() as session:
        await ratelimit.ensure_allowed(session, rt, ratelimit.LOGIN, KEYS)  # passes: nothing blocked yet
    await _block(rt, "user:alice", 120)  # a concurrent burst reaches the limit meanwhile

    with pytest.raises(RateLimited) as refused:
        async with rt.db.write() as session:
            await ratelimit.clear(session, rt, ratelimit.LOGIN, KEYS)

    assert refused.value.retry_after_seconds == 120


async def test_a_failure_after_the_block_landed_is_refused_and_counts_nothing(rt, clock):
    clock.set(clock())
    await _block(rt, "ip:203.0.113.9", 60)

    with pytest.raises(RateLimited):
        async with rt.db.write() as session:
            await ratelimit.record_failure(session, rt, ratelimit.LOGIN, KEYS)

    async with rt.db.read() as session:
        subjects = (await session.scalars(select(AttemptCounter.subject))).all()
    assert subjects == ["ip:203.0.113.9"]


async def test_a_success_forgets_failures_but_not_a_block_once_it_is_over(rt, clock):
    clock.set(clock())
    async with rt.db.write() as session:
        for _ in range(3):
            await ratelimit.record_failure(session, rt, ratelimit.LOGIN, KEYS)
    async with rt.db.write() as session:
        await ratelimit.clear(session, rt, ratelimit.LOGIN, KEYS)

    async with rt.db.read() as session:
        failures = (
            await session.scalars(select(AttemptCounter.failures).order_by(AttemptCounter.subject))
        ).all()
    assert failures == [0, 0]
