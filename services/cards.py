"""Card batches and cards (F1–F4): creating a batch with its codes in bulk, the admin lists,
disabling, remarks. Every admin write is audited and only touches rows that change."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import DuplicateKey
from core.ids import parse_id
from models import BatchStatus, Card, CardBatch, CardStatus, ChannelShare, ProductType, WebhookEvent
from services import audit, codes, metrics
from services import webhook_outbox as outbox
from services.errors import BadRequest, FieldProblem, InvalidInput, InvalidState, NotFound
from services.paging import Page, keyset_page, page_request
from services.pricing import ConfigInput, PricedConfig, ensure_in_stock, price_config
from services.runtime import Caller, Runtime
from services.validity import still_valid

Row = TypeVar("Row", Card, CardBatch)
NAME_MAX = 100
REMARK_MAX = 500
BATCH_NO_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
INSERT_CHUNK = 20000
PER_MEMBER_LIMIT_MAX = 1000
# expiringWithinDays looks at most this far ahead (ten years)
EXPIRING_WITHIN_MAX = 3660
MAX_CHUNK_ATTEMPTS = 5


@dataclass(frozen=True)
class NewBatch:
    name: str
    batch_no: str | None
    config: ConfigInput
    quantity: int
    valid_until: date
    status: BatchStatus = BatchStatus.ACTIVE
    valid_from: date | None = None
    per_member_limit: int | None = None


@dataclass(frozen=True)
class BatchFilter:
    product_type: ProductType | None = None
    status: BatchStatus | None = None
    keyword: str | None = None
    batch_no: str | None = None
    channel_id: str | None = None
    expiring_within_days: int | None = None


def _batch_audit_view(batch: CardBatch) -> dict[str, Any]:
    return {
        "batchNo": batch.batch_no,
        "name": batch.name,
        "productType": batch.product_type.value,
        "quantity": batch.quantity,
        "referencePrice": str(batch.reference_price),
        "validUntil": batch.valid_until.isoformat(),
        "validFrom": None if batch.valid_from is None else batch.valid_from.isoformat(),
        "perMemberLimit": batch.per_member_limit,
        "status": batch.status.value,
        "summary": batch.config["summary"],
    }


# ---------------------------------------------------------------- creating a batch


def _check_new_batch(rt: Runtime, new: NewBatch) -> list[FieldProblem]:
    problems = []
    name = new.name.strip()
    if not name:
        problems.append(FieldProblem("name", "field.blank"))
    elif len(name) > NAME_MAX:
        problems.append(FieldProblem("name", "field.too_long", {"max": NAME_MAX}))
    if new.batch_no is not None and not BATCH_NO_PATTERN.match(new.batch_no):
        problems.append(
            FieldProblem("batchNo", "field.bad_format", {"expected": "1-32 letters, digits, - or _"})
        )
    maximum = rt.settings.max_batch_quantity
    if not 1 <= new.quantity <= maximum:
        problems.append(FieldProblem("quantity", "field.out_of_range", {"min": 1, "max": maximum}))
    today = rt.today()
    if new.valid_until < today:
        problems.append(FieldProblem("validUntil", "field.in_past", {"today": today.isoformat()}))
    if new.valid_from is not None and new.valid_from > new.valid_until:
        problems.append(
            FieldProblem("validFrom", "field.after_valid_until", {"validUntil": new.valid_until.isoformat()})
        )
    if new.per_member_limit is not None and not 1 <= new.per_member_limit <= PER_MEMBER_LIMIT_MAX:
        problems.append(
            FieldProblem("perMemberLimit", "field.out_of_range", {"min": 1, "max": PER_MEMBER_LIMIT_MAX})
        )
    return problems


async def _price(session: AsyncSession, config: ConfigInput, problems: list[FieldProblem]) -> PricedConfig:
    """Price the configuration, reporting its problems together with the batch's own."""
    try:
        priced = await price_config(session, config, field_prefix="config.")
    except InvalidInput as refused:
        raise InvalidInput(problems + refused.problems) from None
    except NotFound:
        if problems:
            raise InvalidInput(problems) from None
        raise
    if problems:
        raise InvalidInput(problems)
    ensure_in_stock(priced)
    return priced


def _new_batch_no(today: date) -> str:
    return f"P{today:%Y%m%d}-{codes.generate()[:6]}"


CARD_COLUMNS = ("batch_id", "seq", "code_hash", "code_cipher", "key_version", "last4", "status")


