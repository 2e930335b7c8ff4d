"""Redeeming a card (F8, RULES §4): the preview, and the one transaction that claims the card,
takes stock, writes the order, the redemption log and the provisioning job."""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, delete, or_, select

from models import (
    BatchStatus,
    Card,
    CardBatch,
    CardStatus,
    IdempotencyKey,
    Order,
    OrderStatus,
    OsFamily,
    OsImage,
    ProductType,
    Redemption,
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
    RateLimited,
)
from services.paging import Page, PageRequest, keyset_page, page_request
from services.runtime import Caller, Runtime, Viewer
from tihuo.db import CheckFailed, DuplicateKey
from tihuo.sql import Codec, Plan, Row, Shape, Sql

log = logging.getLogger("tihuo.redemption")

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


# A card and its batch as a redemption reads them: named tuples with the models' attribute names
# (tihuo.sql.Shape.record), which never leave this module.
CardRecord = Any
BatchRecord = Any


@dataclass(frozen=True)
class _Found:
    card: CardRecord
    batch: BatchRecord


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


# The look-up of an attempt is one statement (tihuo/sql.py: through the driver itself): the member's
# limit (services.ratelimit's rule: blocked while any subject's blocked_until is ahead), a kept
# idempotency key, the card, its batch, stock, and the line's images (all of them for a
# preview, the chosen one for a redemption). The checks then run in RULES §4's order on what it found.
_CARD = Shape(Card, "c", "c")
_BATCH = Shape(CardBatch, "b", "b")
_IMAGE = Shape(OsImage, "i", "i")
_ORDER = Shape(Order, "o", "o")
_LOOK_UP = Sql(
    """
    SELECT k.request_hash AS kept_hash, k.order_id AS kept_order,
           (SELECT max(a.blocked_until) FROM attempt_counters a
             WHERE a.scope = $1 AND a.subject IN ($2, $3) AND a.blocked_until > $4) AS blocked_until,
           {card}, {batch}, m.stock AS stock, {image}
      FROM (SELECT 1 AS one) AS attempt
      LEFT JOIN idempotency_keys k ON k.member_id = $5 AND k.key = $6
      LEFT JOIN cards c ON c.code_hash = $7
      LEFT JOIN card_batches b ON b.id = c.batch_id
      LEFT JOIN product_models m ON m.id = b.product_model_id
      LEFT JOIN line_os_images lo ON lo.line_id = b.line_id AND (lo.os_image_id = $8 OR $9)
      LEFT JOIN os_images i ON i.id = lo.os_image_id
     ORDER BY i.family, i.name
    """,
    card=_CARD,
    batch=_BATCH,
    image=_IMAGE,
)
_KEPT = Sql("SELECT request_hash, order_id FROM idempotency_keys WHERE member_id = $1 AND key = $2")
_ORDER_BY_ID = Sql("SELECT {order} FROM orders o WHERE o.id = $1", order=_ORDER)


@dataclass(frozen=True)
class _Looked:
    kept_order: Order | None = None
    blocked_until: datetime | None = None
    card: CardRecord | None = None
    batch: BatchRecord | None = None
    stock: int | None = None
    line_images: tuple[OsImage, ...] = ()
    chosen_image: OsImage | None = None

    @property
    def found(self) -> _Found:
        assert self.card is not None and self.batch is not None
        return _Found(card=self.card, batch=self.batch)


def _kept(
    codec: Codec, kept_hash: bytes, order_id: int | None, request_hash: bytes | None
) -> Plan[Order | None]:
    """The order a kept idempotency key made with this input (None if it made none yet);
    IDEMPOTENCY_CONFLICT if the key was used with another input."""
    if bytes(kept_hash) != request_hash:
        raise IdempotencyConflict()
    if order_id is None:
        return None
    rows = yield _ORDER_BY_ID, (order_id,)
    return _ORDER.load(rows[0], codec)


def _kept_order(codec: Codec, member_id: int, key: str, request_hash: bytes | None) -> Plan[Order | None]:
    rows = yield _KEPT, (member_id, key)
    if not rows:
        return None
    return (yield from _kept(codec, rows[0]["request_hash"], rows[0]["order_id"], request_hash))


