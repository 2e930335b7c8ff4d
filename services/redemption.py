"""Redeeming a card (F8, RULES §4): the preview, and the one transaction that claims the card,
takes stock, writes the order, the redemption log and the provisioning job."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, delete, exists, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import (
    BatchStatus,
    Card,
    CardBatch,
    CardStatus,
    IdempotencyKey,
    JobStatus,
    Order,
    OrderStatus,
    OsFamily,
    OsImage,
    ProductModel,
    ProductType,
    ProvisioningJob,
    Redemption,
    line_os_images,
)
from services import codes, metrics, ratelimit
from services.catalog import parse_id
from services.errors import (
    CardCodeRejected,
    CardUnavailable,
    ErrorCode,
    IdempotencyConflict,
    OsSelectionRejected,
    OutOfStock,
)
from services.paging import Page, PageRequest, keyset_page, page_request
from services.runtime import Caller, Runtime, Viewer

PRODUCT_NAMES = {
    ProductType.CLOUD_SERVER: {"zh-CN": "云服务器", "en": "Cloud server"},
    ProductType.VIRTUAL_HOST: {"zh-CN": "云虚拟主机", "en": "Cloud virtual host"},
    ProductType.BARE_METAL: {"zh-CN": "裸金属服务器", "en": "Bare-metal server"},
}
NOTICES = {
    "zh-CN": {
        "sms": "服务器IP及登录密码将在产品开通后短信发送到您的手机。",
        "sms_host": "登录信息将在产品开通后短信发送到您的手机。",
        "no_refund": "产品开通后不可退回，且提货卡使用后作废！",
    },
    "en": {
        "sms": "The server's IP address and login password are sent to your phone by SMS once it is open.",
        "sms_host": "Login details are sent to your phone by SMS once the product is open.",
        "no_refund": "No refund after the product is open; the card is void once used.",
    },
}


@dataclass(frozen=True)
class Preview:
    product_type: ProductType
    product_name: str
    config: dict[str, Any]
    months: int
    os_required: bool
    os_images: list[OsImage]
    valid_until: date
    notices: list[str]


@dataclass(frozen=True)
class RedeemRequest:
    code: str
    os_image_id: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Redeemed:
    """A redemption's order, with the claimed card and the chosen image when this call made it
    (None on an idempotent replay), so the caller can show them without reading them again."""

    order: Order
    card: Card | None = None
    image: OsImage | None = None


ORDER_NO_ATTEMPTS = 3


@dataclass(frozen=True)
class _Found:
    card: Card
    batch: CardBatch


@asynccontextmanager
async def _member_turn(rt: Runtime, member_id: int) -> AsyncIterator[None]:
    """Attempts by one member in one process take turns through look-up and counting, so a request
    packed with aliases cannot get more answers than the failed-attempt limit allows."""
    async with rt.attempt_locks[member_id % len(rt.attempt_locks)]:
        yield


def _normalised(typed: str) -> str:
    code = codes.normalise(typed)
    if code is None:
        raise CardCodeRejected(ErrorCode.INVALID_CODE)
    return code


# statements of every attempt, built once (see _CLAIM below for why)
_CARD_BY_HASH = (
    select(Card, CardBatch)
    .join(CardBatch, CardBatch.id == Card.batch_id)
    .where(Card.code_hash == bindparam("code_hash"))
)
_LINE_IMAGES = (
    select(OsImage)
    .join(line_os_images, line_os_images.c.os_image_id == OsImage.id)
    .where(line_os_images.c.line_id == bindparam("line_id"))
    .order_by(OsImage.family, OsImage.name)
)
_LINE_IMAGE = (
    select(OsImage)
    .join(line_os_images, line_os_images.c.os_image_id == OsImage.id)
    .where(OsImage.id == bindparam("image_id"), line_os_images.c.line_id == bindparam("line_id"))
)
_STOCK = select(ProductModel.stock).where(ProductModel.id == bindparam("model_id"))


async def _find(rt: Runtime, caller: Caller, viewer: Viewer, code: str, session: AsyncSession) -> _Found:
    """Rate limit, then look the card up; an unknown code counts as a failed attempt."""
    keys = ratelimit.subjects(member=viewer.id, ip=caller.client_address)
    await ratelimit.ensure_allowed(session, rt, ratelimit.CARD_CODE, keys)
    row = (await session.execute(_CARD_BY_HASH, {"code_hash": rt.keys.code_hash(code)})).one_or_none()
    if row is None:
        async with rt.db.write() as counting:
            await ratelimit.record_failure(counting, rt, ratelimit.CARD_CODE, keys)
        raise CardCodeRejected(ErrorCode.CARD_NOT_FOUND)
    return _Found(card=row[0], batch=row[1])


def _ensure_redeemable(rt: Runtime, found: _Found) -> None:
    """BATCH_DISABLED, CARD_DISABLED, CARD_USED, CARD_EXPIRED: in the order RULES §4 gives."""
    if found.batch.status is BatchStatus.DISABLED:
        raise CardUnavailable(ErrorCode.BATCH_DISABLED)
    if found.card.status is CardStatus.DISABLED:
        raise CardUnavailable(ErrorCode.CARD_DISABLED)
    if found.card.status is CardStatus.USED:
        raise CardUnavailable(ErrorCode.CARD_USED)
    if rt.today() > found.batch.valid_until:
        raise CardUnavailable(ErrorCode.CARD_EXPIRED)


async def _line_images(session: AsyncSession, line_id: int) -> list[OsImage]:
    return list(await session.scalars(_LINE_IMAGES, {"line_id": line_id}))


async def _ensure_in_stock(session: AsyncSession, batch: CardBatch) -> None:
    if batch.product_model_id is None:
        return
    stock = await session.scalar(_STOCK, {"model_id": batch.product_model_id})
    if not stock:
        raise OutOfStock()


@metrics.counts_redemptions("preview")
async def preview_card(rt: Runtime, caller: Caller, typed_code: str) -> Preview:
    """`redemptionPreview`: what the card gives and which images the member may pick."""
    viewer = caller.require_member()
    code = _normalised(typed_code)
    async with _member_turn(rt, viewer.id), rt.db.read() as session:
        found = await _find(rt, caller, viewer, code, session)
        _ensure_redeemable(rt, found)
        await _ensure_in_stock(session, found.batch)
        takes_os = found.batch.product_type is not ProductType.VIRTUAL_HOST
        images = await _line_images(session, found.batch.line_id) if takes_os else []
    notices = NOTICES.get(caller.locale, NOTICES["zh-CN"])
    return Preview(
        product_type=found.batch.product_type,
        product_name=PRODUCT_NAMES[found.batch.product_type].get(
            caller.locale, PRODUCT_NAMES[found.batch.product_type]["zh-CN"]
        ),
        config=found.batch.config,
        months=found.batch.months,
        os_required=takes_os,
        os_images=images,
        valid_until=found.batch.valid_until,
        notices=[notices["sms" if takes_os else "sms_host"], notices["no_refund"]],
    )


async def _chosen_image(session: AsyncSession, batch: CardBatch, os_image_id: str | None) -> OsImage | None:
    """OS_REQUIRED / OS_NOT_ALLOWED (R2, R6): an image of the card's line, or none for a virtual host."""
    if batch.product_type is ProductType.VIRTUAL_HOST:
        if os_image_id is not None:
            raise OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
        return None
    if os_image_id is None:
        raise OsSelectionRejected(ErrorCode.OS_REQUIRED)
    parsed = parse_id(os_image_id)
    image = None
    if parsed is not None:
        image = await session.scalar(_LINE_IMAGE, {"image_id": parsed, "line_id": batch.line_id})
    if image is None:
        raise OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
    return image


