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

from sqlalchemy import Connection, Select, bindparam, delete, exists, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from models import (
    AttemptCounter,
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
    RateLimited,
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


# The look-up of an attempt: one read transaction (one hand-off on SQLite) for the member's limit,
# a kept idempotency key, the card, its batch, stock and images. The checks then run in RULES §4's
# order on what it found. Statements on tables, built once.
_COUNTERS = AttemptCounter.__table__
_MODELS = ProductModel.__table__
_IMAGES = OsImage.__table__
_L_BLOCKED = select(_COUNTERS.c.blocked_until).where(
    _COUNTERS.c.scope == bindparam("l_scope"),
    _COUNTERS.c.subject.in_(bindparam("l_keys", expanding=True)),
    _COUNTERS.c.blocked_until > bindparam("l_now"),
)
_L_KEPT = select(IdempotencyKey.__table__.c.request_hash, IdempotencyKey.__table__.c.order_id).where(
    IdempotencyKey.__table__.c.member_id == bindparam("l_member"),
    IdempotencyKey.__table__.c.key == bindparam("l_key"),
)
_L_ORDER = select(Order.__table__).where(Order.__table__.c.id == bindparam("l_order"))
_L_CARD = select(Card.__table__).where(Card.__table__.c.code_hash == bindparam("l_hash"))
_L_BATCH = select(CardBatch.__table__).where(CardBatch.__table__.c.id == bindparam("l_batch"))
_L_STOCK = select(_MODELS.c.stock).where(_MODELS.c.id == bindparam("l_model"))
_L_LINE_IMAGES = (
    select(_IMAGES)
    .join(line_os_images, line_os_images.c.os_image_id == _IMAGES.c.id)
    .where(line_os_images.c.line_id == bindparam("l_line"))
    .order_by(_IMAGES.c.family, _IMAGES.c.name)
)
_L_LINE_IMAGE = (
    select(_IMAGES)
    .join(line_os_images, line_os_images.c.os_image_id == _IMAGES.c.id)
    .where(_IMAGES.c.id == bindparam("l_image"), line_os_images.c.line_id == bindparam("l_line"))
)


@dataclass(frozen=True)
class _Looked:
    kept_order: Order | None = None
    blocked_until: datetime | None = None
    card: Card | None = None
    batch: CardBatch | None = None
    stock: int | None = None
    line_images: tuple[OsImage, ...] = ()
    chosen_image: OsImage | None = None

    @property
    def found(self) -> _Found:
        assert self.card is not None and self.batch is not None
        return _Found(card=self.card, batch=self.batch)


def _kept_order(connection: Connection, member_id: int, key: str, request_hash: bytes | None) -> Order | None:
    """The order an idempotency key already made with this input (None if it made none);
    IDEMPOTENCY_CONFLICT if the key was used with another input."""
    kept = connection.execute(_L_KEPT, {"l_member": member_id, "l_key": key}).first()
    if kept is None:
        return None
    if kept.request_hash != request_hash:
        raise IdempotencyConflict()
    if kept.order_id is None:
        return None
    return Order(**connection.execute(_L_ORDER, {"l_order": kept.order_id}).one()._mapping)


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

    def run(self, connection: Connection) -> _Looked:
        if self.idempotency_key is not None:
            order = _kept_order(connection, self.member_id, self.idempotency_key, self.request_hash)
            if order is not None:
                return _Looked(kept_order=order)
        blocked = connection.execute(
            _L_BLOCKED, {"l_scope": ratelimit.CARD_CODE, "l_keys": list(self.keys), "l_now": self.now}
        ).scalars()
        latest = max((until for until in blocked if until is not None), default=None)
        if latest is not None:
            return _Looked(blocked_until=latest)
        card_row = connection.execute(_L_CARD, {"l_hash": self.code_hash}).first()
        if card_row is None:
            return _Looked()
        batch = CardBatch(**connection.execute(_L_BATCH, {"l_batch": card_row.batch_id}).one()._mapping)
        stock = None
        if batch.product_model_id is not None:
            stock = connection.execute(_L_STOCK, {"l_model": batch.product_model_id}).scalar_one()
        images: tuple[OsImage, ...] = ()
        if self.line_images and batch.product_type is not ProductType.VIRTUAL_HOST:
            rows = connection.execute(_L_LINE_IMAGES, {"l_line": batch.line_id})
            images = tuple(OsImage(**row._mapping) for row in rows)
        chosen = None
        if self.image_id is not None:
            row = connection.execute(
                _L_LINE_IMAGE, {"l_image": self.image_id, "l_line": batch.line_id}
            ).first()
            chosen = None if row is None else OsImage(**row._mapping)
        return _Looked(
            card=Card(**card_row._mapping), batch=batch, stock=stock, line_images=images, chosen_image=chosen
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


def _ensure_redeemable(today: date, card: Card, batch: CardBatch) -> None:
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


def _chosen_image(batch: CardBatch, os_image_id: str | None, found: OsImage | None) -> OsImage | None:
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
    return await rt.db.run_read(lambda connection: _kept_order(connection, viewer.id, key, request_hash))


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


# The write transaction's statements, on tables (Core), built once: building statements per request
# (coercing every value, computing a new cache key) was a third of a redemption's CPU.
_CARDS, _BATCHES, _ORDERS = Card.__table__, CardBatch.__table__, Order.__table__
_CLAIM = (
    update(_CARDS)
    .where(
        _CARDS.c.id == bindparam("c_card"),
        _CARDS.c.status == CardStatus.UNUSED,
        exists().where(
            _BATCHES.c.id == _CARDS.c.batch_id,
            _BATCHES.c.status == BatchStatus.ACTIVE,
            _BATCHES.c.valid_until >= bindparam("c_today"),
        ),
    )
    .values(status=CardStatus.USED, used_at=bindparam("c_now"), member_id=bindparam("c_member"))
    .returning(*_CARDS.c)
)
_TAKE_STOCK = (
    update(ProductModel.__table__)
    .where(ProductModel.__table__.c.id == bindparam("s_model"), ProductModel.__table__.c.stock > 0)
    .values(stock=ProductModel.__table__.c.stock - 1)
    .returning(ProductModel.__table__.c.id)
)
_COUNT_USED = (
    update(_BATCHES).where(_BATCHES.c.id == bindparam("u_batch")).values(used_count=_BATCHES.c.used_count + 1)
)
_INSERT_ORDER = insert(_ORDERS).returning(*_ORDERS.c)
_INSERT_REDEMPTION = insert(Redemption.__table__)
_INSERT_JOB = insert(ProvisioningJob.__table__)
_KEYS = IdempotencyKey.__table__
_KEY_ORDER = (
    update(_KEYS)
    .where(_KEYS.c.member_id == bindparam("w_member"), _KEYS.c.key == bindparam("w_key"))
    .values(order_id=bindparam("w_order"))
)
_CARD_BY_ID = select(_CARDS).where(_CARDS.c.id == bindparam("card_id"))


@dataclass(frozen=True)
class _Write:
    """Everything the write transaction needs, decided before it starts, so it is short."""

    now: datetime
    today: date
    member_id: int
    card_id: int
    batch: CardBatch
    image: OsImage | None
    key: str | None
    request_hash: bytes
    order_no: str

    def run(self, connection: Connection) -> Redeemed:
        """Reserve the key, claim the card (conditional: UNUSED, batch ACTIVE and unexpired), take
        stock, count the use, write the order, the redemption row and the job. Raises to roll back."""
        if self.key is not None and not self._reserve_key(connection):
            # the same key committed meanwhile by a concurrent request: answer with its order
            return self._replay(connection)
        claimed = connection.execute(
            _CLAIM,
            {"c_card": self.card_id, "c_today": self.today, "c_now": self.now, "c_member": self.member_id},
        ).first()
        if claimed is None:
            self._explain_lost_claim(connection)
        batch = self.batch
        model_id = batch.product_model_id
        if model_id is not None and connection.execute(_TAKE_STOCK, {"s_model": model_id}).first() is None:
            raise OutOfStock()
        connection.execute(_COUNT_USED, {"u_batch": batch.id})
        windows = self.image is not None and self.image.family is OsFamily.WINDOWS
        order = connection.execute(
            _INSERT_ORDER,
            {
                "order_no": self.order_no,
                "member_id": self.member_id,
                "card_id": self.card_id,
                "batch_id": batch.id,
                "product_type": batch.product_type,
                "config": batch.config,
                "os_image_id": self.image.id if self.image else None,
                "list_price": batch.windows_price
                if windows and batch.windows_price is not None
                else batch.reference_price,
                "status": OrderStatus.PENDING,
                "created_at": self.now,
                "failure_reason": None,
                "activated_at": None,
            },
        ).one()
        connection.execute(
            _INSERT_REDEMPTION,
            {
                "card_id": self.card_id,
                "batch_id": batch.id,
                "member_id": self.member_id,
                "order_id": order.id,
                "product_type": batch.product_type,
                "card_name": batch.name,
                "card_last4": claimed.last4,
                "redeemed_at": self.now,
                "cancelled_at": None,
            },
        )
        connection.execute(
            _INSERT_JOB,
            {
                "order_id": order.id,
                "status": JobStatus.QUEUED,
                "attempts": 0,
                "run_after": self.now,
                "lease_until": None,
                "worker_id": None,
                "last_error": None,
                "created_at": self.now,
                "updated_at": self.now,
            },
        )
        if self.key is not None:
            connection.execute(
                _KEY_ORDER, {"w_member": self.member_id, "w_key": self.key, "w_order": order.id}
            )
        return Redeemed(Order(**order._mapping), Card(**claimed._mapping), self.image)

    def _reserve_key(self, connection: Connection) -> bool:
        """False when the key is taken (on PostgreSQL this waits for a concurrent holder to finish)."""
        insert_ = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
        reserved = connection.execute(
            insert_(_KEYS)
            .values(
                member_id=self.member_id, key=self.key, request_hash=self.request_hash, created_at=self.now
            )
            .on_conflict_do_nothing()
            .returning(_KEYS.c.key)
        )
        return reserved.first() is not None

    def _replay(self, connection: Connection) -> Redeemed:
        assert self.key is not None
        order = _kept_order(connection, self.member_id, self.key, self.request_hash)
        if order is None:
            raise CardUnavailable(ErrorCode.CARD_USED)
        return Redeemed(order)

    def _explain_lost_claim(self, connection: Connection) -> None:
        """The claim found nothing to change: a concurrent redemption or an admin's change won.
        Raise what the card is now (CARD_USED when nothing more precise applies)."""
        card = Card(**connection.execute(_CARD_BY_ID, {"card_id": self.card_id}).one()._mapping)
        batch = CardBatch(**connection.execute(_L_BATCH, {"l_batch": self.batch.id}).one()._mapping)
        _ensure_redeemable(self.today, card, batch)
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