def _sealed_rows(
    sealer: codes.CodeSealer, batch_id: int, first_seq: int, count: int
) -> list[tuple[object, ...]]:
    """`count` new cards in CARD_COLUMNS order, numbered from `first_seq`."""
    sealed = sealer.seal_many(codes.generate_many(count))
    unused = CardStatus.UNUSED.value
    return [
        (batch_id, seq, s.code_hash, s.code_cipher, s.key_version, s.last4, unused)
        for seq, s in zip(range(first_seq, first_seq + count), sealed, strict=True)
    ]


async def _insert_cards(session: AsyncSession, rt: Runtime, batch_id: int, quantity: int) -> None:
    """Generate and insert the batch's cards in chunks through the driver's bulk path (never one ORM
    object per card). The next chunk is sealed in a thread while this one is written. A chunk whose
    code collides with an existing one (75 random bits: not expected in practice) is made again."""
    sealer = codes.CodeSealer(rt.keys)
    starts = list(range(1, quantity + 1, INSERT_CHUNK))

    def make(first_seq: int) -> asyncio.Future[list[tuple[object, ...]]]:
        count = min(INSERT_CHUNK, quantity - first_seq + 1)
        return asyncio.ensure_future(asyncio.to_thread(_sealed_rows, sealer, batch_id, first_seq, count))

    pending = make(starts[0])
    for index, first_seq in enumerate(starts):
        rows = await pending
        if index + 1 < len(starts):
            pending = make(starts[index + 1])
        for attempt in range(1, MAX_CHUNK_ATTEMPTS + 1):
            try:
                async with session.begin_nested():
                    await rt.db.bulk_insert(session, Card.__table__, CARD_COLUMNS, rows)
                break
            except DuplicateKey:
                if attempt == MAX_CHUNK_ATTEMPTS:
                    raise
                rows = await make(first_seq)


async def create_batch(rt: Runtime, caller: Caller, new: NewBatch) -> CardBatch:
    """`createCardBatch`: check everything, freeze the configuration and its Linux price, make the codes."""
    viewer = caller.require_admin()
    problems = _check_new_batch(rt, new)
    async with rt.db.read() as session:
        priced = await _price(session, new.config, problems)
        if new.batch_no is not None:
            taken = await session.scalar(select(CardBatch.id).where(CardBatch.batch_no == new.batch_no))
            if taken is not None:
                raise InvalidInput([FieldProblem("batchNo", "field.taken")])
    async with rt.db.write() as session:
        # timed from here: on SQLite the wait for the one write lock is not generation time
        started = time.perf_counter()
        batch = CardBatch(
            batch_no=new.batch_no or _new_batch_no(rt.today()),
            name=new.name.strip(),
            product_type=priced.product_type,
            line_id=priced.line.id,
            product_model_id=priced.product_model.id if priced.product_model else None,
            hosting_plan_id=priced.plan.id if priced.plan else None,
            months=priced.months,
            config=priced.snapshot(),
            reference_price=priced.linux_price,
            windows_price=priced.windows_price,
            quantity=new.quantity,
            valid_until=new.valid_until,
            valid_from=new.valid_from,
            per_member_limit=new.per_member_limit,
            status=new.status,
            created_by=viewer.id,
            created_at=rt.now(),
        )
        session.add(batch)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError:
            # only the batch number is unique here: taken by a batch made since the check above
            raise InvalidInput([FieldProblem("batchNo", "field.taken")]) from None
        await _insert_cards(session, rt, batch.id, new.quantity)
        await audit.record(session, rt, caller, audit.BatchCreated(batch.id, _batch_audit_view(batch)))
        await outbox.emit(session, WebhookEvent.BATCH_CREATED, rt.now(), {"batch": outbox.batch_data(batch)})
    metrics.card_batch_generated(new.quantity, time.perf_counter() - started)
    return batch


# ---------------------------------------------------------------- reading