def _request_hash(code: str, os_image_id: str | None) -> bytes:
    return hashlib.sha256(f"{code}\n{os_image_id or ''}".encode()).digest()


async def _replay(session: AsyncSession, viewer: Viewer, key: str, request_hash: bytes) -> Order | None:
    """The order a key already made with this input; IDEMPOTENCY_CONFLICT if it was another input."""
    kept = await session.get(IdempotencyKey, (viewer.id, key))
    if kept is None:
        return None
    if kept.request_hash != request_hash:
        raise IdempotencyConflict()
    return None if kept.order_id is None else await session.get(Order, kept.order_id)


async def _replay_afresh(rt: Runtime, viewer: Viewer, key: str, request_hash: bytes) -> Order | None:
    async with rt.db.read() as session:
        return await _replay(session, viewer, key, request_hash)


def _new_order_no(rt: Runtime) -> str:
    return f"T{rt.now():%Y%m%d}{secrets.randbelow(10**10):010d}"


@metrics.counts_redemptions("redeem")
async def redeem_card(rt: Runtime, caller: Caller, request: RedeemRequest) -> Redeemed:
    """`redeemCard`: one transaction claims the card (a conditional update: exactly one of any number
    of concurrent redemptions wins), takes a bare-metal model's stock, and writes the PENDING order,
    the redemption row and the provisioning job. Provisioning starts after the commit."""
    viewer = caller.require_member()
    code = _normalised(request.code)
    key = request.idempotency_key
    request_hash = _request_hash(code, request.os_image_id)
    async with _member_turn(rt, viewer.id), rt.db.read() as session:
        if key is not None and (order := await _replay(session, viewer, key, request_hash)) is not None:
            return Redeemed(order)
        found = await _find(rt, caller, viewer, code, session)
        try:
            _ensure_redeemable(rt, found)
        except CardUnavailable:
            # a concurrent request with this key may have used the card since the key was read
            if key is not None and (order := await _replay_afresh(rt, viewer, key, request_hash)) is not None:
                return Redeemed(order)
            raise
        image = await _chosen_image(session, found.batch, request.os_image_id)
        await _ensure_in_stock(session, found.batch)
    for attempt in range(1, ORDER_NO_ATTEMPTS + 1):
        try:
            redeemed = await _redeem_once(rt, viewer, found, image, key, request_hash)
            break
        except IntegrityError:
            # only the order number, drawn at random, can collide here: the transaction rolled
            # back whole, so draw again
            if attempt == ORDER_NO_ATTEMPTS:
                raise
    rt.jobs_ready.set()
    return redeemed


