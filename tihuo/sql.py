"""Statements sent through the database driver itself, for the hot path (a redemption).

SQLAlchemy defines the schema, the migrations and almost every query. A redemption's few statements
instead go straight to sqlite3 or asyncpg: measured, SQLAlchemy's execution machinery was half of a
redemption's CPU on PostgreSQL. What SQLAlchemy would otherwise do for them is here, small and
explicit, and tested against SQLAlchemy's own storage (tests/test_sql.py):

- `Sql`: a statement written once with PostgreSQL's numbered parameters ($1, $2, ...), also kept in
  SQLite's spelling (?1, ?2, ...);
- `Plan`: a transaction's logic as a generator that yields `(Sql, args)` and is sent back the rows,
  so one piece of logic runs on a SQLite thread or on asyncpg (`Database.run_read`,
  `Database.run_write`), asking `codec.dialect` only where the SQL differs;
- `Codec`: values to and from each driver's storage form (UTC timestamps, dates, money, JSON, enums);
- `Shape`: a table's columns selected under a prefix, and the model built back from a row.
"""

from __future__ import annotations

import enum
import json
import re
from collections import namedtuple
from collections.abc import Callable, Generator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import JSON, Date, Dialect, Enum, Table
from sqlalchemy.dialects import postgresql, sqlite

from models.base import Base, Money, UTCDateTime

T = TypeVar("T")
M = TypeVar("M", bound=Base)

Row = Any  # sqlite3.Row or asyncpg.Record: both indexable by column name
Rows = Sequence[Row]
# A plan yields (statement, arguments) and is sent the rows back. A violated unique or CHECK
# constraint is thrown into it at that yield (tihuo.db.DuplicateKey, CheckFailed). In a transaction it
# may only turn that into its own exception (PostgreSQL has aborted the transaction by then); after
# a standalone statement, which then wrote nothing, it may go on reading.
Plan = Generator[tuple["Sql", tuple[Any, ...]], Rows, T]

_NUMBERED = re.compile(r"\$(\d+)")
_UTC_TIME = UTCDateTime()
_MONEY = Money()


class Sql:
    """One statement; parameters are $1, $2, ... in `postgres` and ?1, ?2, ... in `sqlite`.
    `{name}` in the text stands for the part given as `name`, never for input: the columns of a
    Shape, or another statement (its parameters keep their numbers).

    A `standalone` statement is a whole write transaction by itself (one statement is atomic): a
    write plan that starts with one runs on PostgreSQL without BEGIN and COMMIT, two round trips
    fewer, and may only read after it."""

    __slots__ = ("postgres", "reads_only", "sqlite", "standalone")

    def __init__(self, text: str, *, standalone: bool = False, **parts: Shape | Sql) -> None:
        if parts:
            text = text.format_map(
                {
                    name: part.select if isinstance(part, Shape) else part.postgres
                    for name, part in parts.items()
                }
            )
        self.postgres = " ".join(text.split())
        self.sqlite = _NUMBERED.sub(r"?\1", self.postgres)
        self.standalone = standalone
        self.reads_only = self.postgres.upper().startswith("SELECT")

    def __repr__(self) -> str:
        return f"Sql({self.postgres!r})"


