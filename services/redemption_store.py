"""What a redemption reads and writes (RULES §4), as statements through the driver itself (core.sql):
the look-up (one statement) and the write (one statement on PostgreSQL, the same steps one by one
on SQLite). Every statement is SQLAlchemy Core on the models' tables, compiled once at import.

The look-up: the member's failed-attempt limit (services.ratelimit's rule), a kept idempotency key,
the card, its batch, a bare-metal model's stock, and the line's images (all for a preview, the
chosen one for a redemption). The write: claim the card (a conditional update: of any number of
concurrent redemptions exactly one wins), write the order, the redemption row, the provisioning job
and the key, take the model's stock (its CHECK (stock >= 0) refuses the last unit's race) and count
the use (the batch's used count, the day's count, the member's count where the batch has a
per-member limit (its CHECK (live_count <= cap) refuses the one too many, however many race), and the
card's channel's used count), and queue the card.redeemed webhook where an enabled endpoint wants
it (services.webhook_outbox; nothing is written when none does). A key is reserved first on SQLite (a conditional insert: taken meanwhile, nothing else is
written) and written with its order on PostgreSQL (taken meanwhile, the one statement fails and
writes nothing); either way it is then read, to replay its order or refuse the other input.

(Longer than the ~500 lines a module should keep to: every statement stands beside the plan that
runs it and reads its rows, so a change to what a redemption writes is made in one file.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    String,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from core.db import CheckFailed, DuplicateKey
from core.sql import Codec, Plan, Row, Shape, Sql
from models import (
    PROGRAMME_SHARDS,
    AttemptCounter,
    BatchRedemptionDay,
    BatchStatus,
    Card,
    CardBatch,
    CardStatus,
    ChannelShare,
    IdempotencyKey,
    JobStatus,
    MemberBatchRedemptions,
    Order,
    OrderStatus,
    OsFamily,
    OsImage,
    ProductModel,
    ProductType,
    ProgrammeRedemptionDay,
    ProvisioningJob,
    Redemption,
    WebhookEvent,
    line_os_images,
)
from services import codes, ratelimit
from services import webhook_outbox as outbox
from services.errors import CardUnavailable, ErrorCode, IdempotencyConflict, OutOfStock
from services.login_passwords import Sealed
from services.order_events import notify_column
from services.validity import already_valid, still_valid

CARDS = Card.__table__
BATCHES = CardBatch.__table__
ORDERS = Order.__table__
KEYS = IdempotencyKey.__table__
MODELS = ProductModel.__table__
JOBS = ProvisioningJob.__table__
REDEMPTIONS = Redemption.__table__
DAYS = BatchRedemptionDay.__table__
PROGRAMME_DAYS = ProgrammeRedemptionDay.__table__
SHARES = ChannelShare.__table__
HELD = MemberBatchRedemptions.__table__


def _check_named(table: Any, suffix: str) -> str:
    """A CHECK constraint's name as the models' naming convention gives it."""
    return next(str(c.name) for c in table.constraints if str(c.name).endswith(suffix))


# the model's CHECK (stock >= 0) and a member's CHECK (live_count <= cap)
STOCK_CHECK = _check_named(MODELS, "stock_not_negative")
LIMIT_CHECK = _check_named(HELD, "within_limit")


def _param(name: str, column: Any) -> Any:
    """A bind parameter typed as `column`, so PostgreSQL knows its type wherever it stands."""
    return bindparam(name, type_=column.type)


# ---------------------------------------------------------------- the look-up

_c, _b, _k, _m = CARDS.alias("c"), BATCHES.alias("b"), KEYS.alias("k"), MODELS.alias("m")
_a = AttemptCounter.__table__.alias("a")
_lo, _i, _o = line_os_images.alias("lo"), OsImage.__table__.alias("i"), ORDERS.alias("o")
_h = HELD.alias("h")
CARD = Shape(Card, "c", _c)
BATCH = Shape(CardBatch, "b", _b)
IMAGE = Shape(OsImage, "i", _i)
ORDER = Shape(Order, "o", _o)

_blocked_until = (
    select(func.max(_a.c.blocked_until))
    .where(
        ratelimit.blocking(
            _a,
            scope=bindparam("scope"),
            subjects=[bindparam("member_key", type_=String), bindparam("address_key", type_=String)],
            now=_param("now", _a.c.blocked_until),
        )
    )
    .scalar_subquery()
)
LOOK_UP = Sql(
    select(
        _k.c.request_hash.label("kept_hash"),
        _k.c.order_id.label("kept_order"),
        _blocked_until.label("blocked_until"),
        *CARD.columns,
        *BATCH.columns,
        _m.c.stock.label("stock"),
        _h.c.live_count.label("held"),
        *IMAGE.columns,
    )
    .select_from(
        select(literal(1).label("one"))
        .subquery("attempt")
        .outerjoin(_k, and_(_k.c.member_id == bindparam("member_id"), _k.c.key == bindparam("key")))
        .outerjoin(_c, _c.c.code_hash == bindparam("code_hash"))
        .outerjoin(_b, _b.c.id == _c.c.batch_id)
        .outerjoin(_m, _m.c.id == _b.c.product_model_id)
        .outerjoin(_h, and_(_h.c.member_id == bindparam("member_id"), _h.c.batch_id == _b.c.id))
        .outerjoin(
            _lo,
            and_(
                _lo.c.line_id == _b.c.line_id,
                or_(_lo.c.os_image_id == bindparam("image_id"), bindparam("all_images", type_=Boolean)),
            ),
        )
        .outerjoin(_i, _i.c.id == _lo.c.os_image_id)
    )
    .order_by(_i.c.family, _i.c.name)
)
KEPT = Sql(
    select(KEYS.c.request_hash, KEYS.c.order_id).where(
        KEYS.c.member_id == bindparam("member_id"), KEYS.c.key == bindparam("key")
    )
)
ORDER_BY_ID = Sql(select(*ORDER.columns).where(_o.c.id == bindparam("order_id")))
CARD_NOW = Sql(
    select(*CARD.columns, *BATCH.columns)
    .select_from(_c.join(_b, _b.c.id == _c.c.batch_id))
    .where(_c.c.id == bindparam("card_id"))
)


@dataclass(frozen=True)
class Found:
    """The card and its batch as a redemption reads them (typed records: Shape.record)."""

    card: Card
    batch: CardBatch


@dataclass(frozen=True)
class Looked:
    kept_order: Order | None = None
    blocked_until: datetime | None = None
    card: Card | None = None
    batch: CardBatch | None = None
    stock: int | None = None
    # the member's live redemptions of the batch, where it has a per-member limit
    held: int = 0
    line_images: tuple[OsImage, ...] = ()
    chosen_image: OsImage | None = None

    @property
    def found(self) -> Found:
        assert self.card is not None and self.batch is not None
        return Found(card=self.card, batch=self.batch)


def _kept(
    codec: Codec, kept_hash: bytes, order_id: int | None, request_hash: bytes | None
) -> Plan[Order | None]:
    """The order a kept idempotency key made with this input (None if it made none yet);
    IDEMPOTENCY_CONFLICT if the key was used with another input."""
    if bytes(kept_hash) != request_hash:
        raise IdempotencyConflict()
    if order_id is None:
        return None
    rows = yield ORDER_BY_ID, {"order_id": order_id}
    return ORDER.load(rows[0], codec)


def kept_order(codec: Codec, member_id: int, key: str, request_hash: bytes | None) -> Plan[Order | None]:
    """The order of a member's kept key, read afresh (a concurrent request may have made it)."""
    rows = yield KEPT, {"member_id": member_id, "key": key}
    if not rows:
        return None
    return (yield from _kept(codec, rows[0]["request_hash"], rows[0]["order_id"], request_hash))


