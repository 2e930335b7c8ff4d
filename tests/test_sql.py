"""Statements through the driver itself (tihuo/sql.py) store, compare and read values exactly as
SQLAlchemy does, on both back-ends: the redemption's rows are read everywhere else through the ORM."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select

from models import BatchStatus, CardBatch, Line, ProductType
from tihuo.db import CheckFailed, DuplicateKey
from tihuo.sql import Shape, Sql

BATCH = Shape(CardBatch, "b", "b")
BATCH_BY_ID = Sql("SELECT {batch} FROM card_batches b WHERE b.id = $1", batch=BATCH)
INSERT_BATCH = Sql(
    """INSERT INTO card_batches (batch_no, name, product_type, line_id, months, config, reference_price,
                                 windows_price, quantity, used_count, disabled_count, download_count,
                                 valid_until, status, created_by, created_at)
       VALUES ($1, $2, $3, $4, 1, $5, $6, $7, 10, 0, 0, 0, $8, $9, $10, $11) RETURNING id"""
)
SHANGHAI = timezone(timedelta(hours=8))


def one(statement: Sql, *args: object):
    """A plan of one statement, returning its rows."""

    def plan(_codec):
        rows = yield statement, args
        return rows

    return plan


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
    rows = yield BATCH_BY_ID, (batch_id,)
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

    [row] = await rt.db.run_write(one(INSERT_BATCH, *args))

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
    newer = Sql("SELECT count(*) AS n FROM card_batches WHERE id = $1 AND created_at > $2")
    for moment, expected in (
        (created - timedelta(microseconds=1), 1),
        (created, 0),
        (created.astimezone(UTC) - timedelta(microseconds=1), 1),
    ):
        [counted] = await rt.db.run_read(one(newer, row["id"], moment))
        assert counted["n"] == expected, moment


async def test_a_plan_is_told_of_a_violated_constraint_and_nothing_it_wrote_stays(rt, catalog, admin):
    line = await some_line(rt)
    args = ("B-SQL-3", "x", ProductType.CLOUD_SERVER, line, {}, Decimal(1), None, date(2099, 1, 1))
    tail = (BatchStatus.ACTIVE, admin.id, datetime.now(UTC))
    seen: list[Exception] = []

    def twice(_codec):
        yield INSERT_BATCH, (*args, *tail)
        try:
            yield INSERT_BATCH, (*args, *tail)
        except DuplicateKey as exc:
            seen.append(exc)
            raise

    def negative(_codec):
        yield INSERT_BATCH, ("B-SQL-4", *args[1:], *tail)
        try:
            yield Sql("UPDATE card_batches SET used_count = -1 WHERE batch_no = $1"), ("B-SQL-4",)
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
    standalone = Sql(INSERT_BATCH.postgres, standalone=True)
    line = await some_line(rt)
    rest = ("x", ProductType.CLOUD_SERVER, line, {}, Decimal(1), None, date(2099, 1, 1))
    tail = (BatchStatus.ACTIVE, admin.id, datetime.now(UTC))

    def writes_after_it(_codec):
        yield standalone, ("B-ALONE-1", *rest, *tail)
        yield INSERT_BATCH, ("B-ALONE-2", *rest, *tail)

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


def test_a_statement_is_written_once_in_both_spellings():
    statement = Sql(
        """SELECT {batch}
             FROM card_batches b
            WHERE b.id = $1 AND b.line_id IN ($2, $12)""",
        batch=BATCH,
    )
    nested = Sql("WITH found AS ({inner}) SELECT * FROM found", inner=statement)

    assert statement.postgres.startswith("SELECT b.id AS b_id, b.batch_no AS b_batch_no, ")
    assert statement.postgres.endswith("FROM card_batches b WHERE b.id = $1 AND b.line_id IN ($2, $12)")
    assert statement.sqlite.endswith("FROM card_batches b WHERE b.id = ?1 AND b.line_id IN (?2, ?12)")
    assert nested.postgres.startswith("WITH found AS (")
    assert nested.postgres.removeprefix("WITH found AS (").removesuffix(") SELECT * FROM found") == (
        statement.postgres
    )
