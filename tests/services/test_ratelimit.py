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
    window = timedelta(seconds=rt.settings.failed_attempt_window_seconds)
    limit = rt.settings.failed_attempt_limit
    # given failures up to the limit: a first block, of one window
    async with rt.db.write() as session:
        for _ in range(limit):
            await ratelimit.record_failure(session, rt, ratelimit.LOGIN, KEYS)
    first_block = clock() + window
    assert await _blocked_until(rt) == [first_block, first_block]

    # when the block is over, a success clears the failures...
    clock.set(first_block + timedelta(seconds=1))
    async with rt.db.write() as session:
        for _ in range(3):
            await ratelimit.record_failure(session, rt, ratelimit.LOGIN, KEYS)
    async with rt.db.write() as session:
        await ratelimit.clear(session, rt, ratelimit.LOGIN, KEYS)
    assert await _failures(rt) == [0, 0]

    # ...but not the block before: reaching the limit again blocks for twice as long
    async with rt.db.write() as session:
        for _ in range(limit):
            await ratelimit.record_failure(session, rt, ratelimit.LOGIN, KEYS)
    second_block = clock() + 2 * window
    assert await _blocked_until(rt) == [second_block, second_block]
    with pytest.raises(RateLimited) as refused:
        async with rt.db.read() as session:
            await ratelimit.ensure_allowed(session, rt, ratelimit.LOGIN, KEYS)
    assert refused.value.retry_after_seconds == 2 * rt.settings.failed_attempt_window_seconds


async def _failures(rt) -> list[int]:
    async with rt.db.read() as session:
        return list(await session.scalars(select(AttemptCounter.failures).order_by(AttemptCounter.subject)))


async def _blocked_until(rt) -> list[object]:
    async with rt.db.read() as session:
        return list(
            await session.scalars(select(AttemptCounter.blocked_until).order_by(AttemptCounter.subject))
        )