@dataclass(frozen=True)
class LookUp:
    now: datetime
    member_id: int
    keys: tuple[str, ...]
    code_hash: bytes
    idempotency_key: str | None = None
    request_hash: bytes | None = None
    image_id: int | None = None
    line_images: bool = False

    def run(self, codec: Codec) -> Plan[Looked]:
        assert len(self.keys) <= 2, "the look-up counts a member and an address"
        member_key, address_key = (*self.keys, None, None)[:2]
        rows = yield (
            LOOK_UP,
            {
                "scope": ratelimit.CARD_CODE,
                "member_key": member_key,
                "address_key": address_key,
                "now": self.now,
                "member_id": self.member_id,
                "key": self.idempotency_key,
                "code_hash": self.code_hash,
                "image_id": self.image_id,
                "all_images": self.line_images,
            },
        )
        first = rows[0]
        if first["kept_hash"] is not None:
            order = yield from _kept(codec, first["kept_hash"], first["kept_order"], self.request_hash)
            if order is not None:
                return Looked(kept_order=order)
        blocked = codec.datetime(first["blocked_until"])
        if blocked is not None:
            return Looked(blocked_until=blocked)
        if first["c_id"] is None:
            return Looked()
        batch = BATCH.record(first, codec)
        images = tuple(IMAGE.load(row, codec) for row in rows if row["i_id"] is not None)
        return Looked(
            card=CARD.record(first, codec),
            batch=batch,
            stock=first["stock"],
            held=first["held"] or 0,
            line_images=images
            if self.line_images and batch.product_type is not ProductType.VIRTUAL_HOST
            else (),
            chosen_image=images[0] if self.image_id is not None and images else None,
        )


