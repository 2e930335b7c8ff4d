"""Channels (RULES-v2 §5): the places a batch's cards are handed to, with how many cards each holds
and how many of those are used, from the per-batch shares (never a count of cards)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from core.ids import parse_id
from models import CardBatch, Channel, ChannelShare
from services import audit
from services.errors import FieldProblem, InvalidInput, NotFound
from services.runtime import Caller, Runtime

NAME_MAX = 100
REMARK_MAX = 500


@dataclass(frozen=True)
class ChannelView:
    id: int
    name: str
    remark: str | None
    created_at: datetime
    card_count: int
    used_count: int


@dataclass(frozen=True)
class Share:
    """A batch's cards in one channel (`channel_id` None: in none)."""

    channel_id: int | None
    card_count: int
    used_count: int


def _view(channel: Channel, card_count: int | None, used_count: int | None) -> ChannelView:
    return ChannelView(
        id=channel.id,
        name=channel.name,
        remark=channel.remark,
        created_at=channel.created_at,
        card_count=card_count or 0,
        used_count=used_count or 0,
    )


def _counted(*conditions: object):  # type: ignore[no-untyped-def]
    """Channels with their cards and used cards over every batch: one grouped query on the shares."""
    return (
        select(Channel, func.sum(ChannelShare.card_count), func.sum(ChannelShare.used_count))
        .outerjoin(ChannelShare, ChannelShare.channel_id == Channel.id)
        .where(*conditions)
        .group_by(Channel.id)
        .order_by(Channel.id)
    )


def _checked_name(name: str, problems: list[FieldProblem]) -> str:
    name = name.strip()
    if not name:
        problems.append(FieldProblem("name", "field.blank"))
    elif len(name) > NAME_MAX:
        problems.append(FieldProblem("name", "field.too_long", {"max": NAME_MAX}))
    return name


def _checked_remark(remark: str | None, problems: list[FieldProblem]) -> str | None:
    remark = (remark or "").strip() or None
    if remark is not None and len(remark) > REMARK_MAX:
        problems.append(FieldProblem("remark", "field.too_long", {"max": REMARK_MAX}))
    return remark


async def list_channels(rt: Runtime, caller: Caller) -> list[ChannelView]:
    """`channels`: every channel, oldest first, with its counts."""
    caller.require_admin()
    async with rt.db.read() as session:
        return [_view(*row) for row in (await session.execute(_counted())).all()]


async def channels_by_ids(rt: Runtime, ids: list[int]) -> dict[int, ChannelView]:
    """For DataLoaders (callers passed their permission check already)."""
    async with rt.db.read() as session:
        rows = (await session.execute(_counted(Channel.id.in_(ids)))).all()
    return {row[0].id: _view(*row) for row in rows}


async def shares_by_batch(rt: Runtime, batches: list[CardBatch]) -> dict[int, list[Share]]:
    """How each batch's cards are split over channels: its channels' shares (those holding cards),
    then the cards in no channel (if any), from the batch's own counters."""
    async with rt.db.read() as session:
        rows = (
            await session.scalars(
                select(ChannelShare)
                .where(ChannelShare.batch_id.in_([b.id for b in batches]), ChannelShare.card_count > 0)
                .order_by(ChannelShare.batch_id, ChannelShare.channel_id)
            )
        ).all()
    found: dict[int, list[Share]] = {batch.id: [] for batch in batches}
    for row in rows:
        found[row.batch_id].append(Share(row.channel_id, row.card_count, row.used_count))
    for batch in batches:
        shares = found[batch.id]
        outside = batch.quantity - sum(s.card_count for s in shares)
        if outside:
            shares.append(Share(None, outside, batch.used_count - sum(s.used_count for s in shares)))
    return found


async def create_channel(rt: Runtime, caller: Caller, name: str, remark: str | None) -> ChannelView:
    """`createChannel`: a name (1–100 characters, unique) and an optional remark."""
    viewer = caller.require_admin()
    problems: list[FieldProblem] = []
    name = _checked_name(name, problems)
    remark = _checked_remark(remark, problems)
    if problems:
        raise InvalidInput(problems)
    async with rt.db.write() as session:
        if await session.scalar(select(Channel.id).where(Channel.name == name)) is not None:
            raise InvalidInput([FieldProblem("name", "field.taken")])
        channel = Channel(name=name, remark=remark, created_by=viewer.id, created_at=rt.now())
        session.add(channel)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            raise InvalidInput([FieldProblem("name", "field.taken")]) from None
        await audit.record(session, rt, caller, audit.ChannelCreated(channel.id, name, remark))
    return _view(channel, 0, 0)


async def update_channel(
    rt: Runtime, caller: Caller, channel_id: str, name: str | None, remark: str | None
) -> ChannelView:
    """`updateChannel`: rename, or set the remark (an empty one clears it); what is not given stays."""
    caller.require_admin()
    problems: list[FieldProblem] = []
    new_name = None if name is None else _checked_name(name, problems)
    new_remark = None if remark is None else _checked_remark(remark, problems)
    parsed = parse_id(channel_id)
    async with rt.db.write() as session:
        channel = None if parsed is None else await session.get(Channel, parsed, with_for_update=True)
        if channel is None:
            raise NotFound()
        if problems:
            raise InvalidInput(problems)
        before, after = {}, {}
        if new_name is not None and new_name != channel.name:
            taken = await session.scalar(
                select(Channel.id).where(Channel.name == new_name, Channel.id != channel.id)
            )
            if taken is not None:
                raise InvalidInput([FieldProblem("name", "field.taken")])
            before["name"], after["name"] = channel.name, new_name
            channel.name = new_name
        if remark is not None and new_remark != channel.remark:
            before["remark"], after["remark"] = channel.remark, new_remark
            channel.remark = new_remark
        if after:
            try:
                async with session.begin_nested():
                    await session.flush()
            except IntegrityError:
                raise InvalidInput([FieldProblem("name", "field.taken")]) from None
            await audit.record(session, rt, caller, audit.ChannelUpdated(channel.id, before, after))
        counts = (
            await session.execute(
                select(func.sum(ChannelShare.card_count), func.sum(ChannelShare.used_count)).where(
                    ChannelShare.channel_id == channel.id
                )
            )
        ).one()
    return _view(channel, *counts)