async def _redeem_once(
    rt: Runtime, viewer: Viewer, found: _Found, image: OsImage | None, key: str | None, request_hash: bytes
) -> Redeemed:
    async with rt.db.write() as session:
        if key is not None and not await _keep_key(rt, session, viewer, key, request_hash):
            # the same key committed meanwhile by a concurrent request: answer with its order
            order = await _replay(session, viewer, key, request_hash)
            if order is not None:
                return Redeemed(order)
            raise CardUnavailable(ErrorCode.CARD_USED)
        card, order = await _claim_and_order(rt, session, viewer, found, image)
        if key is not None:
            await session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.member_id == viewer.id, IdempotencyKey.key == key)
                .values(order_id=order.id)
            )
    return Redeemed(order, card, image)


async def _keep_key(
    rt: Runtime, session: AsyncSession, viewer: Viewer, key: str, request_hash: bytes
) -> bool:
    """Reserve the key; False when it is taken (on PostgreSQL this waits for a concurrent holder)."""
    insert_ = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(
        insert_(IdempotencyKey)
        .values(member_id=viewer.id, key=key, request_hash=request_hash, created_at=rt.now())
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    )
    return result.first() is not None


# The write path's statements, built once: building them per request (coercing every value and
# computing a new cache key) was a third of a redemption's CPU. Each request binds parameters only.
_CLAIM = (
    update(Card)
    .where(
        Card.id == bindparam("card_id"),
        Card.status == CardStatus.UNUSED,
        exists().where(
            CardBatch.id == Card.batch_id,
            CardBatch.status == BatchStatus.ACTIVE,
            CardBatch.valid_until >= bindparam("today"),
        ),
    )
    .values(status=CardStatus.USED, used_at=bindparam("now"), member_id=bindparam("member_id"))
    .returning(Card)
    .execution_options(populate_existing=True)
)
_TAKE_STOCK = (
    update(ProductModel)
    .where(ProductModel.id == bindparam("model_id"), ProductModel.stock > 0)
    .values(stock=ProductModel.stock - 1)
    .returning(ProductModel.id)
)
_COUNT_USED = (
    update(CardBatch).where(CardBatch.id == bindparam("batch_id")).values(used_count=CardBatch.used_count + 1)
)
_INSERT_ORDER = insert(Order).returning(Order)
_INSERT_REDEMPTION = insert(Redemption)
_INSERT_JOB = insert(ProvisioningJob)


async def _claim_and_order(
    rt: Runtime, session: AsyncSession, viewer: Viewer, found: _Found, image: OsImage | None
) -> tuple[Card, Order]:
    now = rt.now()
    batch = found.batch
    card = await session.scalar(
        _CLAIM, {"card_id": found.card.id, "today": rt.today(), "now": now, "member_id": viewer.id}
    )
    if card is None:
        # lost to a concurrent redemption or an admin's change: say precisely what the card is now
        current_card = await session.get(Card, found.card.id, populate_existing=True)
        current_batch = await session.get(CardBatch, batch.id, populate_existing=True)
        _ensure_redeemable(rt, _Found(card=current_card, batch=current_batch))  # type: ignore[arg-type]
        raise CardUnavailable(ErrorCode.CARD_USED)
    if batch.product_model_id is not None:
        taken = await session.execute(_TAKE_STOCK, {"model_id": batch.product_model_id})
        if taken.first() is None:
            raise OutOfStock()
    await session.execute(_COUNT_USED, {"batch_id": batch.id})
    windows = image is not None and image.family is OsFamily.WINDOWS
    order = await session.scalar(
        _INSERT_ORDER,
        [
            {
                "order_no": _new_order_no(rt),
                "member_id": viewer.id,
                "card_id": card.id,
                "batch_id": batch.id,
                "product_type": batch.product_type,
                "config": batch.config,
                "os_image_id": image.id if image else None,
                "list_price": batch.windows_price
                if windows and batch.windows_price is not None
                else batch.reference_price,
                "status": OrderStatus.PENDING,
                "created_at": now,
            }
        ],
    )
    assert order is not None
    await session.execute(
        _INSERT_REDEMPTION,
        [
            {
                "card_id": card.id,
                "batch_id": batch.id,
                "member_id": viewer.id,
                "order_id": order.id,
                "product_type": batch.product_type,
                "card_name": batch.name,
                "card_last4": card.last4,
                "redeemed_at": now,
            }
        ],
    )
    await session.execute(
        _INSERT_JOB,
        [
            {
                "order_id": order.id,
                "status": JobStatus.QUEUED,
                "attempts": 0,
                "run_after": now,
                "created_at": now,
                "updated_at": now,
            }
        ],
    )
    return card, order