def ensure_redeemable(today: date, card: Card, batch: CardBatch) -> None:
    """BATCH_DISABLED, CARD_DISABLED, CARD_USED, CARD_NOT_YET_VALID, CARD_EXPIRED: in the order
    RULES §4 and RULES-v2 §5 give."""
    if batch.status is BatchStatus.DISABLED:
        raise CardUnavailable(ErrorCode.BATCH_DISABLED)
    if card.status is CardStatus.DISABLED:
        raise CardUnavailable(ErrorCode.CARD_DISABLED)
    if card.status is CardStatus.USED:
        raise CardUnavailable(ErrorCode.CARD_USED)
    if not already_valid(batch.valid_from, today):
        raise CardUnavailable(ErrorCode.CARD_NOT_YET_VALID, valid_from=batch.valid_from.isoformat())
    if not still_valid(batch.valid_until, today):
        raise CardUnavailable(ErrorCode.CARD_EXPIRED)


def ensure_within_limit(batch: CardBatch, held: int) -> None:
    """MEMBER_LIMIT_REACHED, checked last (RULES-v2 §5). An early answer from the look-up: the
    write decides (its CHECK), so concurrent redemptions never pass the limit."""
    if batch.per_member_limit is not None and held >= batch.per_member_limit:
        raise member_limit_reached(batch)


def member_limit_reached(batch: CardBatch) -> CardUnavailable:
    return CardUnavailable(ErrorCode.MEMBER_LIMIT_REACHED, limit=batch.per_member_limit)


# ---------------------------------------------------------------- the write

_now = _param("now", ORDERS.c.created_at)
_member = _param("member_id", ORDERS.c.member_id)
_order_columns = [
    "order_no",
    "member_id",
    "card_id",
    "batch_id",
    "product_type",
    "config",
    "os_image_id",
    "list_price",
    "status",
    "created_at",
]
_redemption_columns = [
    "card_id",
    "batch_id",
    "member_id",
    "order_id",
    "product_type",
    "card_name",
    "card_last4",
    "redeemed_at",
]
_job_columns = [
    "order_id",
    "status",
    "attempts",
    "run_after",
    "created_at",
    "updated_at",
    "password_cipher",
    "password_key_version",
    "polls",
]
_key_columns = ["member_id", "key", "request_hash", "order_id", "created_at"]
_PENDING = literal(OrderStatus.PENDING.value, ORDERS.c.status.type)
_QUEUED = literal(JobStatus.QUEUED.value, JOBS.c.status.type)
# the job's login password, drawn and sealed before the write (services.login_passwords)
_cipher = _param("password_cipher", JOBS.c.password_cipher)
_key_version = _param("password_key_version", JOBS.c.password_key_version)

