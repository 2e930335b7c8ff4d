"""Statements through the driver itself (core/sql.py) store, compare and read values exactly as
SQLAlchemy does, on both back-ends: the redemption's rows are read everywhere else through the ORM."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, func, insert, select, text, update

from core.db import CheckFailed, DuplicateKey
from core.sql import Shape, Sql
from models import BatchStatus, CardBatch, Line, ProductType

BATCHES = CardBatch.__table__
_b = BATCHES.alias("b")
BATCH = Shape(CardBatch, "b", _b)
BATCH_BY_ID = Sql(select(*BATCH.columns).where(_b.c.id == bindparam("id")))
NEW_BATCH = (
    "batch_no",
    "name",
    "product_type",
    "line_id",
    "config",
    "reference_price",
    "windows_price",
    "valid_until",
    "status",
    "created_by",
    "created_at",
)
_INSERT_BATCH = insert(BATCHES).values(
    {name: bindparam(name, type_=BATCHES.c[name].type) for name in NEW_BATCH}
    | {"months": 1, "quantity": 10, "used_count": 0, "disabled_count": 0, "download_count": 0}
)
INSERT_BATCH = Sql(_INSERT_BATCH.returning(BATCHES.c.id))
SHANGHAI = timezone(timedelta(hours=8))


def one(statement: Sql, **args: object):
    """A plan of one statement, returning its rows."""

    def plan(_codec):
        rows = yield statement, args
        return rows

    return plan


def new_batch(*values: object) -> dict[str, object]:
    return dict(zip(NEW_BATCH, values, strict=True))


async def some_line(rt) -> int:
    async with rt.db.read() as session:
        line = await session.scalar(select(Line.id).limit(1))
    assert line is not None
    return line


async def test_a_row_written_by_sqlalchemy_reads_back_the_same_through_the_driver(rt, catalog, admin):
    written = CardBatch(
        batch_no="B-SQL-1",
        name="上海 BGP 测试",
        product_type=ProductType.CLOUD_SERVER,
        line_id=await some_line(rt),
        months=3,
        config={"regionName": "华东", "cpuCores": 2, "summary": "2核 4G"},
        reference_price=Decimal("83.66"),
        windows_price=None,
        quantity=10,
        valid_until=date(2027, 1, 31),
        status=BatchStatus.ACTIVE,
        created_by=admin.id,
        # not UTC, with microseconds: stored as UTC, read back aware
        created_at=datetime(2026, 11, 26, 18, 30, 5, 123456, tzinfo=SHANGHAI),
    )
    async with rt.db.write() as session:
        session.add(written)
    async with rt.db.read() as session:
        through_orm = await session.get(CardBatch, written.id)
    assert through_orm is not None

    rows = await rt.db.run_read(lambda codec: _load(codec, written.id))

    expected = {column.name: getattr(through_orm, column.name) for column in CardBatch.__table__.columns}
    assert rows == expected
    assert rows["created_at"] == datetime(2026, 11, 26, 10, 30, 5, 123456, tzinfo=UTC)
    assert rows["created_at"].tzinfo is UTC
    assert (rows["reference_price"], rows["status"], rows["valid_until"]) == (
        Decimal("83.66"),
        BatchStatus.ACTIVE,
        date(2027, 1, 31),
    )


def _load(codec, batch_id):
    rows = yield BATCH_BY_ID, {"id": batch_id}
    return BATCH.values(rows[0], codec)


async def test_values_written_through_the_driver_read_back_the_same_through_sqlalchemy(rt, catalog, admin):
    created = datetime(2026, 11, 26, 18, 30, 5, 7, tzinfo=SHANGHAI)
    config = {"lineName": "BGP 多线", "months": 12, "nested": {"ok": True}}
    args = (
        "B-SQL-2",
        "driver",
        ProductType.BARE_METAL,
        await some_line(rt),
        config,
        Decimal("3222"),
        Decimal("3522.5"),
        date(2099, 12, 31),
        BatchStatus.DISABLED,
        admin.id,
        created,
    )

    [row] = await rt.db.run_write(one(INSERT_BATCH, **new_batch(*args)))

    async with rt.db.read() as session:
        stored = await session.get(CardBatch, row["id"])
    assert stored is not None
    assert (stored.product_type, stored.config, stored.reference_price, stored.windows_price) == (
        ProductType.BARE_METAL,
        config,
        Decimal("3222.00"),
        Decimal("3522.50"),
    )
    assert (stored.valid_until, stored.status, stored.created_at) == (
        date(2099, 12, 31),
        BatchStatus.DISABLED,
        created.astimezone(UTC),
    )
    # and the driver's comparisons of stored times agree with time itself (SQLite compares text)
    newer = Sql(
        select(func.count().label("n")).where(
            BATCHES.c.id == bindparam("id"), BATCHES.c.created_at > bindparam("moment")
        )
    )
    for moment, expected in (
        (created - timedelta(microseconds=1), 1),
        (created, 0),
        (created.astimezone(UTC) - timedelta(microseconds=1), 1),
    ):
        [counted] = await rt.db.run_read(one(newer, id=row["id"], moment=moment))
        assert counted["n"] == expected, moment


NEGATIVE = Sql(update(BATCHES).where(BATCHES.c.batch_no == bindparam("batch_no")).values(used_count=-1))


async def test_a_plan_is_told_of_a_violated_constraint_and_nothing_it_wrote_stays(rt, catalog, admin):
    line = await some_line(rt)
    args = ("B-SQL-3", "x", ProductType.CLOUD_SERVER, line, {}, Decimal(1), None, date(2099, 1, 1))
    tail = (BatchStatus.ACTIVE, admin.id, datetime.now(UTC))
    seen: list[Exception] = []

    def twice(_codec):
        yield INSERT_BATCH, new_batch(*args, *tail)
        try:
            yield INSERT_BATCH, new_batch(*args, *tail)
        except DuplicateKey as exc:
            seen.append(exc)
            raise

    def negative(_codec):
        yield INSERT_BATCH, new_batch("B-SQL-4", *args[1:], *tail)
        try:
            yield NEGATIVE, {"batch_no": "B-SQL-4"}
        except CheckFailed as exc:
            seen.append(exc)
            raise

    with pytest.raises(DuplicateKey):
        await rt.db.run_write(twice)
    with pytest.raises(CheckFailed):
        await rt.db.run_write(negative)

    assert [type(exc) for exc in seen] == [DuplicateKey, CheckFailed]
    assert seen[1].constraint == "ck_card_batches_counts_in_range"
    async with rt.db.read() as session:
        assert (await session.scalars(select(CardBatch.batch_no))).all() == []


async def test_a_standalone_statement_is_its_own_transaction_on_postgresql(rt, catalog, admin):
    standalone = Sql(_INSERT_BATCH.returning(BATCHES.c.id), standalone=True)
    line = await some_line(rt)
    rest = ("x", ProductType.CLOUD_SERVER, line, {}, Decimal(1), None, date(2099, 1, 1))
    tail = (BatchStatus.ACTIVE, admin.id, datetime.now(UTC))

    def writes_after_it(_codec):
        yield standalone, new_batch("B-ALONE-1", *rest, *tail)
        yield INSERT_BATCH, new_batch("B-ALONE-2", *rest, *tail)

    if rt.db.is_sqlite:
        # SQLite runs every write plan in one transaction: the mark changes nothing
        await rt.db.run_write(writes_after_it)
        expected = ["B-ALONE-1", "B-ALONE-2"]
    else:
        # PostgreSQL commits it at once, so a plan may not write after it
        with pytest.raises(RuntimeError, match="would write after a standalone statement"):
            await rt.db.run_write(writes_after_it)
        expected = ["B-ALONE-1"]

    async with rt.db.read() as session:
        assert (
            await session.scalars(select(CardBatch.batch_no).order_by(CardBatch.batch_no))
        ).all() == expected


def test_a_statement_is_compiled_once_for_each_dialect_with_its_arguments_by_name():
    statement = Sql(
        select(*BATCH.columns).where(
            _b.c.id == bindparam("id"), _b.c.line_id.in_([bindparam("line"), bindparam("other")])
        )
    )

    assert statement.postgres.startswith("SELECT b.id AS b_id, b.batch_no AS b_batch_no, ")
    assert statement.postgres.endswith(
        "FROM card_batches AS b WHERE b.id = $1::BIGINT AND b.line_id IN ($2, $3)"
    )
    assert statement.sqlite.endswith("FROM card_batches AS b WHERE b.id = ? AND b.line_id IN (?, ?)")
    assert statement.arguments("postgresql", {"other": 3, "id": 1, "line": 2}) == [1, 2, 3]
    assert statement.reads_only


def test_whether_a_statement_only_reads_comes_from_its_construct():
    claimed = update(BATCHES).values(used_count=1).returning(BATCHES.c.id).cte("claimed")
    with_a_write = select(claimed.c.id)

    assert not Sql(with_a_write, dialects=("postgresql",)).reads_only
    assert not INSERT_BATCH.reads_only
    assert BATCH_BY_ID.reads_only
    with pytest.raises(ValueError, match="must say whether it only reads"):
        Sql(text("SELECT 1"))
    assert Sql(text("SELECT 1"), reads_only=True).reads_only


def test_a_constant_in_the_construct_carries_its_value_and_a_missing_argument_is_an_error():
    statement = Sql(
        select(BATCHES.c.id).where(BATCHES.c.status == BatchStatus.ACTIVE, BATCHES.c.id == bindparam("id"))
    )

    assert statement.arguments("sqlite", {"id": 7}) == [BatchStatus.ACTIVE, 7]
    with pytest.raises(KeyError):
        statement.arguments("sqlite", {})
