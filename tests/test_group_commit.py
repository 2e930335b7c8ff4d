"""Group commit (core/group_commit.py) on the real database: works handed over at the same moment
share one transaction; a failing one fails only its own caller and leaves nothing behind; a work
alone commits alone."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from models import Role, User
from services.accounts import create_user
from services.runtime import Runtime


async def _members(rt: Runtime, count: int) -> list[int]:
    return [
        (await create_user(rt, username=f"grouped-{i}", password="a long password 1", role=Role.MEMBER)).id
        for i in range(count)
    ]


def _rename(user_id: int, name: str):  # type: ignore[no-untyped-def]
    async def work(session: AsyncSession) -> str:
        await session.execute(update(User).where(User.id == user_id).values(phone=name))
        return name

    return work


async def _remarks(db: Database, ids: list[int]) -> dict[int, str | None]:
    async with db.read() as session:
        return dict((await session.execute(select(User.id, User.phone).where(User.id.in_(ids)))).all())


async def test_works_handed_over_together_share_one_commit_and_each_gets_its_result(rt: Runtime) -> None:
    ids = await _members(rt, 6)
    group = rt.db.group
    commits, works = group.commits, group.works

    results = await asyncio.gather(*(rt.db.write_shared(_rename(i, f"r{i}")) for i in ids))

    assert results == [f"r{i}" for i in ids]
    assert await _remarks(rt.db, ids) == {i: f"r{i}" for i in ids}
    # all six were queued before the flushing task began: one commit for them
    assert (group.commits - commits, group.works - works) == (1, 6)


async def test_a_failing_work_fails_only_its_caller_and_leaves_nothing_behind(rt: Runtime) -> None:
    ids = await _members(rt, 4)

    async def half_done_then_fails(session: AsyncSession) -> None:
        await session.execute(update(User).where(User.id == ids[0]).values(phone="half"))
        raise ValueError("refused by the work")

    first = asyncio.ensure_future(rt.db.write_shared(_rename(ids[1], "first")))
    await asyncio.sleep(0)  # the first is under way: the next three are queued together
    together = [
        rt.db.write_shared(_rename(ids[2], "second")),
        rt.db.write_shared(half_done_then_fails),
        rt.db.write_shared(_rename(ids[3], "third")),
    ]
    outcomes = await asyncio.gather(first, *together, return_exceptions=True)

    assert outcomes[:2] == ["first", "second"] and outcomes[3] == "third"
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "refused by the work"
    assert await _remarks(rt.db, ids) == {ids[0]: None, ids[1]: "first", ids[2]: "second", ids[3]: "third"}


async def test_a_work_alone_commits_alone_and_its_after_commit_callbacks_run(rt: Runtime) -> None:
    (member,) = await _members(rt, 1)
    ran: list[str] = []

    async def work(session: AsyncSession) -> int:
        await session.execute(update(User).where(User.id == member).values(phone="alone"))
        Database.after_commit(session, lambda: ran.append("after"))
        return int(await session.scalar(select(func.count()).select_from(User).where(User.id == member)) or 0)

    commits = rt.db.group.commits
    assert await rt.db.write_shared(work) == 1
    assert ran == ["after"] and rt.db.group.commits == commits + 1
    assert await _remarks(rt.db, [member]) == {member: "alone"}


async def test_a_caller_cancelled_while_waiting_does_not_stop_the_others(rt: Runtime) -> None:
    ids = await _members(rt, 3)
    first = asyncio.ensure_future(rt.db.write_shared(_rename(ids[0], "kept")))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(rt.db.write_shared(_rename(ids[1], "cancelled caller")))
    other = asyncio.ensure_future(rt.db.write_shared(_rename(ids[2], "other")))
    await asyncio.sleep(0)
    waiting.cancel()

    assert await first == "kept" and await other == "other"
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # its work was already queued: it ran with the others (as a write that was under way would)
    assert await _remarks(rt.db, ids) == {ids[0]: "kept", ids[1]: "cancelled caller", ids[2]: "other"}