def _batch_statement(filter: BatchFilter, today: date) -> Select[Any] | None:
    """The filtered batches, or None when a filter names nothing that can exist (an empty list)."""
    statement = select(CardBatch)
    if filter.channel_id is not None:
        channel = parse_id(filter.channel_id)
        if channel is None:
            return None
        statement = statement.where(
            exists().where(
                ChannelShare.batch_id == CardBatch.id,
                ChannelShare.channel_id == channel,
                ChannelShare.card_count > 0,
            )
        )
    if filter.expiring_within_days is not None:
        days = filter.expiring_within_days
        if not 0 <= days <= EXPIRING_WITHIN_MAX:
            raise BadRequest("filter.expiring_range", max=EXPIRING_WITHIN_MAX)
        statement = statement.where(
            CardBatch.status == BatchStatus.ACTIVE,
            CardBatch.valid_until >= today,
            CardBatch.valid_until <= today + timedelta(days=days),
        )
    if filter.product_type is not None:
        statement = statement.where(CardBatch.product_type == ProductType(filter.product_type))
    if filter.status is not None:
        statement = statement.where(CardBatch.status == BatchStatus(filter.status))
    if filter.batch_no:
        statement = statement.where(CardBatch.batch_no == filter.batch_no.strip())
    if filter.keyword and filter.keyword.strip():
        pattern = f"%{_escape_like(filter.keyword.strip().lower())}%"
        statement = statement.where(
            or_(
                func.lower(CardBatch.name).like(pattern, escape="\\"),
                func.lower(CardBatch.batch_no).like(pattern, escape="\\"),
            )
        )
    return statement


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_batches(
    rt: Runtime,
    caller: Caller,
    filter: BatchFilter,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[CardBatch]:
    """`cardBatches`: newest first."""
    caller.require_admin()
    request = page_request("CardBatch", first, after, offset)
    statement = _batch_statement(filter, rt.today())
    if statement is None:
        return Page([], 0, has_next=False, has_previous=request.has_previous)
    async with rt.db.read() as session:
        return await keyset_page(
            session,
            statement,
            kind="CardBatch",
            key=CardBatch.id,
            descending=True,
            request=request,
        )


async def get_batch(rt: Runtime, caller: Caller, batch_id: str) -> CardBatch | None:
    """`cardBatch(id)`: null when there is no such batch."""
    caller.require_admin()
    parsed = parse_id(batch_id)
    if parsed is None:
        return None
    async with rt.db.read() as session:
        return await session.get(CardBatch, parsed)


async def batches_by_ids(rt: Runtime, ids: list[int]) -> dict[int, CardBatch]:
    """For DataLoaders: the batches with these ids (callers already passed their permission check)."""
    async with rt.db.read() as session:
        return {
            batch.id: batch for batch in await session.scalars(select(CardBatch).where(CardBatch.id.in_(ids)))
        }


def _card_keyword(keyword: str) -> tuple[str, str] | None:
    """("code", normalised code) for a whole code, ("last4", symbols) for up to 4 symbols, else None."""
    typed = keyword.strip()
    whole = codes.normalise(typed)
    if whole is not None:
        return ("code", whole)
    symbols = codes.symbols_of(typed)
    if symbols is not None and 1 <= len(symbols) <= 4:
        return ("last4", symbols)
    return None


def _counted_total(batch: CardBatch, status: CardStatus | None) -> int:
    """The size of a batch's card list from its counters, which change in the same transaction as
    the cards: no count(*) over a million rows."""
    if status is None:
        return batch.quantity
    return {
        CardStatus.USED: batch.used_count,
        CardStatus.DISABLED: batch.disabled_count,
        CardStatus.UNUSED: batch.quantity - batch.used_count - batch.disabled_count,
    }[CardStatus(status)]


async def list_cards(
    rt: Runtime,
    caller: Caller,
    batch: CardBatch,
    *,
    status: CardStatus | None,
    keyword: str | None,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[Card]:
    """`CardBatch.cards`: oldest first; `keyword` is the last 4 symbols or a whole code."""
    caller.require_admin()
    request = page_request("Card", first, after, offset)
    statement = select(Card).where(Card.batch_id == batch.id)
    if status is not None:
        statement = statement.where(Card.status == CardStatus(status))
        if CardStatus(status) is CardStatus.USED:
            # the same cards (CHECK used_has_member), said so the used-card index serves the list
            statement = statement.where(Card.used_at.is_not(None))
    total: int | None = None
    if keyword and keyword.strip():
        match = _card_keyword(keyword)
        if match is None:
            return Page([], 0, has_next=False, has_previous=request.has_previous)
        kind, value = match
        statement = statement.where(
            Card.code_hash == rt.keys.code_hash(value)
            if kind == "code"
            else Card.last4.endswith(value, autoescape=True)
        )
    else:
        total = _counted_total(batch, status)
        if status is None and request.offset:
            # seq numbers the cards 1..quantity: the page after `offset` cards starts past seq = offset
            statement = statement.where(Card.seq > request.offset)
            request = page_request("Card", request.first, None, None)
            async with rt.db.read() as session:
                page = await keyset_page(
                    session,
                    statement,
                    kind="Card",
                    key=Card.seq,
                    descending=False,
                    request=request,
                    total_count=total,
                )
            return Page(page.items, page.total_count, page.has_next, has_previous=True)
    async with rt.db.read() as session:
        return await keyset_page(
            session,
            statement,
            kind="Card",
            key=Card.seq,
            descending=False,
            request=request,
            total_count=total,
        )


async def cards_by_ids(rt: Runtime, ids: list[int]) -> dict[int, Card]:
    async with rt.db.read() as session:
        return {card.id: card for card in await session.scalars(select(Card).where(Card.id.in_(ids)))}


def is_expired(rt: Runtime, valid_until: date) -> bool:
    """A card is good until the end of its batch's validity day in the business time zone."""
    return not still_valid(valid_until, rt.today())


# ---------------------------------------------------------------- admin writes


async def _locked(session: AsyncSession, model: type[Row], text_id: str) -> Row:
    """The row named by an id from the API, locked for this transaction; NotFound if there is none."""
    parsed = parse_id(text_id)
    row = None if parsed is None else await session.get(model, parsed, with_for_update=True)
    if row is None:
        raise NotFound()
    return row


async def set_batch_status(rt: Runtime, caller: Caller, batch_id: str, status: BatchStatus) -> CardBatch:
    """`setCardBatchStatus`: ACTIVE ↔ DISABLED; setting the status it already has changes nothing."""
    caller.require_admin()
    status = BatchStatus(status)
    async with rt.db.write() as session:
        batch = await _locked(session, CardBatch, batch_id)
        if batch.status is status:
            return batch
        old = batch.status
        batch.status = status
        await audit.record(session, rt, caller, audit.BatchStatusSet(batch.id, old, status))
        await outbox.emit(
            session,
            WebhookEvent.BATCH_STATUS_CHANGED,
            rt.now(),
            {"batch": outbox.batch_data(batch), "previousStatus": old.value},
        )
    return batch


async def set_card_status(rt: Runtime, caller: Caller, card_id: str, status: CardStatus) -> Card:
    """`setCardStatus`: UNUSED ↔ DISABLED only; a used card cannot be disabled (R5)."""
    caller.require_admin()
    status = CardStatus(status)
    async with rt.db.write() as session:
        card = await _locked(session, Card, card_id)
        if card.status is CardStatus.USED:
            raise InvalidState(key="INVALID_STATE.card_used")
        if status is CardStatus.USED:
            raise InvalidState(key="INVALID_STATE.status_change")
        if card.status is status:
            return card
        old = card.status
        # conditional: a redemption claiming the card meanwhile makes this touch nothing
        changed = await session.execute(
            update(Card).where(Card.id == card.id, Card.status == old).values(status=status)
        )
        if changed.rowcount != 1:
            raise InvalidState(key="INVALID_STATE.card_used")
        delta = 1 if status is CardStatus.DISABLED else -1
        await session.execute(
            update(CardBatch)
            .where(CardBatch.id == card.batch_id)
            .values(disabled_count=CardBatch.disabled_count + delta)
        )
        await audit.record(session, rt, caller, audit.CardStatusSet(card.id, old, status))
        await session.refresh(card)
        await outbox.emit(
            session,
            WebhookEvent.CARD_STATUS_CHANGED,
            rt.now(),
            outbox.card_status_data(card.batch_id, card.seq, card.seq, old, status, 1, card=card),
        )
    return card


async def set_card_remark(rt: Runtime, caller: Caller, card_id: str, remark: str) -> Card:
    """`setCardRemark`: at most 500 characters; an empty remark clears it."""
    caller.require_admin()
    new_remark = remark.strip() or None
    if new_remark is not None and len(new_remark) > REMARK_MAX:
        raise InvalidInput([FieldProblem("remark", "field.too_long", {"max": REMARK_MAX})])
    async with rt.db.write() as session:
        card = await _locked(session, Card, card_id)
        if card.remark == new_remark:
            return card
        old = card.remark
        card.remark = new_remark
        await audit.record(session, rt, caller, audit.CardRemarkSet(card.id, old, new_remark))
    return card