@dataclass(frozen=True)
class _Lookup:
    now: datetime
    member_id: int
    keys: tuple[str, ...]
    code_hash: bytes
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    image_id: int | None = None
    line_images: bool = False

    def run(self, codec: Codec) -> Plan[_Looked]:
        assert len(self.keys) <= 2, "the look-up counts a member and an address"
        member_key, address_key = (*self.keys, None, None)[:2]
        rows = yield (
            _LOOK_UP,
            (
                ratelimit.CARD_CODE,
                member_key,
                address_key,
                self.now,
                self.member_id,
                self.idempotency_key,
                self.code_hash,
                self.image_id,
                self.line_images,
            ),
        )
        first = rows[0]
        if first["kept_hash"] is not None:
            order = yield from _kept(codec, first["kept_hash"], first["kept_order"], self.request_hash)
            if order is not None:
                return _Looked(kept_order=order)
        blocked = codec.datetime(first["blocked_until"])
        if blocked is not None:
            return _Looked(blocked_until=blocked)
        if first["c_id"] is None:
            return _Looked()
        batch = _BATCH.record(first, codec)
        images = tuple(_IMAGE.load(row, codec) for row in rows if row["i_id"] is not None)
        return _Looked(
            card=_CARD.record(first, codec),
            batch=batch,
            stock=first["stock"],
            line_images=images
            if self.line_images and batch.product_type is not ProductType.VIRTUAL_HOST
            else (),
            chosen_image=images[0] if self.image_id is not None and images else None,
        )


async def _look_up(rt: Runtime, caller: Caller, viewer: Viewer, code: str, **wanted: Any) -> _Looked:
    """A kept key's order, or else: rate limit, then the card; an unknown code counts as a failed
    attempt (RULES §4)."""
    keys = tuple(ratelimit.subjects(member=viewer.id, ip=caller.client_address))
    lookup = _Lookup(
        now=rt.now(), member_id=viewer.id, keys=keys, code_hash=rt.keys.code_hash(code), **wanted
    )
    looked = await rt.db.run_read(lookup.run)
    if looked.kept_order is not None:
        return looked
    if looked.blocked_until is not None:
        raise RateLimited(ratelimit.seconds_until(looked.blocked_until, lookup.now))
    if looked.card is None or looked.batch is None:
        async with rt.db.write() as counting:
            await ratelimit.record_failure(counting, rt, ratelimit.CARD_CODE, keys)
        raise CardCodeRejected(ErrorCode.CARD_NOT_FOUND)
    return looked


def _ensure_redeemable(today: date, card: CardRecord, batch: BatchRecord) -> None:
    """BATCH_DISABLED, CARD_DISABLED, CARD_USED, CARD_EXPIRED: in the order RULES §4 gives."""
    if batch.status is BatchStatus.DISABLED:
        raise CardUnavailable(ErrorCode.BATCH_DISABLED)
    if card.status is CardStatus.DISABLED:
        raise CardUnavailable(ErrorCode.CARD_DISABLED)
    if card.status is CardStatus.USED:
        raise CardUnavailable(ErrorCode.CARD_USED)
    if today > batch.valid_until:
        raise CardUnavailable(ErrorCode.CARD_EXPIRED)


@metrics.counts_redemptions("preview")
async def preview_card(rt: Runtime, caller: Caller, typed_code: str) -> Preview:
    """`redemptionPreview`: what the card gives and which images the member may pick."""
    viewer = caller.require_member()
    code = _normalised(typed_code)
    async with _member_turn(rt, viewer.id):
        looked = await _look_up(rt, caller, viewer, code, line_images=True)
    found = looked.found
    _ensure_redeemable(rt.today(), found.card, found.batch)
    if looked.stock is not None and looked.stock <= 0:
        raise OutOfStock()
    takes_os = found.batch.product_type is not ProductType.VIRTUAL_HOST
    images = list(looked.line_images)
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