async def purge_idempotency_keys(rt: Runtime) -> int:
    """Forget keys older than `idempotency_key_hours` (at least 24, RULES §4); returns how many."""
    cutoff = rt.now() - timedelta(hours=rt.settings.idempotency_key_hours)
    async with rt.db.write() as session:
        result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff))
    return result.rowcount or 0


# ---------------------------------------------------------------- the usage log (F6, F7)


@dataclass(frozen=True)
class RedemptionFilter:
    batch_id: str | None = None
    member_id: str | None = None
    product_type: ProductType | None = None
    from_day: date | None = None
    to_day: date | None = None
    keyword: str | None = None


def _day_start(rt: Runtime, day: date) -> datetime | None:
    """Midnight of `day` in the business time zone, as an instant; None when that instant lies
    outside what a datetime can hold (the calendar's first or last day), so it bounds nothing."""
    try:
        return datetime.combine(day, time.min, tzinfo=rt.settings.zone).astimezone(UTC)
    except OverflowError:
        return None


def _keyword_condition(keyword: str) -> Any:
    typed = keyword.strip()
    symbols = codes.symbols_of(typed)
    conditions = [Redemption.card_name.contains(typed, autoescape=True)]
    if symbols is not None and 1 <= len(symbols) <= 4:
        conditions.append(Redemption.card_last4.endswith(symbols, autoescape=True))
    return or_(*conditions)


def _log_statement(rt: Runtime, filter: RedemptionFilter) -> Select[Any] | None:
    """The filtered log, or None when a filter names nothing that can exist (an empty list)."""
    statement = select(Redemption)
    for text_id, column in ((filter.batch_id, Redemption.batch_id), (filter.member_id, Redemption.member_id)):
        if text_id is not None:
            parsed = parse_id(text_id)
            if parsed is None:
                return None
            statement = statement.where(column == parsed)
    if filter.product_type is not None:
        statement = statement.where(Redemption.product_type == ProductType(filter.product_type))
    if filter.from_day is not None:
        start = _day_start(rt, filter.from_day)
        if start is not None:
            statement = statement.where(Redemption.redeemed_at >= start)
    # `to` 9999-12-31 (date.max) has no next day: it bounds nothing
    if filter.to_day is not None and filter.to_day < date.max:
        end = _day_start(rt, filter.to_day + timedelta(days=1))
        if end is not None:
            statement = statement.where(Redemption.redeemed_at < end)
    if filter.keyword and filter.keyword.strip():
        statement = statement.where(_keyword_condition(filter.keyword))
    return statement


async def _log_page(rt: Runtime, statement: Select[Any] | None, request: PageRequest) -> Page[Redemption]:
    if statement is None:
        return Page([], 0, has_next=False, has_previous=request.has_previous)
    async with rt.db.read() as session:
        return await keyset_page(
            session, statement, kind="Redemption", key=Redemption.id, descending=True, request=request
        )


async def list_redemptions(
    rt: Runtime,
    caller: Caller,
    filter: RedemptionFilter,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[Redemption]:
    """`redemptions`: every redemption, newest first (admin)."""
    caller.require_admin()
    request = page_request("Redemption", first, after, offset)
    return await _log_page(rt, _log_statement(rt, filter), request)


async def my_redemptions(
    rt: Runtime,
    caller: Caller,
    keyword: str | None,
    *,
    first: int | None,
    after: str | None,
    offset: int | None,
) -> Page[Redemption]:
    """`myRedemptions`: the member's own, newest first; keyword on the card's last 4 symbols or name."""
    viewer = caller.require_member()
    request = page_request("Redemption", first, after, offset)
    statement = _log_statement(rt, RedemptionFilter(keyword=keyword))
    assert statement is not None
    return await _log_page(rt, statement.where(Redemption.member_id == viewer.id), request)
