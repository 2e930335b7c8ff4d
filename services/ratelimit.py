"""Failed-attempt limits (login, download password, password change, unknown card codes), kept in
the database so every API process shares them.

Each subject (a username, a member, a client address) may fail `limit` times within a window;
the failure that reaches the limit blocks it for one window, and each further block in a row
doubles (growing back-off). While blocked, every attempt is refused, even a correct one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from models import AttemptCounter
from services.errors import RateLimited
from services.runtime import Runtime

MAX_BACKOFF_DOUBLINGS = 6

LOGIN = "login"
DOWNLOAD_PASSWORD = "download-password"
CHANGE_PASSWORD = "change-password"
CARD_CODE = "card-code"


def subjects(**parts: object) -> list[str]:
    """Subjects of one attempt, e.g. subjects(user="alice", ip="127.0.0.1") -> ["user:alice", "ip:127.0.0.1"]."""
    return [f"{kind}:{value}" for kind, value in parts.items() if value not in (None, "")]


def blocked(until: Any, now: Any) -> Any:
    """The rule: a subject is blocked while its `blocked_until` lies ahead. For a stored value (None:
    never blocked) and, given columns or bind parameters, as the SQL condition (the redemption's
    look-up asks it in its one statement: services.redemption_store)."""
    if isinstance(until, ColumnElement):
        return until > now
    return until is not None and until > now


def blocking(counters: Any, *, scope: Any, subjects: Any, now: Any) -> Any:
    """The condition on an attempt_counters table (or alias) for the rows that block now."""
    return and_(
        counters.c.scope == scope, counters.c.subject.in_(subjects), blocked(counters.c.blocked_until, now)
    )


# built once: this runs on every attempt
_COUNTERS = AttemptCounter.__table__
_BLOCKED = select(_COUNTERS.c.blocked_until).where(
    blocking(
        _COUNTERS, scope=bindparam("scope"), subjects=bindparam("keys", expanding=True), now=bindparam("now")
    )
)


async def ensure_allowed(session: AsyncSession, rt: Runtime, scope: str, keys: Iterable[str]) -> None:
    """Raise RateLimited when any of the subjects is blocked now."""
    keys = list(keys)
    if not keys:
        return
    now = rt.now()
    rows = list(await session.scalars(_BLOCKED, {"scope": scope, "keys": keys, "now": now}))
    if rows:
        raise RateLimited(seconds_until(max(rows), now))


async def record_failure(session: AsyncSession, rt: Runtime, scope: str, keys: Iterable[str]) -> None:
    """Count one failure against each subject; must run inside a write transaction that commits.

    Raises RateLimited, counting nothing (the caller's transaction rolls back), when a subject was
    blocked since `ensure_allowed` looked: a concurrent attempt in another process reached the
    limit meanwhile, and this one must not become an answer past the limit."""
    settings = rt.settings
    window = timedelta(seconds=settings.failed_attempt_window_seconds)
    now = rt.now()
    for key in keys:
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            insert(AttemptCounter)
            .values(scope=scope, subject=key, failures=0, window_started_at=now, strikes=0)
            .on_conflict_do_nothing()
        )
        counter = await session.scalar(
            select(AttemptCounter)
            .where(AttemptCounter.scope == scope, AttemptCounter.subject == key)
            .with_for_update()
        )
        assert counter is not None
        if blocked(counter.blocked_until, now):
            raise RateLimited(seconds_until(counter.blocked_until, now))
        _count(counter, now, window, settings.failed_attempt_limit)


def _count(counter: AttemptCounter, now: datetime, window: timedelta, limit: int) -> None:
    if counter.blocked_until is not None and now >= counter.blocked_until + window:
        # a whole quiet window after the last block: forgive earlier strikes
        counter.strikes = 0
    if now - counter.window_started_at >= window:
        counter.failures = 0
        counter.window_started_at = now
    counter.failures += 1
    if counter.failures >= limit:
        counter.strikes += 1
        counter.blocked_until = now + window * (2 ** min(counter.strikes - 1, MAX_BACKOFF_DOUBLINGS))
        counter.failures = 0
        counter.window_started_at = now


async def clear(session: AsyncSession, rt: Runtime, scope: str, keys: Iterable[str]) -> None:
    """A success: its subjects' failures are forgotten. Refused with RateLimited instead when a
    subject was blocked since `ensure_allowed` looked (concurrent wrong attempts reached the limit
    meanwhile, maybe in another process): a burst of guesses must not let a right one through."""
    now = rt.now()
    counters = list(
        await session.scalars(
            select(AttemptCounter)
            .where(AttemptCounter.scope == scope, AttemptCounter.subject.in_(list(keys)))
            .with_for_update()
        )
    )
    ahead = [c.blocked_until for c in counters if blocked(c.blocked_until, now)]
    if ahead:
        raise RateLimited(seconds_until(max(ahead), now))
    for counter in counters:
        counter.failures = 0


def seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))