_message_columns = ["message_id", "event", "payload", "created_at"]
_delivery_columns = ["endpoint_id", "message_id", "status", "attempts", "next_attempt_at", "created_at"]
_REDEEMED = literal(WebhookEvent.CARD_REDEEMED.value, outbox.MESSAGES.c.event.type)
_DELIVERY_PENDING = literal("PENDING", outbox.DELIVERIES.c.status.type)
_MASK = codes.masked("")


def _subscribed() -> Any:
    """card.redeemed as the subscriptions hold it (a bind of its own wherever it is used, so
    PostgreSQL deduces one type for each)."""
    return literal(WebhookEvent.CARD_REDEEMED.value, outbox.SUBSCRIPTIONS.c.event.type)


def _wanted() -> Any:
    """The enabled endpoints that asked for card.redeemed (a subquery of their ids)."""
    return outbox.receivers(_subscribed()).subquery("wanted")


def _deliveries(message_id: Any, select_from: Any) -> Any:
    wanted = _wanted()
    return insert(outbox.DELIVERIES).from_select(
        _delivery_columns,
        select(wanted.c.endpoint_id, message_id, _DELIVERY_PENDING, literal(0), _now, _now).select_from(
            select_from.join(wanted, true()) if select_from is not None else wanted
        ),
    )


CLAIMED = Shape(Card, "c")
CLAIM = (
    update(CARDS)
    .where(
        CARDS.c.id == bindparam("card_id"),
        CARDS.c.status == CardStatus.UNUSED,
        exists().where(
            BATCHES.c.id == CARDS.c.batch_id,
            BATCHES.c.status == BatchStatus.ACTIVE,
            still_valid(BATCHES.c.valid_until, _param("today", BATCHES.c.valid_until)),
            already_valid(BATCHES.c.valid_from, _param("today", BATCHES.c.valid_until)),
        ),
    )
    .values(status=CardStatus.USED, used_at=_now, member_id=_member)
    .returning(*CLAIMED.columns)
)


def _today_param() -> Any:
    return _param("today", DAYS.c.day)


def _programme_day_params() -> tuple[Any, Any, Any]:
    """Today, the card's shard of the programme's day, and the batch's reference price in cents."""
    return (
        _param("today", PROGRAMME_DAYS.c.day),
        _param("shard", PROGRAMME_DAYS.c.shard),
        _param("price_cents", PROGRAMME_DAYS.c.redeemed_cents),
    )


def _insert_order(card_id: Any, *, select_from: Any = None, where: Any = None) -> Any:
    """The PENDING order of the claimed card, its product and frozen config copied from its batch."""
    values = select(
        _param("order_no", ORDERS.c.order_no),
        _member,
        card_id,
        BATCHES.c.id,
        BATCHES.c.product_type,
        BATCHES.c.config,
        _param("os_image_id", ORDERS.c.os_image_id),
        _param("list_price", ORDERS.c.list_price),
        _PENDING,
        _now,
    )
    if select_from is not None:
        values = values.select_from(select_from)
    if where is not None:
        values = values.where(where)
    return insert(ORDERS).from_select(_order_columns, values).returning(ORDERS.c.id)


