"""Work on many cards at once (RULES-v2 §5): a run of one batch's cards by seq, disabled or enabled,
or handed to a channel, in one statement on the cards; and a batch's validity moved. Each is one
audit entry with its counts, and the batch's and channels' counters change in the same transaction.

Used cards are never touched: their status stays USED and they keep the channel they were used in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.ids import parse_id
from models import Card, CardBatch, CardStatus, Channel, ChannelShare, WebhookEvent
from services import audit
from services import webhook_outbox as outbox
from services.errors import FieldProblem, InvalidInput, NotFound
from services.runtime import Caller, Runtime

CARDS = Card.__table__
SHARES = ChannelShare.__table__
# PostgreSQL: range assignments of one batch take turns under this advisory lock (key + batch id),
# so each reads the channels its cards come from exactly; redemptions never wait for it
RANGE_LOCK_BASE = 0x54484300 << 32


@dataclass(frozen=True)
class CardRange:
    """A contiguous run of one batch's cards by seq, both ends included."""

    batch_id: str
    from_seq: int
    to_seq: int


@dataclass(frozen=True)
class Assigned:
    assigned: int
    channel_id: int | None


def _range_problems(batch: CardBatch, wanted: CardRange) -> list[FieldProblem]:
    problems = []
    if not 1 <= wanted.from_seq <= batch.quantity:
        problems.append(
            FieldProblem("range.fromSeq", "field.out_of_range", {"min": 1, "max": batch.quantity})
        )
    if wanted.to_seq < wanted.from_seq:
        problems.append(FieldProblem("range.toSeq", "field.before_from_seq"))
    elif wanted.to_seq > batch.quantity:
        problems.append(
            FieldProblem("range.toSeq", "field.out_of_range", {"min": wanted.from_seq, "max": batch.quantity})
        )
    return problems


async def _batch_of(session: AsyncSession, wanted: CardRange, *, lock: bool = False) -> CardBatch:
    parsed = parse_id(wanted.batch_id)
    batch = None if parsed is None else await session.get(CardBatch, parsed, with_for_update=lock)
    if batch is None:
        raise NotFound()
    return batch


def checked_range(batch: CardBatch, wanted: CardRange) -> None:
    """InvalidInput unless the range lies within the batch (1 ≤ fromSeq ≤ toSeq ≤ quantity)."""
    problems = _range_problems(batch, wanted)
    if problems:
        raise InvalidInput(problems)


def _in_range(batch_id: int, wanted: CardRange) -> Any:
    return and_(CARDS.c.batch_id == batch_id, CARDS.c.seq.between(wanted.from_seq, wanted.to_seq))


async def set_range_status(
    rt: Runtime, caller: Caller, wanted: CardRange, status: CardStatus
) -> tuple[int, CardBatch]:
    """`setCardRangeStatus`: UNUSED → DISABLED or back for the range's cards that have the other
    status; used cards are left alone and not counted. Returns how many changed, and the batch."""
    caller.require_admin()
    status = CardStatus(status)
    async with rt.db.write() as session:
        batch = await _batch_of(session, wanted)
        problems = _range_problems(batch, wanted)
        if status is CardStatus.USED:
            problems.append(
                FieldProblem(
                    "status", "field.not_in_options", {"value": "USED", "allowed": "UNUSED, DISABLED"}
                )
            )
        if problems:
            raise InvalidInput(problems)
        other = CardStatus.UNUSED if status is CardStatus.DISABLED else CardStatus.DISABLED
        # conditional on the other status: a card a redemption claims meanwhile is not touched
        changed = (
            await session.execute(
                update(CARDS)
                .where(_in_range(batch.id, wanted), CARDS.c.status == other)
                .values(status=status)
            )
        ).rowcount or 0
        delta = changed if status is CardStatus.DISABLED else -changed
        if changed:
            await session.execute(
                update(CardBatch)
                .where(CardBatch.id == batch.id)
                .values(disabled_count=CardBatch.disabled_count + delta)
                .execution_options(synchronize_session=False)
            )
        await audit.record(
            session,
            rt,
            caller,
            audit.CardRangeStatusSet(batch.id, wanted.from_seq, wanted.to_seq, other, status, changed),
        )
        await session.refresh(batch)
        if changed:
            # one event for the range, with its bounds and how many cards changed (not one per card)
            await outbox.emit(
                session,
                WebhookEvent.CARD_STATUS_CHANGED,
                rt.now(),
                outbox.card_status_data(batch.id, wanted.from_seq, wanted.to_seq, other, status, changed),
            )
    return changed, batch