class Codec:
    """Python values to a driver's storage form and back. The rules (UTC only, money to the cent) are
    the models' column types' own (models/base.py); a codec adds only what SQLAlchemy's driver layer
    would: SQLite keeps timestamps and dates as text, asyncpg takes JSON as text."""

    dialect: str
    _sqlalchemy: Dialect

    def encode(self, value: Any) -> Any:
        kind = type(value)
        if kind is datetime:
            return self._stored_time(_UTC_TIME.process_bind_param(value, self._sqlalchemy))
        if kind is date:
            return self._stored_date(value)
        if kind is Decimal:
            return _MONEY.process_bind_param(value, self._sqlalchemy)
        if isinstance(value, enum.Enum):
            return value.value
        if kind is dict or kind is list:
            return json.dumps(value)
        return value

    def datetime(self, value: Any) -> datetime | None:
        return (
            None
            if value is None
            else _UTC_TIME.process_result_value(self._read_time(value), self._sqlalchemy)
        )

    def money(self, value: Any) -> Decimal | None:
        return _MONEY.process_result_value(value, self._sqlalchemy)

    def date(self, value: Any) -> date | None:
        return value  # type: ignore[no-any-return]

    @staticmethod
    def json(value: Any) -> Any:
        return value if value is None or not isinstance(value, str | bytes) else json.loads(value)

    @staticmethod
    def _stored_time(value: datetime | None) -> Any:
        return value

    @staticmethod
    def _stored_date(value: date) -> Any:
        return value

    @staticmethod
    def _read_time(value: Any) -> datetime:
        return value  # type: ignore[no-any-return]

    def decoder(self, column_type: Any) -> Callable[[Any], Any] | None:
        """The function turning this column's stored value into the model's value (None: as stored)."""
        if isinstance(column_type, UTCDateTime):
            return self.datetime
        if isinstance(column_type, Money):
            return self.money
        if isinstance(column_type, JSON):
            return self.json
        if isinstance(column_type, Enum) and column_type.enum_class is not None:
            members: type[enum.Enum] = column_type.enum_class
            return lambda value: None if value is None else members(value)
        if isinstance(column_type, Date):
            return self.date
        return None


class SqliteCodec(Codec):
    dialect = "sqlite"
    _sqlalchemy = sqlite.dialect()

    @staticmethod
    def _stored_time(value: datetime | None) -> Any:
        # SQLAlchemy's SQLite DATETIME storage format, so text comparisons agree
        return None if value is None else f"{value:%Y-%m-%d %H:%M:%S.%f}"

    @staticmethod
    def _stored_date(value: date) -> Any:
        return value.isoformat()

    @staticmethod
    def _read_time(value: Any) -> datetime:
        return datetime.fromisoformat(value)

    def date(self, value: Any) -> date | None:
        return None if value is None else date.fromisoformat(value)


class PostgresCodec(Codec):
    dialect = "postgresql"
    _sqlalchemy = postgresql.asyncpg.dialect()


SQLITE = SqliteCodec()
POSTGRES = PostgresCodec()


class Shape(Generic[M]):
    """A table's columns as `alias.column AS prefix_column`, and the model made back from a row."""

    def __init__(self, model: type[M], alias: str, prefix: str) -> None:
        table: Table = model.__table__  # type: ignore[assignment]
        self.model = model
        self.names = [column.name for column in table.columns]
        self.keys = [f"{prefix}_{name}" for name in self.names]
        self.select = ", ".join(
            f"{alias}.{name} AS {key}" for name, key in zip(self.names, self.keys, strict=True)
        )
        self._record = namedtuple(f"{model.__name__}Record", self.names)  # type: ignore[misc]
        self._decoders = {
            codec.dialect: [codec.decoder(column.type) for column in table.columns]
            for codec in (SQLITE, POSTGRES)
        }

    def values(self, row: Row, codec: Codec) -> dict[str, Any]:
        return {
            name: value if decode is None else decode(value)
            for name, key, decode in zip(self.names, self.keys, self._decoders[codec.dialect], strict=True)
            for value in (row[key],)
        }

    def load(self, row: Row, codec: Codec) -> M:
        """The model instance (transient: no session) with the row's values."""
        return self.model(**self.values(row, codec))

    def record(self, row: Row, codec: Codec) -> Any:
        """The row's values as a named tuple with the model's attribute names: for values that never
        leave the service, at a thirtieth of a model instance's cost (1 against 24 µs, measured)."""
        return self._record._make(
            value if decode is None else decode(value)
            for value, decode in zip(
                (row[key] for key in self.keys), self._decoders[codec.dialect], strict=True
            )
        )