def _in_one_statement() -> Sql:
    """PostgreSQL: the claim and every write after it as data-modifying CTEs of one statement."""
    claimed = CLAIM.cte("claimed")
    claimed_anything = exists(select(literal(1)).select_from(claimed))
    placed = _insert_order(
        claimed.c.c_id, select_from=claimed.join(BATCHES, BATCHES.c.id == claimed.c.c_batch_id)
    ).cte("placed")
    both = claimed.join(placed, true())
    logged = insert(REDEMPTIONS).from_select(
        _redemption_columns,
        select(
            claimed.c.c_id,
            claimed.c.c_batch_id,
            _member,
            placed.c.id,
            _param("product_type", REDEMPTIONS.c.product_type),
            _param("card_name", REDEMPTIONS.c.card_name),
            claimed.c.c_last4,
            _now,
        ).select_from(both),
    )
    queued = insert(JOBS).from_select(
        _job_columns,
        select(
            placed.c.id, _QUEUED, literal(0), _now, _now, _now, _cipher, _key_version, literal(0)
        ).select_from(placed),
    )
    key = _param("key", KEYS.c.key)
    kept = insert(KEYS).from_select(
        _key_columns,
        select(_member, key, _param("request_hash", KEYS.c.request_hash), placed.c.id, _now)
        .select_from(placed)
        .where(cast(key, String).is_not(None)),
    )
    stocked = (
        update(MODELS)
        .where(MODELS.c.id == bindparam("product_model_id"), claimed_anything)
        .values(stock=MODELS.c.stock - 1)
    )
    counted = (
        update(BATCHES)
        .where(BATCHES.c.id == bindparam("batch_id"), claimed_anything)
        .values(used_count=BATCHES.c.used_count + 1)
    )
    # the day's count; the member's count where the batch has a limit (its CHECK fails the whole
    # statement on the one too many); the used count of the card's channel, if it is in one
    day = postgres_insert(DAYS).from_select(
        ["batch_id", "day", "redeemed"],
        select(claimed.c.c_batch_id, _today_param(), literal(1)).select_from(claimed),
    )
    dated = day.on_conflict_do_update(
        index_elements=[DAYS.c.batch_id, DAYS.c.day], set_={"redeemed": DAYS.c.redeemed + 1}
    )
    programme_day = postgres_insert(PROGRAMME_DAYS).from_select(
        ["day", "shard", "redeemed", "redeemed_cents"],
        select(
            _programme_day_params()[0], _programme_day_params()[1], literal(1), _programme_day_params()[2]
        ).select_from(claimed),
    )
    programme_dated = programme_day.on_conflict_do_update(
        index_elements=[PROGRAMME_DAYS.c.day, PROGRAMME_DAYS.c.shard],
        set_={
            "redeemed": PROGRAMME_DAYS.c.redeemed + 1,
            "redeemed_cents": PROGRAMME_DAYS.c.redeemed_cents + programme_day.excluded.redeemed_cents,
        },
    )
    limit = _param("per_member_limit", HELD.c.cap)
    held = postgres_insert(HELD).from_select(
        ["member_id", "batch_id", "live_count", "cap"],
        select(_member, claimed.c.c_batch_id, literal(1), limit)
        .select_from(claimed)
        .where(cast(limit, HELD.c.cap.type).is_not(None)),
    )
    limited = held.on_conflict_do_update(
        index_elements=[HELD.c.member_id, HELD.c.batch_id], set_={"live_count": HELD.c.live_count + 1}
    )
    shared = (
        update(SHARES)
        .where(SHARES.c.batch_id == claimed.c.c_batch_id, SHARES.c.channel_id == claimed.c.c_channel_id)
        .values(used_count=SHARES.c.used_count + 1)
    )
    # card.redeemed, only where an endpoint wants it: the body made beforehand, with what only this
    # statement knows (the order's id, the card's seq and masked code) set into it
    payload = cast(_param("hook_payload", outbox.MESSAGES.c.payload), JSONB)
    for path, value in (
        ("{data,order,id}", func.to_jsonb(cast(placed.c.id, Text))),
        ("{data,card,seq}", func.to_jsonb(claimed.c.c_seq)),
        ("{data,card,maskedCode}", func.to_jsonb(literal(_MASK, Text) + claimed.c.c_last4)),
    ):
        payload = func.jsonb_set(payload, literal_column(f"'{path}'::text[]"), value)
    noted = (
        insert(outbox.MESSAGES)
        .from_select(
            _message_columns,
            select(
                _param("hook_message_id", outbox.MESSAGES.c.message_id), _REDEEMED, cast(payload, Text), _now
            )
            .select_from(both)
            .where(outbox.anyone_wants(_subscribed())),
        )
        .returning(outbox.MESSAGES.c.id)
        .cte("noted")
    )
    statement = (
        select(
            *claimed.c,
            placed.c.id.label("order_id"),
            # the new PENDING order announced to live subscriptions, delivered at the commit
            notify_column(placed.c.id, _member, OrderStatus.PENDING).label("notified"),
        )
        .select_from(both)
        .add_cte(
            noted,
            _deliveries(noted.c.id, noted).cte("sent"),
            logged.cte("logged"),
            queued.cte("queued"),
            kept.cte("kept"),
            stocked.cte("stocked"),
            counted.cte("counted"),
            dated.cte("dated"),
            programme_dated.cte("programme_dated"),
            limited.cte("limited"),
            shared.cte("shared"),
        )
    )
    return Sql(statement, standalone=True, dialects=("postgresql",))