def _chosen_image(batch: BatchRecord, os_image_id: str | None, found: OsImage | None) -> OsImage | None:
    """OS_REQUIRED / OS_NOT_ALLOWED (R2, R6): an image of the card's line, or none for a virtual host.
    `found` is the image with that id on the card's line, if there is one."""
    if batch.product_type is ProductType.VIRTUAL_HOST:
        if os_image_id is not None:
            raise OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
        return None
    if os_image_id is None:
        raise OsSelectionRejected(ErrorCode.OS_REQUIRED)
    if found is None:
        raise OsSelectionRejected(ErrorCode.OS_NOT_ALLOWED)
    return found


def _request_hash(code: str, os_image_id: str | None) -> bytes:
    return hashlib.sha256(f"{code}\n{os_image_id or ''}".encode()).digest()


async def _replay_afresh(rt: Runtime, viewer: Viewer, key: str, request_hash: bytes) -> Order | None:
    return await rt.db.run_read(lambda codec: _kept_order(codec, viewer.id, key, request_hash))


def _new_order_no(rt: Runtime) -> str:
    # the business date, like batch numbers (P20261202-… at 19:53 UTC on Dec 1 in Asia/Shanghai)
    return f"T{rt.today():%Y%m%d}{secrets.randbelow(10**10):010d}"


@metrics.counts_redemptions("redeem")
async def redeem_card(rt: Runtime, caller: Caller, request: RedeemRequest) -> Redeemed:
    """`redeemCard`: one transaction claims the card (a conditional update: exactly one of any number
    of concurrent redemptions wins), takes a bare-metal model's stock, and writes the PENDING order,
    the redemption row and the provisioning job. Provisioning starts after the commit."""
    viewer = caller.require_member()
    code = _normalised(request.code)
    key = request.idempotency_key
    request_hash = _request_hash(code, request.os_image_id)
    image_id = None if request.os_image_id is None else parse_id(request.os_image_id)
    async with _member_turn(rt, viewer.id):
        looked = await _look_up(
            rt, caller, viewer, code, idempotency_key=key, request_hash=request_hash, image_id=image_id
        )
    if looked.kept_order is not None:
        return Redeemed(looked.kept_order)
    found = looked.found
    try:
        _ensure_redeemable(rt.today(), found.card, found.batch)
    except CardUnavailable:
        # a concurrent request with this key may have used the card since the key was read
        if key is not None and (order := await _replay_afresh(rt, viewer, key, request_hash)) is not None:
            return Redeemed(order)
        raise
    image = _chosen_image(found.batch, request.os_image_id, looked.chosen_image)
    if looked.stock is not None and looked.stock <= 0:
        raise OutOfStock()
    for attempt in range(1, ORDER_NO_ATTEMPTS + 1):
        try:
            redeemed = await _redeem_once(rt, viewer, found, image, key, request_hash)
            break
        except DuplicateKey:
            # only the order number, drawn at random, can collide here: the transaction rolled
            # back whole, so draw again
            if attempt == ORDER_NO_ATTEMPTS:
                raise
    rt.jobs_ready.set()
    order = redeemed.order
    log.info(
        "card of batch %s redeemed: order %s",
        order.batch_id,
        order.order_no,
        extra={"event": "redeem", "order_no": order.order_no},
    )
    return redeemed


async def _redeem_once(
    rt: Runtime, viewer: Viewer, found: _Found, image: OsImage | None, key: str | None, request_hash: bytes
) -> Redeemed:
    write = _Write(
        now=rt.now(),
        today=rt.today(),
        member_id=viewer.id,
        card_id=found.card.id,
        batch=found.batch,
        image=image,
        key=key,
        request_hash=request_hash,
        order_no=_new_order_no(rt),
    )
    return await rt.db.run_write(write.run)


