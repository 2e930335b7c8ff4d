"""Group commit: units of write work handed over at about the same moment share one transaction.

A worker records many small outcomes (a task still running, a create accepted, a product open),
each a few conditional statements. Each in its own transaction, the BEGIN and COMMIT (and on
SQLite the one write lock) cost more than the statements. `GroupCommit.run(work)` queues `work`;
one flushing task runs every queued work in one transaction, in the order given, then commits
once and answers each caller. What arrives meanwhile goes into the next transaction: nobody waits
for a timer, and a quiet process commits each work alone, as before.

Each work must stand on its own (what it reads, it reads in the transaction) and be safe to run
again: when the shared transaction fails, it is rolled back and every work in it runs again in a
transaction of its own, so one failing work fails only its own caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[Any]]


class GroupCommit:
    def __init__(self, transaction: Callable[[], AbstractAsyncContextManager[AsyncSession]]) -> None:
        self._transaction = transaction
        self._queued: list[tuple[Work, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # transactions committed and works run in them, for the benchmarks and the tests
        self.commits = 0
        self.works = 0

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """`work(session)` in a write transaction it may share; its result once that committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((work, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return await future

    async def _flush(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._together(batch)
            except BaseException:
                for _, future in batch:
                    future.cancel()
                raise

    async def _together(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        try:
            async with self._transaction() as session:
                results = [await work(session) for work, _ in batch]
        except Exception as failure:
            if len(batch) == 1:
                _answer(batch[0][1], error=failure)
                return
            for work, future in batch:
                await self._alone(work, future)
            return
        self.commits += 1
        self.works += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            _answer(future, result=result)

    async def _alone(self, work: Work, future: asyncio.Future[Any]) -> None:
        try:
            async with self._transaction() as session:
                result = await work(session)
        except Exception as failure:
            _answer(future, error=failure)
            return
        self.commits += 1
        self.works += 1
        _answer(future, result=result)


def _answer(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a caller that is still waiting (one that was cancelled meanwhile is not)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
