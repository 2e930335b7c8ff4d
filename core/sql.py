"""Statements sent through the database driver itself, for the hot path (a redemption) and the
reads made most often (a token's check, an idle worker's looks).

SQLAlchemy defines the schema, the migrations and almost every query. A redemption's few statements
instead go straight to sqlite3 or asyncpg: measured, SQLAlchemy's execution machinery was half of a
redemption's CPU on PostgreSQL. What SQLAlchemy would otherwise do for them is here, small and
explicit, and tested against SQLAlchemy's own storage (tests/test_sql.py):

- `Sql`: a statement written with SQLAlchemy Core against the models' tables, compiled once per
  dialect (PostgreSQL's $1, $2, ..., SQLite's ?), its arguments given by bind name;
- `Plan`: a transaction's logic as a generator that yields `(Sql, arguments)` and is sent the rows,
  so one piece of logic runs on a SQLite thread or on asyncpg (`Database.run_read`,
  `Database.run_write`), asking `codec.dialect` only where the SQL differs;
- `Codec`: values to and from each driver's storage form (UTC timestamps, dates, money, JSON, enums);
- `Shape`: a model's columns selected under a prefix, and the model (or a typed record) built back.
"""

from __future__ import annotations

import enum
import json
from collections import namedtuple
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import CTE, JSON, Date, Dialect, Enum, Executable, Select, Table, TextClause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.visitors import iterate

from core.columns import Money, UTCDateTime

T = TypeVar("T")
M = TypeVar("M")  # a mapped model class (it has a __table__)

Row = Any  # sqlite3.Row or asyncpg.Record: both indexable by column name
Rows = Sequence[Row]
# A plan yields (statement, arguments) and is sent the rows back. A violated unique or CHECK
# constraint is thrown into it at that yield (core.db.DuplicateKey, CheckFailed). In a transaction it
# may only turn that into its own exception (PostgreSQL has aborted the transaction by then); after
# a standalone statement, which then wrote nothing, it may go on reading.
Plan = Generator[tuple["Sql", Mapping[str, Any]], Rows, T]

_UTC_TIME = UTCDateTime()
_MONEY = Money()


class Sql:
    """One statement, written with SQLAlchemy Core against the models' tables and compiled once for
    each dialect at import: table, column and enum names all come from the models. A plan yields
    it with its arguments by bind name (`bindparam("now")`); constants bound in the construct carry
    their own values.

    A `standalone` statement is a whole write transaction by itself (one statement is atomic): a
    write plan that starts with one runs on PostgreSQL without BEGIN and COMMIT, two round trips
    fewer, and may only read after it. `reads_only` is known from the construct: a SELECT with no
    INSERT, UPDATE or DELETE among its CTEs (a text() statement must say so)."""

    __slots__ = ("_defaults", "_order", "postgres", "reads_only", "sqlite", "standalone")

    def __init__(
        self,
        statement: Executable,
        *,
        standalone: bool = False,
        reads_only: bool | None = None,
        dialects: tuple[str, ...] = ("sqlite", "postgresql"),
    ) -> None:
        compiled = {
            codec.dialect: statement.compile(dialect=codec._sqlalchemy)
            for codec in (SQLITE, POSTGRES)
            if codec.dialect in dialects
        }
        # a statement made for one dialect alone (an upsert, a data-modifying CTE) has no text for the other
        self.postgres = " ".join(str(compiled["postgresql"]).split()) if "postgresql" in compiled else ""
        self.sqlite = " ".join(str(compiled["sqlite"]).split()) if "sqlite" in compiled else ""
        self._order = {dialect: tuple(done.positiontup or ()) for dialect, done in compiled.items()}
        # constants bound in the construct (a status, a literal) carry their values; the others
        # must be given
        any_compiled = next(iter(compiled.values()))
        self._defaults = {
            name: bind.value for bind, name in any_compiled.bind_names.items() if not bind.required
        }
        self.standalone = standalone
        if reads_only is None:
            if isinstance(statement, TextClause):
                raise ValueError("a text() statement must say whether it only reads")
            reads_only = isinstance(statement, Select) and not _writes_in_ctes(statement)
        self.reads_only = reads_only

    def arguments(self, dialect: str, given: Mapping[str, Any]) -> list[Any]:
        """The values in the dialect's positional order (a name used twice is given twice)."""
        defaults = self._defaults
        return [given[name] if name in given else defaults[name] for name in self._order[dialect]]

    def __repr__(self) -> str:
        return f"Sql({self.postgres!r})"


def _writes_in_ctes(statement: Select[Any]) -> bool:
    return any(
        isinstance(element, CTE) and isinstance(element.element, UpdateBase) for element in iterate(statement)
    )


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
    """A model's columns, read from `source` (its table, an alias of it, a CTE over it) and
    labelled `prefix_column`, and the model made back from a row."""

    def __init__(self, model: type[M], prefix: str, source: Any = None) -> None:
        table: Table = model.__table__  # type: ignore[assignment]
        source = table if source is None else source
        self.model = model
        self.names = [column.name for column in table.columns]
        self.keys = [f"{prefix}_{name}" for name in self.names]
        self.columns = [source.c[name].label(key) for name, key in zip(self.names, self.keys, strict=True)]
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

    def record(self, row: Row, codec: Codec) -> M:
        """The row's values as a named tuple with the model's attribute names and value types (so
        typed as the model, read-only), for values that never leave the service: a thirtieth of a
        model instance's cost (1 against 24 µs, measured)."""
        return self._record._make(  # type: ignore[no-any-return]
            value if decode is None else decode(value)
            for value, decode in zip(
                (row[key] for key in self.keys), self._decoders[codec.dialect], strict=True
            )
        )