# The write transaction's statements (through the driver, like the look-up). On PostgreSQL the
# claim, the order, the log row, the job, the key, the stock and the batch's count are one statement,
# a transaction by itself (a round trip each, and BEGIN and COMMIT, had been most of a redemption's
# time there); SQLite, in-process, takes them one by one. A model's stock is taken unconditionally:
# its CHECK (stock >= 0) refuses the last unit's race. An idempotency key is written first on SQLite
# (a conditional insert: taken meanwhile, nothing else is written) and with its order on PostgreSQL
# (taken meanwhile, the one statement fails and writes nothing); either way the key is then read.
_CLAIMED = Shape(Card, "cards", "c")
_STOCK_CHECK = "ck_product_models_stock_not_negative"
_CLAIM = Sql(
    """UPDATE cards SET status = 'USED', used_at = $1, member_id = $2
        WHERE id = $3 AND status = 'UNUSED'
          AND EXISTS (SELECT 1 FROM card_batches b
                       WHERE b.id = cards.batch_id AND b.status = 'ACTIVE' AND b.valid_until >= $4)
    RETURNING {card}""",
    card=_CLAIMED,
)
_REDEEM_IN_ONE = Sql(
    """WITH claimed AS ({claim}),
    placed AS (
        INSERT INTO orders (order_no, member_id, card_id, batch_id, product_type, config, os_image_id,
                            list_price, status, created_at)
        SELECT $5, $2, claimed.c_id, b.id, b.product_type, b.config, $6, $7, 'PENDING', $1
          FROM claimed JOIN card_batches b ON b.id = claimed.c_batch_id
        RETURNING id
    ),
    logged AS (
        INSERT INTO redemptions (card_id, batch_id, member_id, order_id, product_type, card_name,
                                 card_last4, redeemed_at)
        SELECT c_id, c_batch_id, $2, placed.id, $8, $9, c_last4, $1 FROM claimed, placed
    ),
    queued AS (
        INSERT INTO provisioning_jobs (order_id, status, attempts, run_after, created_at, updated_at)
        SELECT id, 'QUEUED', 0, $1, $1, $1 FROM placed
    ),
    kept AS (
        INSERT INTO idempotency_keys (member_id, key, request_hash, order_id, created_at)
        SELECT $2, $10, $11, placed.id, $1 FROM placed WHERE CAST($10 AS VARCHAR) IS NOT NULL
    ),
    stocked AS (
        UPDATE product_models SET stock = stock - 1 WHERE id = $12 AND EXISTS (SELECT 1 FROM claimed)
    ),
    counted AS (
        UPDATE card_batches SET used_count = used_count + 1 WHERE id = $13 AND EXISTS (SELECT 1 FROM claimed)
    )
    SELECT claimed.*, placed.id AS order_id FROM claimed, placed""",
    claim=_CLAIM,
    standalone=True,
)
_INSERT_ORDER = Sql(
    """INSERT INTO orders (order_no, member_id, card_id, batch_id, product_type, config, os_image_id,
                           list_price, status, created_at)
       SELECT $1, $2, $3, b.id, b.product_type, b.config, $4, $5, 'PENDING', $6
         FROM card_batches b WHERE b.id = $7
       RETURNING id"""
)
_INSERT_REDEMPTION = Sql(
    """INSERT INTO redemptions (card_id, batch_id, member_id, order_id, product_type, card_name,
                                card_last4, redeemed_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"""
)
_INSERT_JOB = Sql(
    """INSERT INTO provisioning_jobs (order_id, status, attempts, run_after, created_at, updated_at)
       VALUES ($1, 'QUEUED', 0, $2, $2, $2)"""
)
_RESERVE_KEY = Sql(
    """INSERT INTO idempotency_keys (member_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT DO NOTHING RETURNING key"""
)
_KEY_ORDER = Sql("UPDATE idempotency_keys SET order_id = $1 WHERE member_id = $2 AND key = $3")
_TAKE_STOCK = Sql("UPDATE product_models SET stock = stock - 1 WHERE id = $1")
_COUNT_USED = Sql("UPDATE card_batches SET used_count = used_count + 1 WHERE id = $1")
_CARD_NOW = Sql(
    "SELECT {card}, {batch} FROM cards c JOIN card_batches b ON b.id = c.batch_id WHERE c.id = $1",
    card=_CARD,
    batch=_BATCH,
)