REDEEM_IN_ONE = _in_one_statement()
# SQLite: the same steps, one statement each, in one transaction on the writer thread
STEP_CLAIM = Sql(CLAIM)
INSERT_ORDER = Sql(_insert_order(bindparam("card_id"), where=BATCHES.c.id == bindparam("batch_id")))
INSERT_REDEMPTION = Sql(insert(REDEMPTIONS).values({name: bindparam(name) for name in _redemption_columns}))
INSERT_JOB = Sql(
    insert(JOBS).values(
        order_id=bindparam("order_id"),
        status=_QUEUED,
        attempts=0,
        polls=0,
        run_after=_now,
        created_at=_now,
        updated_at=_now,
        password_cipher=_cipher,
        password_key_version=_key_version,
    )
)
RESERVE_KEY = Sql(
    sqlite_insert(KEYS)
    .values(member_id=_member, key=bindparam("key"), request_hash=bindparam("request_hash"), created_at=_now)
    .on_conflict_do_nothing()
    .returning(KEYS.c.key),
    dialects=("sqlite",),
)
KEY_ORDER = Sql(
    update(KEYS)
    .where(KEYS.c.member_id == _member, KEYS.c.key == bindparam("key"))
    .values(order_id=bindparam("order_id"))
)
TAKE_STOCK = Sql(
    update(MODELS).where(MODELS.c.id == bindparam("product_model_id")).values(stock=MODELS.c.stock - 1)
)
COUNT_USED = Sql(
    update(BATCHES).where(BATCHES.c.id == bindparam("batch_id")).values(used_count=BATCHES.c.used_count + 1)
)
COUNT_DAY = Sql(
    sqlite_insert(DAYS)
    .values(batch_id=bindparam("batch_id"), day=_today_param(), redeemed=1)
    .on_conflict_do_update(
        index_elements=[DAYS.c.batch_id, DAYS.c.day], set_={"redeemed": DAYS.c.redeemed + 1}
    ),
    dialects=("sqlite",),
)
_programme_day_sqlite = sqlite_insert(PROGRAMME_DAYS).values(
    day=_programme_day_params()[0],
    shard=_programme_day_params()[1],
    redeemed=1,
    redeemed_cents=_programme_day_params()[2],
)
COUNT_PROGRAMME_DAY = Sql(
    _programme_day_sqlite.on_conflict_do_update(
        index_elements=[PROGRAMME_DAYS.c.day, PROGRAMME_DAYS.c.shard],
        set_={
            "redeemed": PROGRAMME_DAYS.c.redeemed + 1,
            "redeemed_cents": PROGRAMME_DAYS.c.redeemed_cents + _programme_day_sqlite.excluded.redeemed_cents,
        },
    ),
    dialects=("sqlite",),
)
COUNT_HELD = Sql(
    sqlite_insert(HELD)
    .values(
        member_id=_member,
        batch_id=bindparam("batch_id"),
        live_count=1,
        cap=_param("per_member_limit", HELD.c.cap),
    )
    .on_conflict_do_update(
        index_elements=[HELD.c.member_id, HELD.c.batch_id], set_={"live_count": HELD.c.live_count + 1}
    ),
    dialects=("sqlite",),
)
COUNT_SHARE_USED = Sql(
    update(SHARES)
    .where(SHARES.c.batch_id == bindparam("batch_id"), SHARES.c.channel_id == bindparam("channel_id"))
    .values(used_count=SHARES.c.used_count + 1)
)