async def assign_range(rt: Runtime, caller: Caller, wanted: CardRange, channel_id: str | None) -> Assigned:
    """`assignCardsToChannel`: the range's cards that are not used and not in that channel already
    go into it (channel None: into none). Returns how many moved."""
    caller.require_admin()
    async with rt.db.write() as session:
        batch = await _batch_of(session, wanted)
        checked_range(batch, wanted)
        target = None
        if channel_id is not None:
            target = parse_id(channel_id)
            if target is None or await session.get(Channel, target) is None:
                raise NotFound()
        if rt.db.dialect == "postgresql":
            await session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": RANGE_LOCK_BASE + batch.id}
            )
            taken = await _move_postgres(session, batch.id, wanted, target)
        else:
            # SQLite: one writer at a time, so the count read first is what the update changes
            taken = await _move_sqlite(session, batch.id, wanted, target)
        assigned = sum(taken.values())
        await _recount_shares(session, batch.id, taken, target, assigned)
        await audit.record(
            session,
            rt,
            caller,
            audit.CardsAssigned(
                batch.id,
                wanted.from_seq,
                wanted.to_seq,
                target,
                assigned,
                {
                    ("none" if source is None else str(source)): n
                    for source, n in sorted(taken.items(), key=_by_id)
                },
            ),
        )
    return Assigned(assigned=assigned, channel_id=target)


def _by_id(item: tuple[int | None, int]) -> int:
    return -1 if item[0] is None else item[0]


def _movable(batch_id: int, wanted: CardRange, target: int | None, cards: Any = CARDS) -> Any:
    return and_(
        cards.c.batch_id == batch_id,
        cards.c.seq.between(wanted.from_seq, wanted.to_seq),
        cards.c.status != CardStatus.USED,
        cards.c.channel_id.is_distinct_from(target),
    )


async def _move_postgres(
    session: AsyncSession, batch_id: int, wanted: CardRange, target: int | None
) -> dict[int | None, int]:
    """One statement: the update returns each moved card's old channel (read from the same rows
    joined as they were), counted by channel."""
    old = CARDS.alias("old")
    moved = (
        update(CARDS)
        .where(CARDS.c.id == old.c.id, _movable(batch_id, wanted, target))
        .values(channel_id=target)
        .returning(old.c.channel_id.label("source"))
        .cte("moved")
    )
    rows = await session.execute(select(moved.c.source, func.count()).group_by(moved.c.source))
    return {source: n for source, n in rows.all()}


async def _move_sqlite(
    session: AsyncSession, batch_id: int, wanted: CardRange, target: int | None
) -> dict[int | None, int]:
    movable = _movable(batch_id, wanted, target)
    rows = await session.execute(
        select(CARDS.c.channel_id, func.count()).where(movable).group_by(CARDS.c.channel_id)
    )
    taken = {source: n for source, n in rows.all()}
    if taken:
        await session.execute(update(CARDS).where(movable).values(channel_id=target))
    return taken


async def _recount_shares(
    session: AsyncSession, batch_id: int, taken: dict[int | None, int], target: int | None, assigned: int
) -> None:
    for source, n in taken.items():
        if source is not None:
            await session.execute(
                update(SHARES)
                .where(SHARES.c.batch_id == batch_id, SHARES.c.channel_id == source)
                .values(card_count=SHARES.c.card_count - n)
            )
    if target is None or not assigned:
        return
    grown = await session.execute(
        update(SHARES)
        .where(SHARES.c.batch_id == batch_id, SHARES.c.channel_id == target)
        .values(card_count=SHARES.c.card_count + assigned)
    )
    if not grown.rowcount:
        # the first cards of this batch in this channel (range assignments of a batch take turns)
        await session.execute(
            SHARES.insert().values(batch_id=batch_id, channel_id=target, card_count=assigned, used_count=0)
        )


async def extend_batch(rt: Runtime, caller: Caller, batch_id: str, valid_until: date) -> CardBatch:
    """`extendCardBatch`: move validUntil, later or earlier, not before today nor before validFrom;
    the frozen config and price stay, and no card is touched."""
    caller.require_admin()
    parsed = parse_id(batch_id)
    async with rt.db.write() as session:
        batch = None if parsed is None else await session.get(CardBatch, parsed, with_for_update=True)
        if batch is None:
            raise NotFound()
        today = rt.today()
        if valid_until < today:
            raise InvalidInput([FieldProblem("validUntil", "field.in_past", {"today": today.isoformat()})])
        if batch.valid_from is not None and valid_until < batch.valid_from:
            raise InvalidInput(
                [
                    FieldProblem(
                        "validUntil", "field.before_valid_from", {"validFrom": batch.valid_from.isoformat()}
                    )
                ]
            )
        if batch.valid_until == valid_until:
            return batch
        before = batch.valid_until
        batch.valid_until = valid_until
        await audit.record(session, rt, caller, audit.BatchExtended(batch.id, before, valid_until))
    return batch