@dataclass(frozen=True)
class _Write:
    """Everything the write transaction needs, decided before it starts, so it is short."""

    now: datetime
    today: date
    member_id: int
    card_id: int
    batch: BatchRecord
    image: OsImage | None
    key: str | None
    request_hash: bytes
    order_no: str

    def run(self, codec: Codec) -> Plan[Redeemed]:
        """Claim the card (conditional: UNUSED, batch ACTIVE and unexpired), write the order, the
        redemption row, the job and the key, take stock and count the use. Raises to roll back."""
        batch = self.batch
        windows = self.image is not None and self.image.family is OsFamily.WINDOWS
        order = Order(
            order_no=self.order_no,
            member_id=self.member_id,
            card_id=self.card_id,
            batch_id=batch.id,
            product_type=batch.product_type,
            config=batch.config,
            os_image_id=self.image.id if self.image else None,
            list_price=batch.windows_price
            if windows and batch.windows_price is not None
            else batch.reference_price,
            status=OrderStatus.PENDING,
            failure_reason=None,
            created_at=self.now,
            activated_at=None,
        )
        try:
            if codec.dialect == "postgresql":
                try:
                    claimed = yield from self._in_one_statement(order)
                except DuplicateKey:
                    # the one statement wrote nothing. The key was taken by a concurrent request
                    # since the look-up: its answer (else an order number drawn twice: raised
                    # again, and the caller draws another)
                    kept = yield from self._kept(codec)
                    if kept is None:
                        raise
                    return Redeemed(kept)
            else:
                if self.key is not None and not (yield from self._reserve_key()):
                    # the key was taken since the look-up (nothing is written yet): its answer
                    kept = yield from self._kept(codec)
                    if kept is None:
                        raise CardUnavailable(ErrorCode.CARD_USED)
                    return Redeemed(kept)
                claimed = yield from self._step_by_step(order)
        except CheckFailed as failed:
            if failed.constraint == _STOCK_CHECK:
                raise OutOfStock() from None
            raise
        if claimed is None:
            # a concurrent request with this key may have used the card: its answer; else, why not
            kept = yield from self._kept(codec)
            if kept is not None:
                return Redeemed(kept)
            yield from self._explain_lost_claim(codec)
        return Redeemed(order, _CLAIMED.load(claimed, codec), self.image)

    def _reserve_key(self) -> Plan[bool]:
        reserved = yield _RESERVE_KEY, (self.member_id, self.key, self.request_hash, self.now)
        return bool(reserved)

    def _kept(self, codec: Codec) -> Plan[Order | None]:
        if self.key is None:
            return None
        return (yield from _kept_order(codec, self.member_id, self.key, self.request_hash))

    def _in_one_statement(self, order: Order) -> Plan[Row | None]:
        rows = yield (
            _REDEEM_IN_ONE,
            (
                self.now,
                self.member_id,
                self.card_id,
                self.today,
                order.order_no,
                order.os_image_id,
                order.list_price,
                order.product_type,
                self.batch.name,
                self.key,
                self.request_hash,
                self.batch.product_model_id,
                self.batch.id,
            ),
        )
        if not rows:
            return None
        order.id = rows[0]["order_id"]
        return rows[0]

    def _step_by_step(self, order: Order) -> Plan[Row | None]:
        claimed = yield _CLAIM, (self.now, self.member_id, self.card_id, self.today)
        if not claimed:
            return None
        inserted = yield (
            _INSERT_ORDER,
            (
                order.order_no,
                order.member_id,
                order.card_id,
                order.os_image_id,
                order.list_price,
                order.created_at,
                order.batch_id,
            ),
        )
        order.id = inserted[0]["id"]
        batch = self.batch
        yield (
            _INSERT_REDEMPTION,
            (
                self.card_id,
                batch.id,
                self.member_id,
                order.id,
                batch.product_type,
                batch.name,
                claimed[0]["c_last4"],
                self.now,
            ),
        )
        yield _INSERT_JOB, (order.id, self.now)
        if self.key is not None:
            yield _KEY_ORDER, (order.id, self.member_id, self.key)
        if batch.product_model_id is not None:
            yield _TAKE_STOCK, (batch.product_model_id,)
        yield _COUNT_USED, (batch.id,)
        return claimed[0]

    def _explain_lost_claim(self, codec: Codec) -> Plan[None]:
        """The claim found nothing to change: a concurrent redemption or an admin's change won.
        Raise what the card is now (CARD_USED when nothing more precise applies)."""
        rows = yield _CARD_NOW, (self.card_id,)
        _ensure_redeemable(self.today, _CARD.record(rows[0], codec), _BATCH.record(rows[0], codec))
        raise CardUnavailable(ErrorCode.CARD_USED)


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