QUEUE_MESSAGE = Sql(
    insert(outbox.MESSAGES)
    .from_select(
        _message_columns,
        select(
            _param("hook_message_id", outbox.MESSAGES.c.message_id),
            _REDEEMED,
            _param("hook_payload", outbox.MESSAGES.c.payload),
            _now,
        ).where(outbox.anyone_wants(_subscribed())),
    )
    .returning(outbox.MESSAGES.c.id),
    dialects=("sqlite",),
)
QUEUE_DELIVERIES = Sql(_deliveries(_param("message_pk", outbox.DELIVERIES.c.message_id), None))


def programme_shard(card_id: int) -> int:
    """The row of the programme's day a redemption of this card counts in."""
    return card_id % PROGRAMME_SHARDS


def cents(price: Any) -> int:
    return int(price * 100)


@dataclass(frozen=True)
class Redeemed:
    """A redemption's order, with the claimed card and the chosen image when this call made it
    (None on an idempotent replay), so the caller can show them without reading them again."""

    order: Order
    card: Card | None = None
    image: OsImage | None = None


@dataclass(frozen=True)
class Write:
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
    password: Sealed

    def order(self) -> Order:
        batch = self.batch
        windows = self.image is not None and self.image.family is OsFamily.WINDOWS
        return Order(
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

    def arguments(self, order: Order) -> dict[str, Any]:
        return {
            "now": self.now,
            "today": self.today,
            "member_id": self.member_id,
            "card_id": self.card_id,
            "order_no": order.order_no,
            "os_image_id": order.os_image_id,
            "list_price": order.list_price,
            "product_type": self.batch.product_type,
            "card_name": self.batch.name,
            "key": self.key,
            "request_hash": self.request_hash,
            "product_model_id": self.batch.product_model_id,
            "batch_id": self.batch.id,
            "per_member_limit": self.batch.per_member_limit,
            "shard": programme_shard(self.card_id),
            "price_cents": cents(self.batch.reference_price),
            "password_cipher": self.password.cipher,
            "password_key_version": self.password.key_version,
            "hook_message_id": outbox.new_message_id(),
        }

    def payload(self, order: Order, card: dict[str, Any]) -> str:
        """card.redeemed's body. Its card part (seq, masked code) and the order's id are known
        once the card is claimed and the order made: given here on SQLite, set in the statement
        on PostgreSQL."""
        data = outbox.redeemed_data(card, self.batch, order, self.now)
        return outbox.body(WebhookEvent.CARD_REDEEMED, self.now, data)

    def run(self, codec: Codec) -> Plan[Redeemed]:
        """Claim the card (conditional: UNUSED, batch ACTIVE and still valid), write the order, the
        redemption row, the job and the key, take stock and count the use. Raises to roll back."""
        order = self.order()
        given = self.arguments(order)
        try:
            if codec.dialect == "postgresql":
                try:
                    claimed = yield from self._in_one_statement(order, given)
                except DuplicateKey:
                    # the one statement wrote nothing. The key was taken by a concurrent request
                    # since the look-up: its answer (else an order number drawn twice: raised
                    # again, and the caller draws another)
                    kept = yield from self._kept(codec)
                    if kept is None:
                        raise
                    return Redeemed(kept)
            else:
                if self.key is not None and not (yield RESERVE_KEY, given):
                    # the key was taken since the look-up (nothing is written yet): its answer
                    kept = yield from self._kept(codec)
                    if kept is None:
                        raise CardUnavailable(ErrorCode.CARD_USED)
                    return Redeemed(kept)
                claimed = yield from self._step_by_step(order, given)
        except CheckFailed as failed:
            if failed.constraint == STOCK_CHECK:
                raise OutOfStock() from None
            if failed.constraint == LIMIT_CHECK:
                raise member_limit_reached(self.batch) from None
            raise
        if claimed is None:
            # a concurrent request with this key may have used the card: its answer; else, why not
            kept = yield from self._kept(codec)
            if kept is not None:
                return Redeemed(kept)
            yield from self._explain_lost_claim(codec)
        return Redeemed(order, CLAIMED.load(claimed, codec), self.image)

    def _kept(self, codec: Codec) -> Plan[Order | None]:
        if self.key is None:
            return None
        return (yield from kept_order(codec, self.member_id, self.key, self.request_hash))

    def _in_one_statement(self, order: Order, given: dict[str, Any]) -> Plan[Row | None]:
        card = {"id": self.card_id, "batch_id": self.batch.id, "seq": None, "last4": None}
        rows = yield REDEEM_IN_ONE, {**given, "hook_payload": self.payload(order, card)}
        if not rows:
            return None
        order.id = rows[0]["order_id"]
        return rows[0]

    def _step_by_step(self, order: Order, given: dict[str, Any]) -> Plan[Row | None]:
        claimed = yield STEP_CLAIM, given
        if not claimed:
            return None
        inserted = yield INSERT_ORDER, given
        order.id = inserted[0]["id"]
        yield (
            INSERT_REDEMPTION,
            {**given, "order_id": order.id, "card_last4": claimed[0]["c_last4"], "redeemed_at": self.now},
        )
        yield (
            INSERT_JOB,
            {
                "order_id": order.id,
                "now": self.now,
                "password_cipher": self.password.cipher,
                "password_key_version": self.password.key_version,
            },
        )
        if self.key is not None:
            yield KEY_ORDER, {**given, "order_id": order.id}
        if self.batch.product_model_id is not None:
            yield TAKE_STOCK, given
        yield COUNT_USED, given
        yield COUNT_DAY, given
        yield COUNT_PROGRAMME_DAY, given
        if self.batch.per_member_limit is not None:
            yield COUNT_HELD, given
        if claimed[0]["c_channel_id"] is not None:
            yield COUNT_SHARE_USED, {**given, "channel_id": claimed[0]["c_channel_id"]}
        card = {
            "id": self.card_id,
            "batch_id": self.batch.id,
            "seq": claimed[0]["c_seq"],
            "last4": claimed[0]["c_last4"],
        }
        noted = yield QUEUE_MESSAGE, {**given, "hook_payload": self.payload(order, card)}
        if noted:
            yield QUEUE_DELIVERIES, {**given, "message_pk": noted[0]["id"]}
        return claimed[0]

    def _explain_lost_claim(self, codec: Codec) -> Plan[None]:
        """The claim found nothing to change: a concurrent redemption or an admin's change won.
        Raise what the card is now (CARD_USED when nothing more precise applies)."""
        rows = yield CARD_NOW, {"card_id": self.card_id}
        ensure_redeemable(self.today, CARD.record(rows[0], codec), BATCH.record(rows[0], codec))
        raise CardUnavailable(ErrorCode.CARD_USED)
